"""Atomic, crash-safe artefact writes (temp file in the same folder, fsync, rename). Python 3.6 compatible.

A reader never sees a half-written file: either the old content or the new one. OS errors become
StorageError naming the path (disk full, quota, file-size limit, permission denied, read-only file system),
and so do the failures a library's writer reports in its own words (torch's serializer raises RuntimeError).
The file gets the mode a plain open() would give it (0666 less the umask), not mkstemp's private 0600.
"""
import errno
import hashlib
import json
import os
import tempfile

from .errors import StorageError


def _explain(exc, path):
    why = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large (a file-size limit such as `ulimit -f`?)",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
    }.get(exc.errno, exc.strerror or str(exc))
    return StorageError("cannot write {}: {}".format(path, why))


# How torch's C++ zip writer (inline_container.cc) reports a failed or short write (disk full, EFBIG, EDQUOT):
# a RuntimeError, not an OSError. Only these are storage failures; any other RuntimeError is a bug to surface.
_WRITER_FAILURES = ("inline_container.cc", "PytorchStreamWriter", "unexpected pos", "file write failed")


def _library_write_failure(exc, path):
    """StorageError for an exception a library raised while writing `path`, or None if it is not one."""
    if isinstance(exc, OSError):
        return _explain(exc, path)
    text = str(exc)
    if isinstance(exc, RuntimeError) and any(marker in text for marker in _WRITER_FAILURES):
        first = (text.strip().splitlines() or [""])[0][:200]
        return StorageError("cannot write {}: the writer failed ({}); is the disk full, over quota or over a "
                            "file-size limit?".format(path, first))
    return None


def _umask():
    """The process umask, read without changing it where Linux tells it (os.umask can only swap it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_mode(path):
    os.chmod(path, 0o666 & ~_umask())


def atomic_write_bytes(path, data):
    """Write `data` to `path` atomically. Creates the parent folder."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            _plain_mode(tmp)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    except OSError as exc:
        raise _explain(exc, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent=2):
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


class AtomicFile(object):
    """`with AtomicFile(path) as tmp_path:` lets a library write to `tmp_path` (e.g. torch.save,
    onnx.save, matplotlib savefig); on success it is fsynced and renamed onto `path`."""

    def __init__(self, path, suffix=""):
        self.path = str(path)
        self.suffix = suffix
        self.tmp = None

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", suffix=self.suffix or os.path.splitext(self.path)[1], dir=folder)
            os.close(fd)
        except OSError as exc:
            raise _explain(exc, self.path)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        storage = _library_write_failure(exc, self.path) if exc is not None else None
        try:
            if exc_type is None:
                with open(self.tmp, "rb+") as f:
                    _plain_mode(self.tmp)
                    os.fsync(f.fileno())
                os.replace(self.tmp, self.path)
                _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
                self.tmp = None
        except OSError as err:
            raise _explain(err, self.path)
        finally:
            if self.tmp is not None and os.path.exists(self.tmp):
                os.unlink(self.tmp)
        if storage is not None:
            raise storage from None
        return False


def read_json(path, error, missing=None, invalid="not valid JSON"):
    """The parsed JSON file at `path`. A missing file raises `error` ("PATH: missing") when `missing` is given
    (else FileNotFoundError propagates); a file that is not JSON or not text raises `error` ("PATH: invalid
    (why)"). `error` is the caller's EdgepruneError class, so the message names the file in its own terms."""
    try:
        with open(str(path)) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        if missing is None:
            raise
        raise error("{}: {}".format(path, missing)) from None
    except ValueError as exc:          # json.JSONDecodeError and UnicodeDecodeError
        raise error("{}: {} ({})".format(path, invalid, exc)) from None


def read_yaml(path, error, missing=None, invalid="not valid YAML"):
    """read_json's twin for YAML files (host side: PyYAML is imported on the call). A syntax error names its
    line and column ("PATH: line 3, column 9: not valid YAML (why)"); a file that cannot be read (a folder, no
    permission) raises `error` too."""
    import yaml

    try:
        with open(str(path)) as f:
            return yaml.safe_load(f.read())
    except FileNotFoundError:
        if missing is None:
            raise
        raise error("{}: {}".format(path, missing)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = "line {}, column {}: ".format(mark.line + 1, mark.column + 1) if mark else ""
        raise error("{}: {}{} ({})".format(path, where, invalid, exc.problem or exc.context)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error("{}: {} ({})".format(path, invalid, str(exc).splitlines()[0])) from None
    except OSError as exc:
        raise error("{}: cannot read it ({})".format(path, exc.strerror or exc)) from None


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
