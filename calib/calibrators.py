"""INT8 calibrators for TensorRT 8.x reading a calib set's `.npy` batches. Python 3.6, numpy only.

`BatchFeeder` is the logic (each batch once, then None; calibration cache read/write) and takes the device
copy as plain callables, so it runs without pycuda/TensorRT; `make_trt_calibrator` wraps it in a real
`trt.IInt8EntropyCalibrator2` or `trt.IInt8MinMaxCalibrator` subclass. (Calibrators are deprecated from
TensorRT 10.1: there the engine builder uses the bundle's QDQ model instead, see jetson/engine.py.)
"""
import os

import numpy as np

from edgeprune.errors import BundleError, DeviceError
from edgeprune.fsio import atomic_write_bytes

KINDS = ("entropy", "minmax")


class BatchFeeder(object):
    """alloc(nbytes) -> device pointer; htod(ptr, host_array) copies; sync() waits for the copy (optional)."""

    def __init__(self, calib, alloc, htod, sync=None, cache_path=None):
        self.paths = list(calib["_batches"])
        self.shape = tuple(int(d) for d in calib["shape"])
        self.batch_size = int(calib["batch_size"])
        self.htod = htod
        self.sync = sync
        self.cache_path = cache_path
        self.index = 0
        self.nbytes = int(np.prod(self.shape)) * 4
        self.ptr = alloc(self.nbytes)
        self._host = None  # keeps the last host batch alive while an async copy may still read it

    def get_batch_size(self):
        return self.batch_size

    def get_batch(self, names=None):
        if self.index >= len(self.paths):
            return None
        path = self.paths[self.index]
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError("{}: unreadable calibration batch ({}); rebuild with edgeprune calib build"
                              .format(path, exc))
        if tuple(arr.shape) != self.shape or arr.dtype != np.float32:
            raise BundleError("{}: batch is {} {}, the calib manifest says {} float32".format(path, arr.shape,
                                                                                               arr.dtype, self.shape))
        self._host = np.ascontiguousarray(arr)
        self.htod(self.ptr, self._host)
        if self.sync is not None:
            self.sync()
        self.index += 1
        return [int(self.ptr)]

    def reset(self):
        self.index = 0

    def read_calibration_cache(self):
        if self.cache_path and os.path.isfile(self.cache_path):
            with open(self.cache_path, "rb") as f:
                return f.read()
        return None

    def write_calibration_cache(self, cache):
        if self.cache_path:
            atomic_write_bytes(self.cache_path, bytes(memoryview(cache)))


def make_trt_calibrator(trt, calib, kind, cache_path, mem):
    """A TensorRT calibrator object (subclass of the real trt base class) over `calib` using `mem`
    (jetson.backends.cudamem) for the device buffer. `.close()` frees it."""
    if kind not in KINDS:
        raise DeviceError("calibrator {!r}: choose one of {}".format(kind, ", ".join(KINDS)))
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator

    class Calibrator(base):
        def __init__(self):
            base.__init__(self)  # pybind11 classes need the base initialiser called explicitly
            self.feeder = BatchFeeder(calib, mem.alloc, mem.htod, mem.sync, cache_path)

        def get_batch_size(self):
            return self.feeder.get_batch_size()

        def get_batch(self, names, *args):
            return self.feeder.get_batch(names)

        def read_calibration_cache(self, *args):
            return self.feeder.read_calibration_cache()

        def write_calibration_cache(self, cache, *args):
            self.feeder.write_calibration_cache(cache)

        def close(self):
            mem.close()

    Calibrator.__name__ = "Edgeprune{}Calibrator".format(kind.capitalize())
    return Calibrator()
