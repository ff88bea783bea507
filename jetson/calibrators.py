"""INT8 calibrators for TensorRT 8.x reading a calib set's `.npy` batches. Python 3.6, numpy only.

`BatchFeeder` is the logic (every image once, in batches of the shape TensorRT reads; calibration cache read/
write) and takes the device copy as plain callables, so it runs without pycuda/TensorRT; `make_trt_calibrator`
wraps it in a real `trt.IInt8EntropyCalibrator2` or `trt.IInt8MinMaxCalibrator` subclass. (Calibrators are
deprecated from TensorRT 10.1: there the engine builder uses the bundle's QDQ model instead, see jetson/engine.py.)

What the TensorRT wrappers do with these callbacks, and why the subclass is defensive:
- TensorRT reads exactly one engine input's worth of floats per get_batch (the static input shape, or the
  calibration profile's shape for a dynamic input): calib files of 8 images fed to a batch-1 engine would
  calibrate on every 8th image. The feeder re-batches the images to that shape.
- get_batch is called from C++ noexcept code: on 8.0/8.2 a Python exception there aborts the process, from 8.4
  it is printed and calibration silently ends early. Every exception is caught, calibration is ended, and
  `error` holds it for the caller to raise after the build.
- the 8.0.1 wrapper keeps no reference to the bytes read_calibration_cache returns and reads them after they
  are freed (fixed in 8.2.1): the subclass keeps them.
"""
import hashlib
import io

import numpy as np

from edgeprune.errors import BundleError, DeviceError, EdgepruneError
from edgeprune.fsio import atomic_write_bytes

KINDS = ("entropy", "minmax")


class BatchFeeder(object):
    """alloc(nbytes) -> device pointer; htod(ptr, host_array) copies; sync() waits for the copy (optional).
    input_shape: what TensorRT reads per batch (default: the calib files' shape). The calib set's images (the
    first `num_images`, without the padding of the last file) are fed once each; a short last batch is filled
    by cycling from the first image. Each file is checked against its sha256 in the calib manifest."""

    def __init__(self, calib, alloc, htod, sync=None, cache_path=None, input_shape=None):
        self.files = [(path, entry.get("sha256")) for path, entry in zip(calib["_batches"], calib["batches"])]
        self.file_shape = tuple(int(d) for d in calib["shape"])
        self.shape = tuple(int(d) for d in (input_shape or self.file_shape))
        if self.shape[1:] != self.file_shape[1:] or self.shape[0] < 1:
            raise DeviceError("calibration images are {} but the engine reads {} per batch: rebuild the calib set "
                              "with edgeprune calib build for this bundle".format(self.file_shape[1:], self.shape))
        per_file = self.file_shape[0]
        self.num_images = min(int(calib.get("num_images", len(self.files) * per_file)), len(self.files) * per_file)
        self.batch_size = self.shape[0]
        self.num_batches = -(-self.num_images // self.batch_size)
        self.htod = htod
        self.sync = sync
        self.cache_path = cache_path
        self.index = 0
        self.nbytes = int(np.prod(self.shape)) * 4
        self.ptr = alloc(self.nbytes)
        self._host = None  # keeps the last host batch alive while an async copy may still read it
        self._loaded = (None, None)

    def _load(self, i):
        if self._loaded[0] == i:
            return self._loaded[1]
        path, want = self.files[i]
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except (IOError, OSError) as exc:
            raise BundleError("{}: unreadable calibration batch ({}); rebuild with edgeprune calib build"
                              .format(path, exc))
        if hashlib.sha256(raw).hexdigest() != want:
            raise BundleError("{}: sha256 differs from the calib manifest (changed or corrupt); rebuild with "
                              "edgeprune calib build".format(path))
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError("{}: unreadable calibration batch ({}); rebuild with edgeprune calib build"
                              .format(path, exc))
        if tuple(arr.shape) != self.file_shape or arr.dtype != np.float32:
            raise BundleError("{}: batch is {} {}, the calib manifest says {} float32".format(
                path, arr.shape, arr.dtype, self.file_shape))
        self._loaded = (i, arr)
        return arr

    def _image(self, k):
        per_file = self.file_shape[0]
        return self._load(k // per_file)[k % per_file]

    def get_batch_size(self):
        return self.batch_size

    def get_batch(self, names=None):
        if self.index >= self.num_batches:
            return None
        start = self.index * self.batch_size
        host = np.empty(self.shape, np.float32)
        for j in range(self.batch_size):
            host[j] = self._image((start + j) % self.num_images)
        self._host = host
        self.htod(self.ptr, host)
        if self.sync is not None:
            self.sync()
        self.index += 1
        return [int(self.ptr)]

    def reset(self):
        self.index = 0

    def read_calibration_cache(self):
        if self.cache_path:
            try:
                with open(self.cache_path, "rb") as f:
                    return f.read()
            except (IOError, OSError):
                return None
        return None

    def write_calibration_cache(self, cache):
        if self.cache_path:
            atomic_write_bytes(self.cache_path, bytes(memoryview(cache)))


def _callback_error(exc, where, feeder):
    if isinstance(exc, EdgepruneError):
        return exc
    return DeviceError("INT8 calibration failed in {} (batch {} of {}): {}: {}".format(
        where, feeder.index + 1, feeder.num_batches, type(exc).__name__, exc))


def make_trt_calibrator(trt, calib, kind, cache_path, mem, input_shape=None):
    """A TensorRT calibrator object (subclass of the real trt base class) over `calib` using `mem`
    (jetson.backends.cudamem) for the device buffer, feeding batches of `input_shape`. After the build,
    `.error` is the exception that ended calibration early (None when it ran to the end); `.close()` frees."""
    if kind not in KINDS:
        raise DeviceError("calibrator {!r}: choose one of {}".format(kind, ", ".join(KINDS)))
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator

    class Calibrator(base):
        def __init__(self):
            base.__init__(self)  # pybind11 classes need the base initialiser called explicitly
            self.feeder = BatchFeeder(calib, mem.alloc, mem.htod, mem.sync, cache_path, input_shape)
            self.input_shape = self.feeder.shape
            self.error = None
            self._cache = None  # the bytes handed to TensorRT stay alive as long as the calibrator

        def _fail(self, exc, where):
            if self.error is None:
                self.error = _callback_error(exc, where, self.feeder)

        def get_batch_size(self):
            return self.feeder.get_batch_size()

        def get_batch(self, names, *args):
            if self.error is not None:
                return None
            try:
                return self.feeder.get_batch(names)
            except Exception as exc:  # noqa: BLE001 - must not reach TensorRT's noexcept wrapper
                self._fail(exc, "get_batch")
                return None

        def read_calibration_cache(self, *args):
            try:
                self._cache = self.feeder.read_calibration_cache()
            except Exception as exc:  # noqa: BLE001
                self._fail(exc, "read_calibration_cache")
                self._cache = None
            return self._cache

        def write_calibration_cache(self, cache, *args):
            try:
                self.feeder.write_calibration_cache(cache)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc, "write_calibration_cache")

        def close(self):
            mem.close()

    Calibrator.__name__ = "Edgeprune{}Calibrator".format(kind.capitalize())
    return Calibrator()
