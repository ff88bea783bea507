"""Latency tables (jetson/layerprof.py, jetson/onnx_min.py, edgeprune/prune/latency.py): the one-block ONNX
writer against onnx.checker and a torch convolution, the grid, layers.json validation, the staircase prediction,
real onnxruntime profiling of an exported bundle through the CLI, and the TensorRT layer timer on the fakes."""
import json
import os
import sys

import numpy as np
import pytest

from edgeprune.errors import BundleError, DeviceError, UsageError
from jetson import layerprof as lp
from jetson.onnx_min import conv_block_model


def _layer(name="l", cin=16, cout=32, k=3, s=1, groups=1, hw=(12, 12), act="silu", prune_out=True, prune_in=True):
    return {"name": name, "cin": cin, "cout": cout, "kernel": k, "stride": s, "pad": k // 2, "groups": groups,
            "dilation": 1, "hw": list(hw), "act": act, "prune_out": prune_out, "prune_in": prune_in}


@pytest.mark.parametrize("cin,cout,k,s,groups,act", [(12, 20, 3, 2, 4, "silu"), (8, 8, 3, 1, 8, "silu"),
                                                     (16, 24, 1, 1, 1, None), (3, 16, 6, 2, 1, "silu")])
def test_one_block_onnx_is_valid_and_computes_conv_silu(cin, cout, k, s, groups, act):
    onnx = pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper
    blob = conv_block_model(2, cin, cout, (17, 15), k, stride=s, groups=groups, act=act)
    model = onnx.load_from_string(blob)
    onnx.checker.check_model(model, full_check=True)  # also infers shapes and checks the declared output
    init = dict((t.name, numpy_helper.to_array(t)) for t in model.graph.initializer)
    x = np.random.RandomState(1).rand(2, cin, 17, 15).astype(np.float32)
    y = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(init["w"].copy()),
                                     torch.from_numpy(init["b"].copy()), stride=s, padding=(k - 1) // 2, groups=groups)
    if act == "silu":
        ref = torch.nn.functional.silu(ref)
    assert y.shape == tuple(ref.shape)
    assert np.abs(y - ref.numpy()).max() < 1e-4


def test_grid_has_the_aligned_steps_an_unaligned_count_and_stays_in_bounds():
    g = lp.out_grid(256, min_channels=8)
    assert g[0] == 8 and g[-1] == 256 and g == sorted(set(g))
    for f in lp.LADDER:
        t = f * 256
        for a in (8, 16, 32):
            assert int(a * np.floor(t / a)) in g or int(a * np.floor(t / a)) < 8
    assert 255 in g and 127 in g  # one below an aligned step: the staircase an unaligned width falls off
    assert lp.out_grid(20, min_channels=8) == [8, 15, 16, 20]
    assert lp.out_grid(4, min_channels=8) == [4]  # a layer narrower than min_channels is timed as it is
    assert lp.in_grid(100, 8) == [8, 23, 24, 31, 32, 47, 48, 55, 56, 71, 72, 79, 80, 95, 96, 100]


def test_layer_points_by_kind():
    pts = lp.layer_points(_layer(cin=64, cout=64), 8)
    assert {a for a, _, _ in pts} == {"out", "in"}
    assert all(ci == 64 for a, ci, _ in pts if a == "out") and all(co == 64 for a, _, co in pts if a == "in")
    head = lp.layer_points(_layer(cin=64, cout=24, act=None, prune_out=False), 8)
    assert head[0] == ("dense", 64, 24) and all(a == "in" for a, _, _ in head[1:])
    stem = lp.layer_points(_layer(cin=3, cout=32, prune_in=False), 8)
    assert all(a == "out" and ci == 3 for a, ci, _ in stem)
    dw = lp.layer_points(_layer(cin=32, cout=32, groups=32), 8)
    assert all(a == "out" and ci == co for a, ci, co in dw)
    assert lp.layer_points(_layer(cin=32, cout=32, groups=4), 8) == [("dense", 32, 32)]


def test_layers_json_errors_name_the_layer_and_key(tmp_path):
    p = tmp_path / "layers.json"
    bad = _layer(name="layers.3.conv")
    del bad["stride"]
    p.write_text(json.dumps({"version": 1, "input_shape": [1, 3, 64, 64], "layers": [_layer(), bad]}))
    with pytest.raises(BundleError, match=r"layers\[1\] \(layers.3.conv\): key 'stride'"):
        lp.read_layers(str(p))
    p.write_text(json.dumps({"version": 1, "input_shape": [1, 3, 64, 64], "layers": [_layer(cin=6, groups=4)]}))
    with pytest.raises(BundleError, match="groups"):
        lp.read_layers(str(p))
    p.write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        lp.read_layers(str(p))


def _table():
    entry = dict(_layer(cin=64, cout=64), dense_ms=4.0,
                 out_grid=[[8, 1.0], [15, 2.5], [16, 1.5], [31, 3.5], [32, 2.0], [63, 4.5], [64, 4.0]],
                 in_grid=[[8, 1.0], [32, 2.0], [64, 4.0]])
    head = dict(_layer(name="head", cin=64, cout=24, act=None, prune_out=False), dense_ms=1.0, out_grid=[],
                in_grid=[[16, 0.25], [64, 1.0]])
    return {"version": 1, "key": {"backend": "onnxruntime", "precision": "fp32", "device_profile": "host",
                                  "batch": 1, "input_size": [64, 64]},
            "rest_ms": 0.5, "layers": {"l": entry, "head": head}}


def test_staircase_prediction():
    t = _table()
    e = t["layers"]["l"]
    assert lp.layer_ms(e, 64, 64) == 4.0 and lp.layer_ms(e, 64, 31) == 3.5  # grid points are exact
    assert lp.layer_ms(e, 64, 24) == pytest.approx(1.75)      # aligned: between 16 and 32 only
    assert lp.layer_ms(e, 64, 23) == pytest.approx(3.0)       # unaligned: between 15 and 31 only
    assert lp.layer_ms(e, 32, 64) == pytest.approx(4.0 * 2.0 / 4.0)  # input side scales the output staircase
    assert lp.layer_ms(e, 64, 4) == pytest.approx(2.5 * 4 / 15)  # below the grid: proportional to its class
    dense = lp.predict(t, [{"name": "l", "cin": 64, "cout": 64}, {"name": "head", "cin": 64, "cout": 24}])
    assert dense["total_ms"] == pytest.approx(5.5)
    # the rest (0.5 ms beside 5.0 ms of blocks) scales with the blocks: 10 % on top of a pruned model's blocks too
    pruned = lp.predict(t, [{"name": "l", "cin": 64, "cout": 32}, {"name": "head", "cin": 32, "cout": 24}])
    blocks = 2.0 + 1.0 * (0.25 + 0.75 * 16 / 48)
    assert pruned["layers_ms"] == pytest.approx(blocks) and pruned["rest_ms"] == pytest.approx(0.1 * blocks)
    assert pruned["total_ms"] == pytest.approx(1.1 * blocks)
    assert lp.predict(t, [{"name": "head", "cin": 64, "cout": 24}])["total_ms"] == pytest.approx(1.1)  # "l" removed
    with pytest.raises(BundleError, match="conv other is not in the latency table"):
        lp.predict(t, [{"name": "other", "cin": 8, "cout": 8}])
    with pytest.raises(BundleError, match="wider than"):
        lp.predict(t, [{"name": "l", "cin": 64, "cout": 72}])
    assert lp.key_mismatches(t, backend="tensorrt", input_shape=[1, 3, 64, 64]) == [
        "backend onnxruntime (table) != tensorrt"]


def test_ort_timer_fills_every_grid_point():
    pytest.importorskip("onnxruntime")
    layers = {"version": 1, "input_shape": [1, 3, 32, 32],
              "layers": [_layer("a", 3, 16, hw=(32, 32), prune_in=False), _layer("b", 16, 24, hw=(16, 16))]}
    table = lp.measure_table(layers, lp.OrtLayerTimer(threads=1), "host", whole_model_ms=1.0, iterations=2,
                             warmup=1, statistic="min")
    a, b = table["layers"]["a"], table["layers"]["b"]
    assert [c for c, _ in a["out_grid"]] == lp.out_grid(16, 8) and a["in_grid"] == []
    assert [c for c, _ in b["in_grid"]] == lp.in_grid(16, 8)
    assert all(ms > 0 for _, ms in a["out_grid"] + b["out_grid"] + b["in_grid"])
    assert table["rest_ms"] == pytest.approx(1.0 - a["dense_ms"] - b["dense_ms"])
    assert table["key"]["backend"] == "onnxruntime" and "onnxruntime" in table["key"]["versions"]
    assert table["statistic"] == "min" and table["clock"] == "wall" and table["machine"]["before"]["cpus"]
    cpu = lp.measure_table(layers, lp.OrtLayerTimer(threads=1, clock="cpu"), "host", iterations=1, warmup=0,
                           only={"a"})
    assert cpu["clock"] == "cpu" and list(cpu["layers"]) == ["a"] and cpu["rest_ms"] is None
    with pytest.raises(UsageError, match="--threads 1"):
        lp.OrtLayerTimer(threads=2, clock="cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real bundle from the exporter (with layers.json) and its model."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxsim")
    from edgeprune.export.bundle import write_bundle
    from edgeprune.export.onnx_export import export_onnx
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model
    torch.manual_seed(0)
    spec = new_spec(2, ["a", "b"], size="n")
    model = build_model(spec).eval()
    exp = export_onnx(model, 64)
    root = str(tmp_path_factory.mktemp("lp") / "bundle")
    write_bundle(root, spec, exp, exp.model)
    return root, model


def test_exporter_writes_layers_json_matching_the_model(exported):
    from edgeprune.prune.latency import conv_layers
    root, model = exported
    doc = lp.read_layers(os.path.join(root, "layers.json"))
    assert json.load(open(os.path.join(root, "manifest.json")))["extra_files"]["layers"] == "layers.json"
    assert doc == conv_layers(model, 64)
    names = [l["name"] for l in doc["layers"]]
    convs = [n for n, m in model.named_modules() if type(m).__name__ == "Conv2d"]
    assert names == convs
    by = dict((l["name"], l) for l in doc["layers"])
    assert by["layers.0.conv"]["prune_in"] is False and by["layers.0.conv"]["hw"] == [64, 64]
    assert by["detect.m.0"]["prune_out"] is False and by["detect.m.0"]["act"] is None
    assert by["layers.1.conv"]["hw"] == [32, 32] and by["layers.1.conv"]["stride"] == 2


def test_profile_layers_cli_then_bench_shows_the_prediction(exported, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from edgeprune.cli import main
    root, _ = exported
    out = str(tmp_path / "table.json")
    assert main(["bench", root, "--profile-layers", "--threads", "1", "--iterations", "2", "--out", out,
                 "--statistic", "min", "--min-channels", "64"]) == 0
    assert "whole model" in capsys.readouterr().out
    table = lp.read_table(out)
    assert set(table["layers"]) == set(l["name"] for l in lp.read_layers(os.path.join(root, "layers.json"))["layers"])
    assert table["model_sha256"] == json.load(open(os.path.join(root, "manifest.json")))["model"]["sha256"]
    # the whole model is sampled before the first layer (2 iterations) and once after each layer
    assert table["whole_model_samples"] == 2 + len(table["layers"])
    assert table["rest_ms"] == pytest.approx(table["whole_model_ms"] - table["layers_dense_ms"])
    assert main(["bench", root, "--iterations", "3", "--threads", "1", "--latency-table", out, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    p = rep["models"][0]["predicted"]
    # a dense bundle is predicted exactly at its own whole-model time (rest_ms is what the blocks leave over)
    assert p["ms"] == pytest.approx(table["whole_model_ms"]) and p["statistic"] == "min"
    assert p["key_mismatch"] == [] and p["measured_ms"] == rep["models"][0]["infer"]["min"]
    # --compare: the predicted speed-up beside the measured one (the same bundle twice: predicted exactly 1.00x)
    assert main(["bench", root, "--compare", root, "--iterations", "2", "--threads", "1", "--latency-table", out]) == 0
    assert "latency table: {} predicted 1.00x faster than {}, measured".format(root, root) in capsys.readouterr().out


def test_profile_layers_without_layers_json_says_how_to_fix(tiny_bundle, capsys):
    pytest.importorskip("onnxruntime")
    from edgeprune.cli import main
    assert main(["bench", tiny_bundle, "--profile-layers", "--iterations", "1"]) == 1
    assert "layers.json" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["8.2.1", "8.6.1", "10.3.0"])
def test_trt_layer_timer_builds_each_point_with_the_real_build_code(monkeypatch, version):
    from jetson.backends.cudamem import CudartMem
    from jetson.backends.trt import open_trt_backend
    from jetson.profiles import get_profile
    from trt_fakes import FakeCudart, make_trt
    gpu = FakeCudart()
    layer = _layer("stem", 3, 24, hw=(16, 16), prune_in=False)
    t = make_trt(version, gpu, {"input": ("x", [1, 3, 16, 16]), "outputs": [("y", "FLOAT")]})
    monkeypatch.setitem(sys.modules, "tensorrt", t)
    monkeypatch.setattr("jetson.backends.cudamem.open_memory", lambda: CudartMem(rt=gpu))
    timer = lp.TrtLayerTimer(get_profile("orin-nano"), "fp16", trt=t, open_backend=open_trt_backend)
    folder = timer.folder
    table = lp.measure_table({"version": 1, "input_shape": [1, 3, 16, 16], "layers": [layer]}, timer, "orin-nano",
                             whole_model_ms=1.0, iterations=2, warmup=1)
    timer.close()
    assert not os.path.exists(folder)
    builds = [c for c in t._fake.calls if c[0] == "build"]
    assert len(builds) == len(lp.out_grid(24, 8)) and all("FP16" in flags for _, flags in builds)
    assert table["key"]["backend"] == "tensorrt" and table["key"]["precision"] == "fp16"
    assert table["key"]["versions"]["tensorrt"] == t.__version__
    assert [c for c, _ in table["layers"]["stem"]["out_grid"]] == lp.out_grid(24, 8)
    assert gpu.events_created == gpu.events_destroyed
    with pytest.raises(DeviceError, match="INT8"):
        lp.TrtLayerTimer(get_profile("orin-nano"), "int8", trt=t)


def test_torch_table_on_the_spot_predicts_a_pruned_model():
    torch = pytest.importorskip("torch")
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model
    from edgeprune.prune.apply import prune_model
    from edgeprune.prune.latency import conv_layers, measure_table_torch, predict_model
    torch.manual_seed(0)
    model = build_model(new_spec(2, ["a", "b"], size="n")).eval()
    # min_channels 128: small grids (a layer narrower than that is timed at its own width only)
    table = measure_table_torch(model, 32, device="cpu", precision="fp16", min_channels=128, iterations=1, warmup=0)
    assert table["key"]["backend"] == "torch" and table["key"]["precision"] == "fp32"  # no fp16 on a CPU
    assert table["key"]["versions"]["device"] == "cpu" and table["key"]["input_size"] == [32, 32]
    assert predict_model(table, model, 32)["total_ms"] == pytest.approx(table["whole_model_ms"])
    x = torch.zeros(1, 3, 32, 32)
    keep = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            keep[name] = [i for i in range(m.num_features) if i % 2 == 0]
    prune_model(model, keep, example_input=x)
    pred = predict_model(table, model, 32)
    assert set(pred["per_layer"]) == {l["name"] for l in conv_layers(model, 32)["layers"]}
    assert pred["rest_ms"] == pytest.approx(pred["layers_ms"] * lp.rest_share(table)) and pred["total_ms"] > 0
    if not torch.cuda.is_available():
        from edgeprune.errors import ModelError
        from edgeprune.prune.latency import TorchLayerTimer
        with pytest.raises(ModelError, match="no CUDA GPU"):
            TorchLayerTimer("cuda")
