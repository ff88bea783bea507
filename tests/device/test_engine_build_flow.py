"""get_engine / build_engine / open_trt_backend against the version-exact TensorRT stand-ins (trt_fakes: 8.0.1,
8.2.1, 8.5.2, 8.6.1, 10.3.0) and a counting cuda-python stand-in: every device-side TensorRT path runs against
every version it claims to support. A fresh fake module stands for a new process (empty plugin registry).
The real-TensorRT test is test_tensorrt.py."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

from edgeprune.errors import BundleError, DeviceError
from jetson import engine as eng
from jetson.backends.cudamem import CudartMem
from jetson.backends.trt import open_trt_backend
from jetson.bundle import load_bundle
from jetson.profiles import get_profile
from jetson.runtime import load_detector
from trt_fakes import VERSIONS, FakeAbort, FakeCudart, UseAfterFree, make_trt

pytestmark = pytest.mark.py36
CALIBRATOR_VERSIONS = [v for v in VERSIONS if not v.startswith("10.")]  # calibrators are deprecated from 10.1
BINDING_API = ("8.0.1.6", "8.2.1.8")


def _profile(version, dla=False):
    """A board that this TensorRT ships for (JetPack 4.6: Xavier; 5.x/6.x: Orin)."""
    if version in BINDING_API:
        return get_profile("xavier-nx"), (7, 2)
    return get_profile("orin-agx" if dla else "orin-nano"), (8, 7)


@pytest.fixture
def env(monkeypatch, bundle_copy):
    """use(version, ...) puts a fresh fake `tensorrt` (a new process) in sys.modules; one fake GPU throughout."""
    gpu = FakeCudart()

    def use(version, cc=(8, 7), network=None, numpy_version=None):
        gpu.cc = cc
        m = load_bundle(bundle_copy)
        net = network or {"input": (m["model"]["input_name"], m["model"]["input_shape"]),
                          "outputs": [(n, "FLOAT") for n in m["model"]["output_names"]]}
        t = make_trt(version, gpu, net, numpy_version)
        monkeypatch.setitem(sys.modules, "tensorrt", t)
        monkeypatch.setattr("jetson.backends.cudamem.open_memory", lambda: CudartMem(rt=gpu))
        return t
    return use, bundle_copy, gpu


def _make_dynamic(bundle):
    path = os.path.join(bundle, "manifest.json")
    with open(path) as f:
        raw = json.load(f)
    raw["model"]["input_shape"][0] = -1
    raw["model"]["dynamic_batch"] = True
    with open(path, "w") as f:
        json.dump(raw, f)


def _plan(path):
    with open(path, "rb") as f:
        blob = f.read()
    return json.loads(blob[blob.index(b"\n") + 1:].decode("utf-8"))


def test_fp16_build_then_cache_hit_then_stale_rebuild(env):
    use, bundle, _ = env
    m = load_bundle(bundle)
    logs = []
    t = use("8.0.1", cc=(6, 2))
    path, prec = eng.get_engine(m, get_profile("tx2"), "fp16", log=logs.append)
    calls = t._fake.calls
    assert prec == "fp16" and ("flag", "FP16") in calls and ("set", "max_workspace_size", 1024 << 20) in calls
    assert ("network_flags", 1) in calls  # explicit batch on 8.x
    assert _plan(path)["version"] == "8.0.1.6"
    t = use("8.0.1", cc=(6, 2))
    assert eng.get_engine(m, get_profile("tx2"), "fp16", log=logs.append)[0] == path
    assert not [c for c in t._fake.calls if c[0] == "build"]
    t = use("8.2.1", cc=(6, 2))  # JetPack upgrade: the 8.0 engine must not be loaded
    new, _ = eng.get_engine(m, get_profile("tx2"), "fp16", log=logs.append)
    assert new != path and not os.path.exists(path) and _plan(new)["version"] == "8.2.1.8"
    assert any("trt_version 8.0.1.6 -> 8.2.1.8" in msg for msg in logs)
    t = use("10.3.0")
    eng.get_engine(m, get_profile("orin-nano"), "fp16", log=logs.append)
    assert ("memory_pool", "WORKSPACE", 1024 << 20) in t._fake.calls and ("network_flags", 0) in t._fake.calls


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("version", VERSIONS)
def test_build_then_load_in_a_new_process_and_run(env, version, dynamic):
    use, bundle, _ = env
    if dynamic:
        _make_dynamic(bundle)
    profile, cc = _profile(version)
    use(version, cc)
    path, _ = eng.get_engine(load_bundle(bundle), profile, "fp16", log=lambda s: None)
    plan = _plan(path)
    assert plan["profile"] == ([[1, 3, 96, 96], [4, 3, 96, 96], [8, 3, 96, 96]] if dynamic else None)
    use(version, cc)  # a new process: loads the cached engine
    det = load_detector(bundle, backend="tensorrt", device=profile.name, precision="fp16")
    api = "binding" if version in BINDING_API else "tensor"
    assert "{} API".format(api) in det.backend.description
    x = np.random.RandomState(0).rand(11 if dynamic else 1, 3, 96, 96).astype(np.float32)
    out = det.infer(x)[0]  # dynamic: fed in chunks of the profile's max batch (8 + 3)
    np.testing.assert_allclose(out.reshape(len(x), -1), 2 * x.reshape(len(x), -1))
    assert det.backend.max_batch == (8 if dynamic else None)
    if dynamic:
        with pytest.raises(DeviceError, match="optimization profile"):
            det.backend.infer(np.zeros((9, 3, 96, 96), np.float32))
    det.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_nms_plugin_engine_loads_in_a_new_process(env, version, tmp_path):
    """EfficientNMS_TRT lives in the plugin registry that only init_libnvinfer_plugins fills."""
    use, _, gpu = env
    onnx = tmp_path / "nms.onnx"
    onnx.write_bytes(b"\x08\x07...op_type: EfficientNMS_TRT...")
    net = {"input": ("images", [1, 3, 8, 8]), "outputs": [("num_dets", "FLOAT"), ("det_boxes", "HALF")]}
    t = use(version, network=net)
    plan = eng.plan_build(version, get_profile("host"), "fp16")
    blob = eng.build_engine(t, str(onnx), plan, "images", [1, 3, 8, 8], 256, log=lambda s: None)
    (tmp_path / "nms.engine").write_bytes(blob)
    use(version, network=net)
    be = open_trt_backend(str(tmp_path / "nms.engine"), output_names=["num_dets", "det_boxes"])
    x = np.ones((1, 3, 8, 8), np.float32)
    a, b = be.infer(x)
    assert float(a.mean()) == 2.0 and b.dtype == np.float32 and float(b.mean()) == 3.0  # HALF comes back float32
    be.close()
    assert gpu.allocs == {} and gpu.live_events == 0 and gpu.streams == set()


def test_a_plan_from_another_tensorrt_is_refused_with_the_fix(env, tmp_path):
    use, _, gpu = env
    t = use("8.5.2")
    blob = eng.build_engine(t, str(_onnx(tmp_path)), eng.plan_build("8.5.2", get_profile("host"), "fp16"), "images",
                            [1, 3, 8, 8], 64, log=lambda s: None)
    (tmp_path / "m.engine").write_bytes(blob)
    use("8.6.1")
    with pytest.raises(DeviceError, match="TensorRT 8.6.1.6 cannot deserialize this engine.*rebuild"):
        open_trt_backend(str(tmp_path / "m.engine"))
    assert gpu.streams == set()  # the memory opened for it was closed


def test_unmappable_output_dtype_and_missing_plugin_library_are_named(env, tmp_path):
    use, _, gpu = env
    net = {"input": ("images", [1, 3, 8, 8]), "outputs": [("output", "FP8")]}
    t = use("8.6.1", network=net)
    blob = eng.build_engine(t, str(_onnx(tmp_path)), eng.plan_build("8.6.1", get_profile("host"), "fp16"), "images",
                            [1, 3, 8, 8], 64, log=lambda s: None)
    (tmp_path / "m.engine").write_bytes(blob)
    use("8.6.1", network=net)
    with pytest.raises(DeviceError, match="data type FP8 has no numpy equivalent"):
        open_trt_backend(str(tmp_path / "m.engine"))
    assert gpu.streams == set()
    t = use("10.3.0")
    t.init_libnvinfer_plugins = lambda logger, namespace: False
    with pytest.raises(DeviceError, match="init_libnvinfer_plugins failed"):
        eng.build_engine(t, str(_onnx(tmp_path)), eng.plan_build("10.3.0", get_profile("host"), "fp16"), "images",
                         [1, 3, 8, 8], 64, log=lambda s: None)


@pytest.mark.parametrize("version", VERSIONS)
def test_io_dtypes_under_numpy_1_24(env, version):
    """trt.nptype of 8.0.1-8.5.2 uses np.bool, absent from numpy 1.24-1.26: the backend maps dtypes itself."""
    use, bundle, _ = env
    profile, cc = _profile(version)
    t = use(version, cc, numpy_version="1.26.4")
    if version.startswith(("8.0", "8.2", "8.5")):
        with pytest.raises(AttributeError, match="bool"):
            t.nptype(t.float32)
    else:
        assert t.nptype(t.float32) is np.float32
    det = load_detector(bundle, backend="tensorrt", device=profile.name, precision="fp16")
    assert det.backend.input.dtype == np.float32 and det.backend.outputs[0].dtype == np.float32
    det.close()


@pytest.mark.parametrize("version", ["10.3.0"])  # JetPack 6: TensorRT 10.3 with cuda-python buffers
def test_cuda_python_events_stay_constant_over_10000_calls(env, version, tmp_path):
    """The bench/serve loop: one backend, 10,000 infer() calls; cuda-python events are never freed implicitly."""
    use, _, gpu = env
    net = {"input": ("images", [1, 3, 2, 2]), "outputs": [("output", "FLOAT")]}
    t = use(version, network=net)
    blob = eng.build_engine(t, str(_onnx(tmp_path)), eng.plan_build(version, get_profile("host"), "fp32"), "images",
                            [1, 3, 2, 2], 16, log=lambda s: None)
    (tmp_path / "m.engine").write_bytes(blob)
    be = open_trt_backend(str(tmp_path / "m.engine"), output_names=["output"])
    x = np.ones((1, 3, 2, 2), np.float32)
    live = []
    for i in range(10000):
        be.infer(x)
        if i in (0, 4999, 9999):
            live.append(gpu.live_events)
    assert live == [4, 4, 4] and gpu.events_created == 4
    be.close()
    assert gpu.live_events == 0 and gpu.events_destroyed == gpu.events_created


def _onnx(tmp_path):
    p = tmp_path / "plain.onnx"
    p.write_bytes(b"\x08\x07 plain conv net")
    return p


@pytest.fixture
def calib_data(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        Image.fromarray(np.full((20, 30, 3), i * 40, np.uint8)).save(str(data / "{}.png".format(i)))
        (data / "{}.txt".format(i)).write_text("{} 0.5 0.5 0.2 0.2\n".format(i % 3))
    return str(data)


def _calibrate(env, version, calib_data, dynamic=False, force=False):
    from calib.build import build_calib
    use, bundle, _ = env
    if dynamic:
        _make_dynamic(bundle)
    if not os.path.isdir(os.path.join(bundle, "calib")):
        build_calib(calib_data, bundle, n=5, batch_size=2)
    profile, cc = _profile(version)
    t = use(version, cc)
    path, prec = eng.get_engine(load_bundle(bundle), profile, "int8", log=lambda s: None, force=force)
    return t, path, prec


def _calib_images(bundle):
    files = sorted(f for f in os.listdir(os.path.join(bundle, "calib")) if f.endswith(".npy"))
    return np.concatenate([np.load(os.path.join(bundle, "calib", f)) for f in files])[:5]  # 5 real + 1 padding


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("version", CALIBRATOR_VERSIONS)
def test_int8_calibration_feeds_every_image_in_engine_shaped_batches(env, version, calib_data, dynamic):
    """calib files hold 2 images; TensorRT reads one engine input per get_batch (1 image for a static
    [1,3,H,W] engine, the calibration profile's batch for a dynamic one, which must be set)."""
    t, path, prec = _calibrate(env, version, calib_data, dynamic)
    want = _calib_images(env[1])
    seen = np.stack(t._fake.images_seen)
    assert prec == "int8" and ("flag", "INT8") in t._fake.calls
    if dynamic:
        assert ("calibration_profile", {"images": [(2, 3, 96, 96)] * 3}) in t._fake.calls
        assert len(seen) == 6 and np.array_equal(seen[5], want[0])  # the short last batch cycles
        seen = seen[:5]
    np.testing.assert_array_equal(seen, want)
    assert _plan(path)["calibrated_images"] == (6 if dynamic else 5)
    assert len([f for f in os.listdir(os.path.dirname(path)) if f.startswith("calib-")]) == 1


def test_trt10_int8_uses_the_qdq_model_and_no_calibrator(env):
    use, bundle, _ = env
    use("10.3.0")
    with pytest.raises(DeviceError, match="model.int8.onnx"):
        eng.get_engine(load_bundle(bundle), get_profile("orin-nano"), "int8", log=lambda s: None)
    shutil.copy(os.path.join(bundle, "model.onnx"), os.path.join(bundle, "model.int8.onnx"))
    path = os.path.join(bundle, "manifest.json")
    with open(path) as f:
        raw = json.load(f)
    raw["extra_files"]["int8_model"] = "model.int8.onnx"
    with open(path, "w") as f:
        json.dump(raw, f)
    t = use("10.3.0")
    plan_path, prec = eng.get_engine(load_bundle(bundle), get_profile("orin-nano"), "int8", log=lambda s: None)
    assert prec == "int8" and _plan(plan_path)["calibrated_images"] is None
    assert ("flag", "INT8") in t._fake.calls and not [c for c in t._fake.calls if c[0] == "set" and
                                                      c[1] == "int8_calibrator"]


@pytest.mark.parametrize("version", CALIBRATOR_VERSIONS)
def test_calibration_cache_is_reused_and_kept_alive(env, version, calib_data):
    """8.0.1 reads the bytes read_calibration_cache returns after dropping its own reference."""
    _calibrate(env, version, calib_data)
    t, path, _ = _calibrate(env, version, calib_data, force=True)
    assert t._fake.images_seen == [] and _plan(path)["calibrated_images"] == 0


@pytest.mark.parametrize("version", CALIBRATOR_VERSIONS)
def test_a_bad_calibration_batch_is_reported_after_the_build_and_nothing_cached(env, version, calib_data):
    """A changed batch file (sha256 differs from the calib manifest) raises BundleError inside get_batch: on
    8.0/8.2 that must not reach TensorRT (abort), from 8.4 TensorRT would end calibration early and build."""
    from calib.build import build_calib
    use, bundle, _ = env
    build_calib(calib_data, bundle, n=5, batch_size=2)
    bad = os.path.join(bundle, "calib", "batch_00001.npy")
    np.save(bad, np.zeros((2, 3, 96, 96), np.float32))
    try:
        with pytest.raises(BundleError, match="batch_00001.npy: sha256 differs"):
            _calibrate(env, version, calib_data)
    except (FakeAbort, UseAfterFree) as exc:  # BaseException: pytest.raises would not catch it
        pytest.fail("TensorRT {} process died: {}".format(version, exc))
    engines = os.path.join(bundle, "engines")
    assert not [f for f in os.listdir(engines) if f.endswith(".engine")]


@pytest.mark.parametrize("version", VERSIONS)
def test_dla_engine_is_deserialized_on_its_core(env, version):
    use, bundle, _ = env
    profile, cc = _profile(version, dla=True)
    use(version, cc)
    det = load_detector(bundle, backend="tensorrt", device=profile.name, precision="fp16", dla_core=1)
    assert ("set", "DLA_core", 1) in sys.modules["tensorrt"]._fake.calls
    assert det.backend.engine._s["dla_core_run"] == 1 and "DLA core 1" in det.backend.description
    det.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_parser_error_names_the_node(env, version, tmp_path):
    use, _, _ = env
    t = use(version)
    onnx = tmp_path / "bad.onnx"
    onnx.write_bytes(b"graph with FakeUnsupportedOp")
    where = "/model.24/Foo" if version.startswith("10.") else "node #7"  # ParserError.node_name is 10.x only
    with pytest.raises(DeviceError, match="{}: No importer registered for op: FakeUnsupportedOp".format(where)):
        eng.build_engine(t, str(onnx), eng.plan_build(version, get_profile("host"), "fp16"), "images", [1, 3, 8, 8],
                         64, log=lambda s: None)


@pytest.mark.parametrize("version", BINDING_API)
def test_tx2_int8_request_builds_fp16(env, version):
    use, bundle, _ = env
    logs = []
    t = use(version, cc=(6, 2))
    _, prec = eng.get_engine(load_bundle(bundle), get_profile("tx2"), "int8", log=logs.append)
    assert prec == "fp16" and ("flag", "INT8") not in t._fake.calls and any("no fast INT8" in s for s in logs)


def test_profile_mismatch_message_and_board_in_the_key(env, tmp_path, monkeypatch):
    use, bundle, _ = env
    logs = []
    use("8.5.2", cc=(8, 7))
    a, _ = eng.get_engine(load_bundle(bundle), get_profile("tx2"), "fp16", log=logs.append)
    assert any("--device tx2 is sm_62 but this GPU is sm_87" in s for s in logs)
    # the same cache folder on another sm_87 board (an engines/ folder copied from an AGX Orin to an Orin Nano)
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr("jetson.profiles.DEVICE_TREE_MODEL", str(model))
    use("8.5.2", cc=(8, 7))
    b, _ = eng.get_engine(load_bundle(bundle), get_profile("tx2"), "fp16", log=logs.append)
    assert b != a and not os.path.exists(a)
    assert any("board None -> NVIDIA Jetson AGX Orin Developer Kit" in s for s in logs)


def test_the_fakes_have_exactly_their_versions_names():
    gpu = FakeCudart()
    old, new = make_trt("8.2.1", gpu), make_trt("10.3.0", gpu)
    cfg = new.Builder(new.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        cfg.max_workspace_size = 1 << 20  # removed in 10
    assert not hasattr(old.Builder(old.Logger()).create_builder_config(), "set_memory_pool_limit")
    assert hasattr(old.Builder, "build_engine") and not hasattr(new.Builder, "build_engine")
    assert hasattr(old.ICudaEngine, "num_bindings") and not hasattr(old.ICudaEngine, "num_io_tensors")
    assert not hasattr(new.ICudaEngine, "num_bindings") and not hasattr(new.IExecutionContext, "execute_async_v2")
    both = make_trt("8.5.2", gpu)
    assert hasattr(both.ICudaEngine, "num_bindings") and hasattr(both.ICudaEngine, "get_tensor_profile_shape")
    assert hasattr(new.ParserError, "node_name") and not hasattr(make_trt("8.6.1", gpu).ParserError, "node_name")
    assert not hasattr(old, "TensorIOMode") and not hasattr(old, "MemoryPoolType")
    with pytest.raises(NotImplementedError):
        old.Builder(old.Logger()).build_engine(None, None)
