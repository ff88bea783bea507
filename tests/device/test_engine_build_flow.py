"""get_engine/build_engine call sequence against a stand-in `tensorrt` module (TensorRT cannot run here; the
real-TensorRT test is test_tensorrt.py). The stand-in records the builder calls and, like TensorRT, drains
the INT8 calibrator during the build, so cache, version dispatch and calibrator plumbing run for real."""
import os
import shutil
import sys
import types

import pytest

from edgeprune.errors import DeviceError
from jetson import engine as eng
from jetson.bundle import load_bundle
from jetson.profiles import get_profile

pytestmark = pytest.mark.py36


def fake_trt(version, calls, parse_ok=True):
    t = types.ModuleType("tensorrt")
    t.__version__ = version
    E = types.SimpleNamespace
    t.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, lvl=None: None})
    t.NetworkDefinitionCreationFlag = E(EXPLICIT_BATCH=0)
    t.BuilderFlag = E(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK")
    t.MemoryPoolType = E(WORKSPACE="WORKSPACE")
    t.DeviceType = E(DLA="DLA")

    class Base(object):
        def __init__(self):
            pass
    t.IInt8EntropyCalibrator2 = Base
    t.IInt8MinMaxCalibrator = Base

    class Config(object):
        int8_calibrator = None

        def set_flag(self, f):
            calls.append(("flag", f))

        def set_memory_pool_limit(self, pool, n):
            calls.append(("memory_pool", n))

        def __setattr__(self, k, v):
            calls.append(("set", k, v))
            object.__setattr__(self, k, v)

        def create_timing_cache(self, blob):
            calls.append(("timing_cache_in", len(blob)))
            return E(serialize=lambda: b"timing")

        def set_timing_cache(self, cache, ignore):
            self._tc = cache

        def get_timing_cache(self):
            return self._tc

        def add_optimization_profile(self, p):
            calls.append(("profile",))

    class Builder(object):
        platform_has_fast_fp16 = True
        platform_has_fast_int8 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network_flags", flags))
            return E()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            cal = config.int8_calibrator
            if cal is not None:  # TensorRT pulls batches until None, then writes the cache
                n = 0
                while cal.get_batch(["images"]) is not None:
                    n += 1
                cal.write_calibration_cache(b"calibration-table")
                calls.append(("calibrated_batches", n))
            calls.append(("build",))
            return b"PLAN-" + version.encode()
    t.Builder = Builder

    class Err(object):
        def node(self):
            return 7

        def desc(self):
            return "Unsupported op Foo"

    class Parser(object):
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse(self, blob):
            return parse_ok

        def get_error(self, i):
            return Err()
    t.OnnxParser = Parser
    return t


class Mem(object):
    name = "fake"

    def __init__(self, cc=(6, 2)):
        self.cc = cc

    def compute_capability(self):
        return self.cc

    def alloc(self, n):
        return 1

    def htod(self, ptr, host):
        pass

    def sync(self):
        pass

    def close(self):
        pass


@pytest.fixture
def setup(monkeypatch, bundle_copy):
    calls = []

    def use(version, cc=(6, 2), parse_ok=True):
        del calls[:]
        monkeypatch.setitem(sys.modules, "tensorrt", fake_trt(version, calls, parse_ok))
        monkeypatch.setattr("jetson.backends.cudamem.open_memory", lambda: Mem(cc))
        return calls
    return use, load_bundle(bundle_copy)


def test_fp16_build_then_cache_hit_then_stale_rebuild(setup):
    use, m = setup
    logs = []
    calls = use("8.0.1.6")
    path, prec = eng.get_engine(m, get_profile("tx2"), "fp16", log=logs.append)
    assert prec == "fp16" and ("flag", "FP16") in calls and ("set", "max_workspace_size", 1024 << 20) in calls
    assert ("network_flags", 1) in calls  # explicit batch on 8.x
    with open(path, "rb") as f:
        assert f.read() == b"PLAN-8.0.1.6"
    calls = use("8.0.1.6")
    assert eng.get_engine(m, get_profile("tx2"), "fp16", log=logs.append)[0] == path and ("build",) not in calls
    calls = use("8.2.1.8")  # JetPack upgrade: the 8.0 engine must not be loaded
    new, _ = eng.get_engine(m, get_profile("tx2"), "fp16", log=logs.append)
    assert new != path and not os.path.exists(path) and ("build",) in calls
    assert any("trt_version 8.0.1.6 -> 8.2.1.8" in msg for msg in logs)
    calls = use("10.3.0", cc=(8, 7))
    eng.get_engine(m, get_profile("orin-nano"), "fp16", log=logs.append)
    assert ("memory_pool", 1024 << 20) in calls and ("network_flags", 0) in calls


def test_tx2_int8_request_builds_fp16(setup):
    use, m = setup
    logs = []
    calls = use("8.2.1.8")
    _, prec = eng.get_engine(m, get_profile("tx2"), "int8", log=logs.append)
    assert prec == "fp16" and ("flag", "INT8") not in calls and any("no fast INT8" in s for s in logs)


def test_int8_calibrator_drains_calib_batches(setup, tmp_path):
    use, m = setup
    Image = pytest.importorskip("PIL.Image")
    import numpy as np
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        Image.fromarray(np.full((20, 30, 3), i * 40, np.uint8)).save(str(data / "{}.png".format(i)))
        (data / "{}.txt".format(i)).write_text("{} 0.5 0.5 0.2 0.2\n".format(i % 3))
    from calib.build import build_calib
    build_calib(str(data), m["_root"], n=5, batch_size=2)
    m = load_bundle(m["_root"])
    calls = use("8.2.1.8", cc=(7, 2))
    path, prec = eng.get_engine(m, get_profile("xavier-nx"), "int8", log=lambda s: None)
    assert prec == "int8" and ("flag", "INT8") in calls and ("calibrated_batches", 3) in calls
    caches = [f for f in os.listdir(os.path.dirname(path)) if f.startswith("calib-")]
    assert len(caches) == 1
    # TRT 10.3: calibrators are deprecated -> needs the QDQ model
    use("10.3.0", cc=(8, 7))
    with pytest.raises(DeviceError, match="model.int8.onnx"):
        eng.get_engine(m, get_profile("orin-nano"), "int8", log=lambda s: None)


def test_parser_error_names_the_node(setup):
    use, m = setup
    use("8.2.1.8", parse_ok=False)
    with pytest.raises(DeviceError, match="node #7: Unsupported op Foo"):
        eng.get_engine(m, get_profile("tx2"), "fp16", log=lambda s: None)


def test_dla_and_profile_mismatch_message(setup):
    use, m = setup
    logs = []
    calls = use("8.5.2", cc=(8, 7))
    eng.get_engine(m, get_profile("orin-agx"), "fp16", dla_core=1, log=logs.append)
    assert ("set", "DLA_core", 1) in calls and ("flag", "GPU_FALLBACK") in calls
    use("8.5.2", cc=(8, 7))
    eng.get_engine(m, get_profile("tx2"), "fp16", log=logs.append)
    assert any("--device tx2 is sm_62 but this GPU is sm_87" in s for s in logs)
