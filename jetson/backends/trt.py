"""TensorRT backend: runs a serialized engine (plan). Python 3.6 (JetPack 4.6, TRT 8.0/8.2) to TRT 10.

Two I/O APIs, picked by version and checked against the engine object itself:
- "binding" (TRT 8.0-8.6): engine.num_bindings / get_binding_name / binding_is_input / get_binding_shape /
  get_binding_dtype, context.set_binding_shape, context.execute_async_v2(bindings, stream_handle);
- "tensor" (TRT >= 8.5, the only one in 10): engine.num_io_tensors / get_tensor_name / get_tensor_mode /
  get_tensor_shape / get_tensor_dtype, context.set_input_shape, set_tensor_address, execute_async_v3(stream_handle).
Everything below `open_trt_backend` works on duck-typed engine/context/memory objects, so the dispatch is
unit-tested without TensorRT or a GPU; tests/device/trt_fakes.py holds version-exact stand-ins (8.0.1 ... 10.3).
Two things TensorRT's own helpers get wrong and that are done here instead:
- plugins: only `init_libnvinfer_plugins` fills the plugin registry. The 8.x ONNX parser calls it itself, so the
  first build of an EfficientNMS bundle works, but a later process deserializing the cached plan (and a 10.x
  parse) fails unless it ran: `load_plugins` is called before every parse and every deserialize.
- dtypes: `trt.nptype` of 8.0-8.5.2 builds its table with `np.bool` (gone in numpy 1.24-1.26), so I/O dtypes are
  mapped here from `trt.DataType` member names.
"""
import os

import numpy as np

from edgeprune.errors import DeviceError

from . import Backend

TENSOR_API_FROM = (8, 5)
# trt.DataType member -> numpy dtype (FP8, BF16 and INT4 have no numpy equivalent)
NUMPY_DTYPES = (("FLOAT", np.float32), ("HALF", np.float16), ("INT8", np.int8), ("INT32", np.int32),
                ("INT64", np.int64), ("BOOL", np.bool_), ("UINT8", np.uint8))


def numpy_dtype_map(trt):
    """A function trt.DataType -> numpy dtype, built from the member names this TensorRT has."""
    table = dict((getattr(trt.DataType, n), np.dtype(d)) for n, d in NUMPY_DTYPES if hasattr(trt.DataType, n))

    def nptype(dt):
        if dt not in table:
            raise DeviceError("TensorRT data type {} has no numpy equivalent; export the model with float32 I/O"
                              .format(getattr(dt, "name", dt)))
        return table[dt]
    return nptype


def load_plugins(trt, logger):
    """Register TensorRT's bundled plugins (EfficientNMS_TRT, ...) in this process; repeated calls are harmless."""
    if not trt.init_libnvinfer_plugins(logger, ""):
        raise DeviceError("TensorRT {}: init_libnvinfer_plugins failed (libnvinfer_plugin missing?)"
                          .format(trt.__version__))


def parse_version(text):
    """'8.2.1.8' -> (8, 2, 1); non-numeric tails ('10.3.0.post1') are ignored."""
    parts = []
    for piece in str(text).split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise DeviceError("cannot parse TensorRT version {!r}".format(text))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def io_api(trt_version, engine=None):
    """'tensor' for TRT >= 8.5, 'binding' before; when an engine is given, its attributes must agree."""
    want = "tensor" if parse_version(trt_version)[:2] >= TENSOR_API_FROM else "binding"
    if engine is None:
        return want
    has_tensor = hasattr(engine, "num_io_tensors")
    has_binding = hasattr(engine, "num_bindings")
    if want == "tensor" and has_tensor:
        return "tensor"
    if want == "binding" and has_binding:
        return "binding"
    if has_tensor:
        return "tensor"
    if has_binding:
        return "binding"
    raise DeviceError("TensorRT {}: the engine object has neither num_io_tensors nor num_bindings".format(trt_version))


class IOTensor(object):
    def __init__(self, name, index, is_input, shape, dtype):
        self.name = name
        self.index = index
        self.is_input = is_input
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return "IOTensor({!r}, input={}, shape={}, {})".format(self.name, self.is_input, self.shape, self.dtype)


def describe_io(engine, api, nptype, input_mode=None):
    """The engine's inputs/outputs as IOTensor, through either API. nptype maps trt.DataType -> numpy dtype;
    input_mode is trt.TensorIOMode.INPUT (tensor API only)."""
    io = []
    if api == "tensor":
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            io.append(IOTensor(name, i, engine.get_tensor_mode(name) == input_mode, engine.get_tensor_shape(name),
                               nptype(engine.get_tensor_dtype(name))))
    else:
        for i in range(engine.num_bindings):
            io.append(IOTensor(engine.get_binding_name(i), i, bool(engine.binding_is_input(i)),
                               engine.get_binding_shape(i), nptype(engine.get_binding_dtype(i))))
    return io


def profile_max_batch(engine, api, tensor):
    """Largest batch of optimization profile 0 for a dynamic input (None when the input is static)."""
    if tensor.shape[0] > 0:
        return None
    if api == "tensor":
        shapes = engine.get_tensor_profile_shape(tensor.name, 0)
    else:
        shapes = engine.get_profile_shape(0, tensor.index)
    return int(shapes[2][0])


class TrtBackend(Backend):
    name = "tensorrt"

    def __init__(self, engine, context, api, io, mem, device="host", precision="fp16", output_names=None,
                 description=None):
        self.engine = engine
        self.context = context
        self.api = api
        self.io = io
        self.mem = mem
        self.precision = precision
        inputs = [t for t in io if t.is_input]
        if len(inputs) != 1:
            raise DeviceError("TensorRT engine has {} inputs; edgeprune bundles have one".format(len(inputs)))
        self.input = inputs[0]
        outputs = [t for t in io if not t.is_input]
        by_name = dict((t.name, t) for t in outputs)
        if output_names:
            missing = [n for n in output_names if n not in by_name]
            if missing:
                raise DeviceError("TensorRT engine has no output(s) {} (it has {}); rebuild the engine from this bundle"
                                  .format(missing, sorted(by_name)))
            outputs = [by_name[n] for n in output_names]
        self.outputs = outputs
        b = self.input.shape[0]
        self.batch = b if b > 0 else None
        self.max_batch = None if self.batch else profile_max_batch(engine, api, self.input)
        self._ptr = {}
        self._nbytes = {}
        self._events = None  # four timing events, created once: cuda-python events live until destroyed
        self.description = description or "tensorrt ({} API) on {}".format(api, device)

    def _buffer(self, name, nbytes):
        if self._nbytes.get(name, -1) < nbytes:
            if name in self._ptr:
                self.mem.free(self._ptr[name])
            self._ptr[name] = self.mem.alloc(nbytes)
            self._nbytes[name] = nbytes
        return self._ptr[name]

    def _set_input_shape(self, shape):
        if self.api == "tensor":
            ok = self.context.set_input_shape(self.input.name, shape)
        else:
            ok = self.context.set_binding_shape(self.input.index, shape)
        if ok is False:
            raise DeviceError("TensorRT rejected input shape {} for {!r} (outside the engine's optimization profile)"
                              .format(tuple(shape), self.input.name))

    def _output_shape(self, t):
        if self.api == "tensor":
            return tuple(int(d) for d in self.context.get_tensor_shape(t.name))
        return tuple(int(d) for d in self.context.get_binding_shape(t.index))

    def infer(self, batch):
        x = np.ascontiguousarray(batch, dtype=self.input.dtype)
        if self.batch is None or any(d < 0 for d in self.input.shape):
            self._set_input_shape(x.shape)
        elif tuple(x.shape) != self.input.shape:
            raise DeviceError("TensorRT engine input {!r} is {}, got {}".format(self.input.name, self.input.shape,
                                                                               x.shape))
        in_ptr = self._buffer(self.input.name, x.nbytes)
        hosts = []
        for t in self.outputs:
            host = np.empty(self._output_shape(t), dtype=t.dtype)
            hosts.append((t, host, self._buffer(t.name, host.nbytes)))
        mem = self.mem
        if self._events is None:
            self._events = [mem.event() for _ in range(4)]
        ev = self._events
        mem.record(ev[0])
        mem.htod(in_ptr, x)
        mem.record(ev[1])
        if self.api == "tensor":
            self.context.set_tensor_address(self.input.name, in_ptr)
            for t, _, ptr in hosts:
                self.context.set_tensor_address(t.name, ptr)
            ok = self.context.execute_async_v3(mem.stream_handle)
        else:
            bindings = [0] * len(self.io)
            bindings[self.input.index] = in_ptr
            for t, _, ptr in hosts:
                bindings[t.index] = ptr
            ok = self.context.execute_async_v2(bindings, mem.stream_handle)
        if ok is False:
            raise DeviceError("TensorRT execute_async_{} failed (see the TensorRT log above)"
                              .format("v3" if self.api == "tensor" else "v2"))
        mem.record(ev[2])
        for _, host, ptr in hosts:
            mem.dtoh(host, ptr)
        mem.record(ev[3])
        mem.sync()
        self.last_split = {"h2d": mem.elapsed_ms(ev[0], ev[1]), "compute": mem.elapsed_ms(ev[1], ev[2]),
                           "d2h": mem.elapsed_ms(ev[2], ev[3])}
        return [h.astype(np.float32) if h.dtype == np.float16 else h for _, h, _ in hosts]

    def close(self):
        if self.mem is not None:
            for ptr in self._ptr.values():
                self.mem.free(ptr)
            self._ptr = {}
            for ev in self._events or ():
                self.mem.destroy_event(ev)
            self._events = None
            self.mem.close()
            self.mem = None
        self.context = None
        self.engine = None


def deserialize(trt, plan_bytes, logger=None, dla_core=None):
    """ICudaEngine from plan bytes, or None when this TensorRT cannot read it (other version / GPU).
    dla_core: the DLA core the engine was built for; the runtime must be told (as trtexec does), else a
    DLA engine runs on core 0."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    load_plugins(trt, logger)
    runtime = trt.Runtime(logger)
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    return runtime.deserialize_cuda_engine(plan_bytes)  # 8.0 to 10.x: None (and a logged error) on failure


def open_trt_backend(plan_path, device="host", precision="fp16", output_names=None, dla_core=None):
    """Load `plan_path` with the installed TensorRT and the available CUDA memory library."""
    try:
        import tensorrt as trt
    except ImportError:
        raise DeviceError("TensorRT is not importable; on Jetson install JetPack's python3-libnvinfer, "
                          "elsewhere use --backend onnxruntime")
    from .cudamem import open_memory
    mem = open_memory()  # creates the CUDA context before TensorRT touches the GPU
    try:
        with open(plan_path, "rb") as f:
            plan = f.read()
        engine = deserialize(trt, plan, dla_core=dla_core)
        if engine is None:
            raise DeviceError("{}: TensorRT {} cannot deserialize this engine (built by another TensorRT version or "
                              "for another GPU); delete it and rebuild with edgeprune build-engine"
                              .format(plan_path, trt.__version__))
        api = io_api(trt.__version__, engine)
        io = describe_io(engine, api, numpy_dtype_map(trt),
                         getattr(getattr(trt, "TensorIOMode", None), "INPUT", None))
        context = engine.create_execution_context()
        desc = "tensorrt {} {} on {}{} (sm_{}{}, {} API, {} buffers, {})".format(
            trt.__version__, precision, device, "" if dla_core is None else " DLA core {}".format(dla_core),
            *(mem.compute_capability() + (api, mem.name, os.path.basename(plan_path))))
        return TrtBackend(engine, context, api, io, mem, device, precision, output_names, desc)
    except BaseException:
        mem.close()  # the stream (and events, buffers) of a backend that never started
        raise
