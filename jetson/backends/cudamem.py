"""Device buffers, a stream and timing events for the TensorRT backend: pycuda (JetPack 4.6's usual
choice) or NVIDIA's cuda-python (`cuda.cudart`, or `cuda.bindings.runtime` in cuda-python >= 12.6).
Python 3.6. Both expose the same small interface so the backend and the calibrators need not care:

  alloc(nbytes) -> int device pointer      free(ptr)
  htod(ptr, host_array)  dtoh(host_array, ptr)   (async on `stream`)
  sync()   event() -> opaque   record(ev)   elapsed_ms(ev_a, ev_b)   destroy_event(ev)
  stream_handle -> int (what execute_async_v2/v3 take)   compute_capability() -> (major, minor)
"""
import importlib

from edgeprune.errors import DeviceError


class PycudaMem(object):
    name = "pycuda"

    def __init__(self):
        import pycuda.autoinit  # noqa: F401  (creates the context on device 0 for this thread)
        import pycuda.driver as cuda
        self.cuda = cuda
        self.stream = cuda.Stream()
        self.stream_handle = self.stream.handle
        self._allocs = {}

    def alloc(self, nbytes):
        buf = self.cuda.mem_alloc(max(int(nbytes), 1))
        self._allocs[int(buf)] = buf
        return int(buf)

    def free(self, ptr):
        buf = self._allocs.pop(int(ptr), None)
        if buf is not None:
            buf.free()

    def htod(self, ptr, host):
        self.cuda.memcpy_htod_async(ptr, host, self.stream)

    def dtoh(self, host, ptr):
        self.cuda.memcpy_dtoh_async(host, ptr, self.stream)

    def sync(self):
        self.stream.synchronize()

    def event(self):
        return self.cuda.Event()

    def destroy_event(self, ev):
        pass  # a pycuda Event frees its CUDA event when the Python object is collected

    def record(self, ev):
        ev.record(self.stream)

    def elapsed_ms(self, start, end):
        end.synchronize()
        return start.time_till(end)

    def compute_capability(self):
        return tuple(self.cuda.Context.get_device().compute_capability())

    def close(self):
        for ptr in list(self._allocs):
            self.free(ptr)


def _cudart():
    for mod in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    return None


class CudartMem(object):
    """cuda-python's runtime API: every call returns (cudaError_t, result...). Unlike pycuda's objects, its
    handles free nothing when collected: every event made here is destroyed by destroy_event() or close()."""
    name = "cuda-python"

    def __init__(self, rt=None):
        self.rt = rt or _cudart()
        if self.rt is None:
            raise DeviceError("cuda-python is not installed")
        self.stream = self._ok(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self.stream)
        self._allocs = set()
        self._events = {}  # int(handle) -> handle, the live events

    def _ok(self, ret, what):
        err = ret[0] if isinstance(ret, tuple) else ret
        if int(err) != 0:
            name = getattr(err, "name", str(err))
            raise DeviceError("CUDA {} failed: {} (is there a usable GPU and driver? else use --backend onnxruntime)"
                              .format(what, name))
        if isinstance(ret, tuple):
            return ret[1] if len(ret) == 2 else ret[1:]
        return None

    def alloc(self, nbytes):
        ptr = int(self._ok(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))
        self._allocs.add(ptr)
        return ptr

    def free(self, ptr):
        if ptr in self._allocs:
            self._allocs.discard(ptr)
            self._ok(self.rt.cudaFree(ptr), "cudaFree")

    def htod(self, ptr, host):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self.stream), "cudaMemcpyAsync H2D")

    def dtoh(self, host, ptr):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self.stream), "cudaMemcpyAsync D2H")

    def sync(self):
        self._ok(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def event(self):
        ev = self._ok(self.rt.cudaEventCreate(), "cudaEventCreate")
        self._events[int(ev)] = ev
        return ev

    def destroy_event(self, ev):
        if self._events.pop(int(ev), None) is not None:
            self._ok(self.rt.cudaEventDestroy(ev), "cudaEventDestroy")

    def record(self, ev):
        self._ok(self.rt.cudaEventRecord(ev, self.stream), "cudaEventRecord")

    def elapsed_ms(self, start, end):
        self._ok(self.rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(self._ok(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def compute_capability(self):
        props = self._ok(self.rt.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        return int(props.major), int(props.minor)

    def close(self):
        for ev in list(self._events.values()):
            self.destroy_event(ev)
        for ptr in list(self._allocs):
            self.free(ptr)
        if self.stream is not None:
            self._ok(self.rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self.stream = None


def open_memory():
    """pycuda when importable, else cuda-python; DeviceError naming both when neither is there."""
    try:
        importlib.import_module("pycuda.driver")
        return PycudaMem()
    except ImportError:
        pass
    if _cudart() is not None:
        return CudartMem()
    raise DeviceError("the TensorRT backend needs pycuda (JetPack: pip3 install pycuda) or cuda-python "
                      "(pip install cuda-python) for device buffers; or use --backend onnxruntime")
