"""Engine cache keys, build planning and TensorRT API dispatch, all without TensorRT (duck-typed objects)."""
import os

import numpy as np
import pytest

from edgeprune.errors import DeviceError
from jetson.backends import resolve_backend
from jetson.backends.trt import TrtBackend, describe_io, io_api, parse_version
from jetson.engine import EngineCache, cache_fields, cache_key, plan_build
from jetson.profiles import PROFILES, board_model, get_profile, optimization_shapes, resolve_precision

pytestmark = pytest.mark.py36
SHA = "a" * 64


def _fields(**kw):
    base = dict(onnx_sha256=SHA, precision="fp16", input_shape=[1, 3, 256, 256], trt_version="8.2.1.8",
                compute_capability=(6, 2), workspace_mb=1024, board="NVIDIA Jetson Xavier NX Developer Kit")
    base.update(kw)
    return cache_fields(**base)


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "b" * 64}, {"precision": "int8"}, {"input_shape": [1, 3, 320, 320]},
    {"trt_version": "8.0.1.6"}, {"compute_capability": (7, 2)}, {"workspace_mb": 2048}, {"dla_core": 0},
    {"int8_source": "calib:x"}, {"board": "NVIDIA Jetson AGX Xavier"},
    {"input_shape": [-1, 3, 256, 256], "profile_shapes": [[1, 3, 256, 256], [4, 3, 256, 256], [8, 3, 256, 256]]}])
def test_every_field_changes_the_key(change):
    assert cache_key(_fields(**change)) != cache_key(_fields())
    assert cache_key(_fields()) == cache_key(_fields())


def test_dynamic_profile_shapes_are_part_of_the_request(tmp_path):
    logs = []
    cache = EngineCache(str(tmp_path), log=logs.append)
    dyn = [-1, 3, 256, 256]
    small = _fields(input_shape=dyn, profile_shapes=optimization_shapes(get_profile("tx2"), dyn))
    big = _fields(input_shape=dyn, profile_shapes=[[1, 3, 256, 256], [8, 3, 256, 256], [16, 3, 256, 256]])
    a, b = cache.store(small, b"max8"), cache.store(big, b"max16")
    assert cache.lookup(small) == a and cache.lookup(big) == b and logs == []  # two requests, neither stale
    assert small["profile_shapes"][2] == [8, 3, 256, 256]
    assert optimization_shapes(get_profile("tx2"), [1, 3, 256, 256]) is None


def test_board_model_from_the_device_tree(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\x00")
    assert board_model(str(model)) == "NVIDIA Jetson Xavier NX Developer Kit"
    assert board_model(str(tmp_path / "absent")) is None  # not a Jetson: the GPU's compute capability only


def test_cache_hit_stale_and_corrupt(tmp_path):
    logs = []
    cache = EngineCache(str(tmp_path), log=logs.append)
    f_old = _fields(trt_version="8.0.1.6")
    old = cache.store(f_old, b"plan-built-by-8.0")
    assert cache.lookup(f_old) == old
    f_new = _fields(trt_version="8.2.1.8")
    assert cache.lookup(f_new) is None                   # the 8.0 engine is not loaded for 8.2 ...
    assert any("trt_version 8.0.1.6 -> 8.2.1.8" in m for m in logs)
    assert not (tmp_path / (old.split("/")[-1])).exists()  # ... and removed
    new = cache.store(f_new, b"plan-built-by-8.2")
    assert cache.lookup(f_new) == new
    other_gpu = _fields(compute_capability=(8, 7))
    assert cache.lookup(other_gpu) is None and any("compute_capability 6.2 -> 8.7" in m for m in logs)
    new = cache.store(f_new, b"plan-built-by-8.2")
    other_board = _fields(board="NVIDIA Jetson AGX Xavier")  # same sm_72, other SM count and clocks
    assert cache.lookup(other_board) is None and not os.path.exists(new)
    assert any("board NVIDIA Jetson Xavier NX Developer Kit -> NVIDIA Jetson AGX Xavier" in m for m in logs)
    again = cache.store(f_new, b"plan-built-by-8.2")
    with open(again, "ab") as f:
        f.write(b"truncated?")
    assert cache.lookup(f_new) is None and any("corrupt" in m for m in logs)
    # a different request (other precision) is a separate entry, not stale
    a = cache.store(_fields(precision="fp32"), b"fp32")
    b = cache.store(_fields(precision="fp16"), b"fp16")
    assert cache.lookup(_fields(precision="fp32")) == a and cache.lookup(_fields(precision="fp16")) == b


def test_tx2_int8_builds_fp16_with_reason():
    prec, notes = resolve_precision("int8", get_profile("tx2"))
    assert prec == "fp16" and "no fast INT8" in notes[0]
    plan = plan_build("8.0.1.6", get_profile("tx2"), "int8", has_calib=True)
    assert plan["precision"] == "fp16" and plan["int8_mode"] is None and plan["set_fp16_flag"]
    assert plan["workspace_api"] == "max_workspace_size"


def test_int8_mode_by_version():
    nx = get_profile("xavier-nx")
    assert plan_build("8.2.1", nx, "int8", has_calib=True)["int8_mode"] == "calibrator"
    p = plan_build("8.5.2", nx, "int8", has_calib=False, has_int8_model=True)
    assert p["int8_mode"] == "explicit" and p["onnx"] == "int8_model" and p["workspace_api"] == "memory_pool"
    assert plan_build("10.3.0", get_profile("orin-nano"), "int8", has_calib=True, has_int8_model=True)["int8_mode"] \
        == "explicit"
    with pytest.raises(DeviceError, match="model.int8.onnx"):
        plan_build("10.3.0", get_profile("orin-nano"), "int8", has_calib=True)
    with pytest.raises(DeviceError, match="calib build"):
        plan_build("8.2.1", nx, "int8")
    # what the GPU reports wins over the profile
    assert plan_build("8.2.1", nx, "int8", fast_int8=False, has_calib=True)["precision"] == "fp16"


def test_trt11_has_no_fp16_flag_and_dla_rules():
    p = plan_build("11.0.0", get_profile("orin-agx"), "fp16", has_fp16_flag=False)
    assert p["precision"] == "fp32" and not p["set_fp16_flag"] and "BuilderFlag.FP16" in p["notes"][0]
    assert plan_build("8.5.2", get_profile("orin-agx"), "fp16", dla_core=1)["dla_core"] == 1
    with pytest.raises(DeviceError, match="has no DLA"):
        plan_build("8.5.2", get_profile("orin-nano"), "fp16", dla_core=0)
    with pytest.raises(DeviceError, match="0..1"):
        plan_build("8.5.2", get_profile("agx-xavier"), "fp16", dla_core=2)
    with pytest.raises(DeviceError, match="FP16 or INT8 only"):
        plan_build("8.5.2", get_profile("agx-xavier"), "fp32", dla_core=0)


def test_profiles_facts():
    assert PROFILES["tx2"].compute_capability == (6, 2) and PROFILES["tx2"].fp16 and not PROFILES["tx2"].int8
    assert PROFILES["orin-nano"].dla_cores == 0 and PROFILES["orin-agx"].dla_cores == 2
    assert set(PROFILES) == {"tx2", "xavier-nx", "agx-xavier", "orin-nano", "orin-agx", "host"}


def test_versions_and_api_choice():
    assert parse_version("8.0.1.6") == (8, 0, 1) and parse_version("10.3.0.post1") == (10, 3, 0)
    assert parse_version("10") == (10, 0, 0)
    with pytest.raises(DeviceError):
        parse_version("abc")
    assert io_api("8.0.1") == "binding" and io_api("8.2.1.8") == "binding"
    assert io_api("8.5.2") == "tensor" and io_api("8.6.1") == "tensor" and io_api("10.3.0") == "tensor"


def test_backend_resolution():
    has = lambda names: (lambda m: m in names)  # noqa: E731
    assert resolve_backend("auto", has({"tensorrt", "onnxruntime"})) == "tensorrt"
    assert resolve_backend("auto", has({"onnxruntime"})) == "onnxruntime"
    with pytest.raises(DeviceError, match="no inference backend"):
        resolve_backend("auto", has(set()))
    with pytest.raises(DeviceError, match="python3-libnvinfer"):
        resolve_backend("tensorrt", has({"onnxruntime"}))


# ---- duck-typed TensorRT objects: the engine "multiplies by 2" on a fake GPU ------------------------
class FakeMem(object):
    name = "fake"
    stream_handle = 7

    def __init__(self):
        self.buf, self.next, self.freed, self.closed = {}, 4096, [], False
        self.events, self.destroyed = 0, 0

    def alloc(self, nbytes):
        self.next += 4096
        self.buf[self.next] = np.zeros(nbytes, np.uint8)
        return self.next

    def free(self, ptr):
        self.freed.append(ptr)

    def htod(self, ptr, host):
        self.buf[ptr][:host.nbytes] = host.view(np.uint8).reshape(-1)

    def dtoh(self, host, ptr):
        host.view(np.uint8).reshape(-1)[:] = self.buf[ptr][:host.nbytes]

    def sync(self):
        pass

    def event(self):
        self.events += 1
        return [0.0]

    def destroy_event(self, ev):
        self.destroyed += 1

    def record(self, ev):
        ev[0] = float(len(self.buf))

    def elapsed_ms(self, a, b):
        return b[0] - a[0]

    def close(self):
        self.closed = True


SHAPES = {"images": (1, 3, 4, 4), "output": (1, 48, 1)}


class BindingEngine(object):
    num_bindings = 2

    def get_binding_name(self, i):
        return ["images", "output"][i]

    def binding_is_input(self, i):
        return i == 0

    def get_binding_shape(self, i):
        return SHAPES[self.get_binding_name(i)]

    def get_binding_dtype(self, i):
        return "f32"


class TensorEngine(object):
    num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["output", "images"][i]  # outputs may come first: order must not matter

    def get_tensor_mode(self, name):
        return "IN" if name == "images" else "OUT"

    def get_tensor_shape(self, name):
        return SHAPES[name]

    def get_tensor_dtype(self, name):
        return "f32"


class Context(object):
    def __init__(self, mem, api):
        self.mem, self.api, self.addr, self.calls = mem, api, {}, []

    def _run(self, inp, out):
        x = self.mem.buf[inp][:48 * 4].view(np.float32)
        self.mem.buf[out][:48 * 4] = (x * 2).view(np.uint8)

    def execute_async_v2(self, bindings, stream_handle):
        assert self.api == "binding" and stream_handle == 7
        self.calls.append("v2")
        self._run(bindings[0], bindings[1])
        return True

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream_handle):
        assert self.api == "tensor" and stream_handle == 7
        self.calls.append("v3")
        self._run(self.addr["images"], self.addr["output"])
        return True

    def get_binding_shape(self, i):
        return SHAPES[["images", "output"][i]]

    def get_tensor_shape(self, name):
        return SHAPES[name]


@pytest.mark.parametrize("engine,version,call", [(BindingEngine(), "8.2.1.8", "v2"), (TensorEngine(), "10.3.0", "v3"),
                                                 (TensorEngine(), "8.6.1", "v3")])
def test_trt_backend_dispatch_and_data_flow(engine, version, call):
    api = io_api(version, engine)
    io = describe_io(engine, api, lambda dt: np.float32, input_mode="IN")
    assert [t.name for t in io if t.is_input] == ["images"]
    mem = FakeMem()
    ctx = Context(mem, api)
    be = TrtBackend(engine, ctx, api, io, mem, output_names=["output"])
    assert be.batch == 1
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    out = be.infer(x)
    assert ctx.calls == [call]
    np.testing.assert_array_equal(out[0].reshape(-1), x.reshape(-1) * 2)
    assert set(be.last_split) == {"h2d", "compute", "d2h"}
    be.infer(x)
    with pytest.raises(DeviceError, match="input"):
        be.infer(np.zeros((1, 3, 5, 5), np.float32))
    be.close()
    assert mem.closed and len(mem.freed) == 2
    assert mem.events == 4 and mem.destroyed == 4  # timing events made once per backend, destroyed on close


def test_engine_object_disagreeing_with_version_is_trusted():
    # a TRT 8.4 build (bindings by version) whose engine only has the tensor API (or the reverse)
    assert io_api("8.4.0", TensorEngine()) == "tensor"
    assert io_api("10.0.0", BindingEngine()) == "binding"
    with pytest.raises(DeviceError, match="neither"):
        io_api("8.2.1", object())


def test_missing_output_name_is_reported():
    engine = BindingEngine()
    io = describe_io(engine, "binding", lambda dt: np.float32)
    with pytest.raises(DeviceError, match="no output"):
        TrtBackend(engine, None, "binding", io, FakeMem(), output_names=["num_detections"])


class DynamicEngine(TensorEngine):
    def get_tensor_shape(self, name):
        return (-1,) + SHAPES[name][1:]

    def get_tensor_profile_shape(self, name, profile):
        assert profile == 0
        return [(1, 3, 4, 4), (2, 3, 4, 4), (2, 3, 4, 4)]


class DynamicContext(Context):
    def __init__(self, mem, api):
        Context.__init__(self, mem, api)
        self.n = None
        self.batches = []

    def set_input_shape(self, name, shape):
        if shape[0] > 2:
            return False
        self.n = shape[0]
        self.batches.append(shape[0])
        return True

    def get_tensor_shape(self, name):
        return (self.n,) + SHAPES[name][1:]

    def _run(self, inp, out):
        k = self.n * 48 * 4
        x = self.mem.buf[inp][:k].view(np.float32)
        self.mem.buf[out][:k] = (x * 2).view(np.uint8)


def test_dynamic_engine_is_fed_in_profile_sized_chunks():
    from jetson.runtime import Detector
    engine = DynamicEngine()
    io = describe_io(engine, "tensor", lambda dt: np.float32, input_mode="IN")
    mem = FakeMem()
    ctx = DynamicContext(mem, "tensor")
    be = TrtBackend(engine, ctx, "tensor", io, mem, output_names=["output"])
    assert be.batch is None and be.max_batch == 2
    manifest = {"model": {"input_shape": [-1, 3, 4, 4]}, "classes": ["a"], "_root": "/x"}
    det = Detector(manifest, be, get_profile("host"))
    x = np.random.RandomState(0).rand(5, 3, 4, 4).astype(np.float32)
    out = det.infer(x)[0]
    assert ctx.batches == [2, 2, 1]
    np.testing.assert_allclose(out.reshape(5, -1), x.reshape(5, -1) * 2)
    with pytest.raises(DeviceError, match="optimization profile"):
        be.infer(np.zeros((3, 3, 4, 4), np.float32))
