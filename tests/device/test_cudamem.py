"""cuda-python buffers against the real library: a round trip where a GPU exists, a clear DeviceError where not."""
import importlib

import numpy as np
import pytest

from edgeprune.errors import DeviceError
from jetson.backends.cudamem import CudartMem, _cudart

rt = _cudart()
pytestmark = pytest.mark.skipif(rt is None, reason="cuda-python not installed")

API = ("cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize", "cudaMalloc", "cudaFree", "cudaMemcpyAsync",
       "cudaEventCreate", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime", "cudaGetDeviceProperties")


def test_the_calls_we_make_exist():
    assert [n for n in API if not hasattr(rt, n)] == []
    assert hasattr(rt.cudaMemcpyKind, "cudaMemcpyHostToDevice") and hasattr(rt.cudaMemcpyKind, "cudaMemcpyDeviceToHost")


def test_round_trip_or_clear_error():
    try:
        mem = CudartMem()
    except DeviceError as exc:
        assert "--backend onnxruntime" in str(exc)
        return
    x = np.arange(1000, dtype=np.float32)
    ptr = mem.alloc(x.nbytes)
    a, b = mem.event(), mem.event()
    mem.record(a)
    mem.htod(ptr, x)
    y = np.empty_like(x)
    mem.dtoh(y, ptr)
    mem.record(b)
    mem.sync()
    assert mem.elapsed_ms(a, b) >= 0
    np.testing.assert_array_equal(x, y)
    assert len(mem.compute_capability()) == 2
    mem.close()
