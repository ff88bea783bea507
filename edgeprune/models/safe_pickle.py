"""Read a torch checkpoint written by another program without executing any of it.

`torch.load(weights_only=True)` refuses a pickle that holds the producer's classes (a YOLOv5
`DetectionModel`, an ultralytics `C2f`), and `weights_only=False` would run whatever the pickle asks
for. This reader walks the pickle with an unpickler that resolves globals itself:

- tensors are rebuilt by our own functions from the raw storage bytes of the zip archive (no torch
  rebuild function is called with the file's arguments);
- a short allow-list of plain data constructors (OrderedDict, set, bytes, torch.Size, dtypes) is real;
- every class of the producer's package (and torch.nn modules) becomes an inert `StandIn` that only
  records its pickled state (`__dict__`, items, list entries), so parameters, buffers, names, yaml,
  strides and anchors can be read while no method of the producer ever runs;
- numpy arrays / datetimes / paths (training metadata we never need) become inert records;
- any other global (os.system, builtins.eval, subprocess.Popen, torch functions ...) is refused as
  soon as the pickle names it, and calling a stand-in with arguments (a REDUCE of an unknown callable)
  is refused too: both raise `UnsafePickleError` naming the file and the callable.
"""
from __future__ import annotations

import io
import pickle
import sys
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import CheckpointError


class UnsafePickleError(CheckpointError):
    """The pickle references a callable outside the allow-list; nothing of it was executed."""


# Module prefixes whose classes are stood in for: the producer's own code is anything outside the
# standard library, torch and numpy; from torch only the nn.Module classes.
_TORCH_STANDIN_PREFIXES = ("torch.nn.modules.",)
# Standard-library / numpy callables whose calls are recorded, never made (training metadata).
_INERT_CALLABLES = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timedelta"),
    ("pathlib", "Path"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
    ("argparse", "Namespace"), ("types", "SimpleNamespace"),
}
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
_STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"builtins", "__builtin__", "copy_reg", "os", "posix", "nt",
                                                           "subprocess", "sys", "io", "types", "copyreg", "numpy"}


class StandIn:
    """An inert object in place of a class the pickle names. Its class carries `_ep_module` and
    `_ep_name`; the pickled state lands in `__dict__` (dict state), `_ep_state` (other state),
    `_ep_items` (dict subclasses) and `_ep_list` (list subclasses). No producer code runs."""

    _ep_module = ""
    _ep_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        obj = object.__new__(cls)
        obj.__dict__["_ep_args"] = args      # NEWOBJ's __new__ arguments (plain data), never used to call
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Reached only by REDUCE (calling the global); an empty call is object construction, any
        # argument means the pickle wants a function of the producer's package to run on it.
        if args or kwargs:
            raise _Refused(f"{self._ep_module}.{self._ep_name}", "called with arguments")

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[1] is None or isinstance(state[1], dict)):
            state, slots = state           # (dict state, slot state) of classes with __slots__
            self._record(slots or {})
        if isinstance(state, dict):
            self._record(state)
        elif state is not None:
            self.__dict__["_ep_state"] = state

    def _record(self, state: dict) -> None:
        # A key named like one of our methods (append, __setstate__ ...) would shadow it on the instance
        # and be called by a later opcode: such keys are kept aside.
        for k, v in state.items():
            k = str(k)
            if hasattr(StandIn, k) or k.startswith("_ep_"):
                self.__dict__.setdefault("_ep_shadowed", {})[k] = v
            else:
                self.__dict__[k] = v

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_ep_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_ep_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_ep_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<stand-in {self._ep_module}.{self._ep_name}>"


class InertCall:
    """The record of a call to a metadata constructor (numpy array, datetime, path): never made."""

    def __init__(self, qualname: str, args: tuple):
        self.qualname, self.args, self.state = qualname, args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


class _InertFactory:
    def __init__(self, qualname: str):
        self.qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> InertCall:
        return InertCall(self.qualname, args)


class _StorageType:
    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise _Refused(f"torch.{self.name}", "storage constructor called")


class _Refused(Exception):
    """Raised inside the unpickler; `read_pickled` turns it into UnsafePickleError naming the file."""

    def __init__(self, qualname: str, why: str = "not in the allow-list"):
        super().__init__(qualname, why)
        self.qualname, self.why = qualname, why


def class_name(obj: Any) -> str:
    """'package.module.Class' of a stand-in (or of any object)."""
    if isinstance(obj, StandIn):
        return f"{obj._ep_module}.{obj._ep_name}"
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _is_tensor_like(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor) or not isinstance(offset, int):
        raise _Refused("torch._utils._rebuild_tensor_v2", "called with something other than a storage")
    try:
        return storage.as_strided(tuple(size), tuple(stride), offset)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"tensor of size {tuple(size)} does not fit its storage ({exc})") from None


def _rebuild_parameter(data: torch.Tensor, *rest: Any) -> torch.Tensor:
    if not _is_tensor_like(data):
        raise _Refused("torch._utils._rebuild_parameter", "called with something other than a tensor")
    return data


class _Marker:
    """torch.Tensor / Parameter as a rebuild target: named, never called."""

    def __init__(self, qualname: str):
        self.qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise _Refused(self.qualname, "called")


_TENSOR_TYPES = (_Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter"))


def _rebuild_from_type_v2(func: Any, new_type: Any, args: tuple, state: Any) -> torch.Tensor:
    if func is not _rebuild_tensor or new_type not in _TENSOR_TYPES:
        raise _Refused("torch._tensor._rebuild_from_type_v2", f"asked to rebuild {new_type!r}")
    return func(*args)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # How protocol 2 stores a bytes object: _codecs.encode(latin-1 text, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode", "called with something other than latin-1 text")
    return text.encode("latin1")


def _torch_size(dims: Any = ()) -> torch.Size:
    if not isinstance(dims, (tuple, list)) or not all(isinstance(d, int) for d in dims):
        raise _Refused("torch.Size", "called with something other than integers")
    return torch.Size(dims)


def _torch_device(name: Any, index: Any = None) -> torch.device:
    if not isinstance(name, str) or not (index is None or isinstance(index, int)):
        raise _Refused("torch.device", "called with something other than a device name")
    return torch.device(name) if index is None else torch.device(name, index)


def _defaultdict(factory: Any = None, *args: Any) -> dict:
    # a plain dict: a default factory is never needed to read a checkpoint (and would be a call)
    return dict(*args)


def _getattr(obj: Any, name: Any, *default: Any) -> InertCall:
    # A method of one of the producer's classes stored as an attribute (yolov5's Segment keeps
    # `Detect.forward`): recorded, never looked up; on anything else getattr could reach real functions.
    if (isinstance(obj, StandIn) or (isinstance(obj, type) and issubclass(obj, StandIn))) and isinstance(name, str):
        return InertCall("getattr", (obj, name))
    raise _Refused("builtins.getattr", f"asked for {name!r:.40} of {type(obj).__name__}")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor, used by protocol 0/1 pickles of plain objects.
    if isinstance(cls, type) and issubclass(cls, StandIn) and base is object:
        return cls.__new__(cls)
    raise _Refused("copyreg._reconstructor", f"asked to build {cls!r} from {base!r}")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
    ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray, ("builtins", "object"): object,
    ("builtins", "getattr"): _getattr,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("torch", "Tensor"): _TENSOR_TYPES[0],
    ("torch.nn.parameter", "Parameter"): _TENSOR_TYPES[1],
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, storages: Any):
        super().__init__(file)
        self._storages = storages
        self._classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) in _INERT_CALLABLES:
            return _InertFactory(f"{module}.{name}")
        if module == "torch":
            if name in _STORAGE_DTYPES:
                return _StorageType(name, _STORAGE_DTYPES[name])
            if isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
        if module.startswith(_TORCH_STANDIN_PREFIXES) or module.split(".")[0] not in _STDLIB | {"torch"}:
            if not name.isidentifier():
                raise _Refused(f"{module}.{name}", "is not a plain class name")
            key = (module, name)
            if key not in self._classes:
                self._classes[key] = type(name, (StandIn,), {"_ep_module": module, "_ep_name": name,
                                                             "__module__": "edgeprune.models.safe_pickle"})
            return self._classes[key]
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        return self._storages(pid)


def _storage_pid(pid: Any) -> tuple[torch.dtype, str, int]:
    """(dtype, key, numel) of a storage reference: ('storage', type, key, location, numel[, view])."""
    if (not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage" or not isinstance(pid[1], _StorageType)
            or not isinstance(pid[2], str) or not isinstance(pid[4], int) or pid[4] < 0):
        raise _Refused("persistent id", f"{pid!r:.80} is not a storage reference")
    if len(pid) == 6 and pid[5] is not None:
        raise CheckpointError("storage views (torch < 0.4 checkpoints) are not supported")
    return pid[1].dtype, pid[2], pid[4]


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _as_tensor(raw: bytes, dtype: torch.dtype, numel: int, key: str) -> torch.Tensor:
    if len(raw) < numel * _itemsize(dtype):
        raise CheckpointError(f"storage {key!r} holds {len(raw)} bytes, {numel * _itemsize(dtype)} expected")
    return torch.frombuffer(bytearray(raw), dtype=dtype, count=numel) if numel else torch.empty(0, dtype=dtype)


def _zip_storages(zf: zipfile.ZipFile, prefix: str) -> Any:
    cache: dict[str, torch.Tensor] = {}

    def load(pid: Any) -> torch.Tensor:
        dtype, key, numel = _storage_pid(pid)
        if key not in cache:
            try:
                raw = zf.read(f"{prefix}/data/{key}")
            except KeyError:
                raise CheckpointError(f"storage {key!r} is missing from the archive") from None
            cache[key] = _as_tensor(raw, dtype, numel, key)
        return cache[key]
    return load


def _no_storages(pid: Any) -> None:
    raise _Refused("persistent id", "a storage outside the checkpoint's main object")


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C   # what torch's legacy (non-zip) format writes first


def _read_legacy(path: Path, f: Any) -> Any:
    """torch < 1.6 format: magic, protocol, sys_info, the object, its storage keys, then each storage as an
    int64 element count + raw bytes. The object is unpickled twice (inertly): first to learn each storage's
    dtype, then with the storages read."""
    head = _Unpickler(f, _no_storages)
    if head.load() != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: a plain pickle, not a torch checkpoint")
    if head.load() != 1001 or not isinstance(head.load(), dict):
        raise CheckpointError(f"{path}: a legacy torch checkpoint of an unknown protocol")
    start = f.tell()
    dtypes: dict[str, torch.dtype] = {}

    def learn(pid: Any) -> torch.Tensor:
        dtype, key, numel = _storage_pid(pid)
        dtypes[key] = dtype
        return torch.empty(numel, dtype=dtype)
    _Unpickler(f, learn).load()
    keys = _Unpickler(f, _no_storages).load()
    if not isinstance(keys, list) or set(keys) != set(dtypes):
        raise CheckpointError(f"{path}: the storage list does not match the object's storages")
    cache = {}
    for key in keys:
        numel = int.from_bytes(f.read(8), "little")
        cache[key] = _as_tensor(f.read(numel * _itemsize(dtypes[key])), dtypes[key], numel, key)
    f.seek(start)
    return _Unpickler(f, lambda pid: cache[_storage_pid(pid)[1]]).load()


def read_pickled(path: str | Path) -> Any:
    """The object a torch checkpoint holds, with stand-ins in place of the producer's classes.
    Raises CheckpointError (missing, empty, truncated, not a torch file) or UnsafePickleError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        with zipfile.ZipFile(path) as zf:
            pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise CheckpointError(f"{path}: a zip file but not a torch checkpoint (no single */data.pkl)")
            prefix = pkls[0][: -len("/data.pkl")]
            names = set(zf.namelist())
            if f"{prefix}/byteorder" in names and zf.read(f"{prefix}/byteorder").strip() not in (b"little", b""):
                raise CheckpointError(f"{path}: a big-endian checkpoint; edgeprune reads little-endian ones")
            data = zf.read(pkls[0])
            return _load(path, data, _zip_storages(zf, prefix))
    except zipfile.BadZipFile:
        pass
    except (EOFError, zipfile.LargeZipFile, OSError, zlib.error) as exc:
        raise CheckpointError(f"{path}: truncated or unreadable checkpoint ({exc})") from None
    with open(path, "rb") as f:
        if f.read(1) != b"\x80":
            raise CheckpointError(f"{path}: truncated or not a torch checkpoint (neither a zip archive nor a pickle)")
        f.seek(0)
        return _load(path, None, lambda: _read_legacy(path, f))


def _load(path: Path, data: bytes | None, storages: Any) -> Any:
    """Unpickle `data` with `storages` as persistent loader (or, when data is None, run `storages()`, a
    whole reader), turning every failure into an error naming the file."""
    try:
        if data is None:
            return storages()
        return _Unpickler(io.BytesIO(data), storages).load()
    except _Refused as exc:
        raise UnsafePickleError(f"{path}: refuses to load: the pickle references {exc.qualname} ({exc.why}); "
                                "nothing from the file was executed") from None
    except CheckpointError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise CheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RecursionError, MemoryError, OverflowError, RuntimeError, zlib.error, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: corrupt pickle in the checkpoint ({type(exc).__name__}: {exc})") from None


# --- reading stand-in nn.Modules ---------------------------------------------------------------

def children(module: Any) -> "OrderedDict[str, Any]":
    """The `_modules` of a stand-in nn.Module ({} for anything else)."""
    mods = getattr(module, "__dict__", {}).get("_modules") if isinstance(module, StandIn) else None
    return mods if isinstance(mods, dict) else OrderedDict()


def named_modules(module: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    yield prefix, module
    for name, child in children(module).items():
        if child is not None:
            yield from named_modules(child, f"{prefix}.{name}" if prefix else str(name))


def state_dict(module: Any) -> "OrderedDict[str, torch.Tensor]":
    """What `module.state_dict()` would return, read from a stand-in's recorded `_parameters` and
    `_buffers` (non-persistent buffers left out)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for path, m in named_modules(module):
        d = m.__dict__
        skip = d.get("_non_persistent_buffers_set") or set()
        for kind in ("_parameters", "_buffers"):
            table = d.get(kind) or {}
            if not isinstance(table, dict):
                raise CheckpointError(f"module {path or '(root)'}: {kind} is not a dict")
            for name, t in table.items():
                if t is None or (kind == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise CheckpointError(f"module {path or '(root)'}: {kind[1:-1]} {name!r} is not a tensor")
                out[f"{path}.{name}" if path else str(name)] = t
    return out
