"""cuda-python device buffers (jetson.backends.cudamem.CudartMem): the same round trip against the counting
stand-in (trt_fakes.FakeCudart: real memcpys over host memory) everywhere, and against the real library where
cuda-python and a GPU exist (a skip saying why otherwise)."""

import numpy as np
import pytest

from edgeprune.errors import DeviceError
from jetson.backends.cudamem import CudartMem, _cudart
from trt_fakes import FakeCudart

pytestmark = pytest.mark.py36
API = ("cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize", "cudaMalloc", "cudaFree", "cudaMemcpyAsync",
       "cudaEventCreate", "cudaEventDestroy", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime",
       "cudaGetDeviceProperties")


def _real():
    rt = _cudart()
    if rt is None:
        pytest.skip("cuda-python is not installed")
    return rt


def _round_trip(mem):
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
    mem.destroy_event(a)
    return b  # left for close() to destroy


def test_the_calls_we_make_exist_in_cuda_python():
    rt = _real()
    assert [n for n in API if not hasattr(rt, n)] == []
    assert hasattr(rt.cudaMemcpyKind, "cudaMemcpyHostToDevice") and hasattr(rt.cudaMemcpyKind, "cudaMemcpyDeviceToHost")


def test_the_fake_makes_the_same_calls():
    assert [n for n in API if not hasattr(FakeCudart, n)] == []


def test_round_trip_and_every_event_destroyed_on_the_fake():
    rt = FakeCudart(compute_capability=(7, 2))
    mem = CudartMem(rt=rt)
    _round_trip(mem)
    assert rt.events_created == 2 and rt.live_events == 1 and mem.compute_capability() == (7, 2)
    mem.close()
    assert rt.live_events == 0 and rt.events_destroyed == 2 and rt.allocs == {} and rt.streams == set()
    with pytest.raises(DeviceError, match="cudaMemcpyAsync H2D failed: cudaErrorInvalidValue"):
        CudartMem(rt=rt).htod(12345, np.zeros(4, np.float32))  # not a device allocation


def test_round_trip_on_the_real_gpu():
    rt = _real()
    try:
        mem = CudartMem(rt)
    except DeviceError as exc:
        assert "--backend onnxruntime" in str(exc)
        pytest.skip("cuda-python is installed but there is no usable GPU here: {}".format(exc))
    _round_trip(mem)
    mem.close()
