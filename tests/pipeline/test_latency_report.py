"""prune.latency_table: the compress stages predict each model's latency from a table and the report shows it
beside the measured CPU latency; a table for another input or architecture is a ConfigError naming the key."""
import json
from pathlib import Path

import pytest
import torch

from edgeprune.config import ConfigError, make_config
from edgeprune.fsio import atomic_write_json
from edgeprune.models.spec import new_spec
from edgeprune.models.yolo import build_model
from edgeprune.rundir import RunDir
from edgeprune.prune.latency import measure_table_torch, predict_model
from edgeprune.report import _latency_note, _metrics_table
from edgeprune.stages import latency_table, predicted_latency


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(new_spec(2, ["a", "b"], size="n")).eval()
    table = measure_table_torch(model, 64, device="cpu", precision="fp32", min_channels=256, iterations=1, warmup=0)
    path = tmp_path_factory.mktemp("lt") / "latency_table.json"
    atomic_write_json(path, table)
    return str(path), model, table


def test_predicted_latency_from_the_configured_table(table_file):
    path, model, table = table_file
    cfg = make_config("quick", {"model": {"imgsz": 64}, "prune": {"latency_table": path}})
    assert predicted_latency(model, cfg) == pytest.approx(predict_model(table, model, 64)["total_ms"])
    assert predicted_latency(model, make_config("quick", {"model": {"imgsz": 64}})) is None
    with pytest.raises(ConfigError, match=r"prune.latency_table .*another input"):
        latency_table(make_config("quick", {"model": {"imgsz": 128}, "prune": {"latency_table": path}}))
    with pytest.raises(ConfigError, match="prune.latency_table: .*cannot read"):
        latency_table(make_config("quick", {"model": {"imgsz": 64}, "prune": {"latency_table": path + ".x"}}))
    wider = build_model(new_spec(2, ["a", "b"], size="s")).eval()
    with pytest.raises(ConfigError, match="wider than the table"):
        predicted_latency(wider, cfg)


def test_report_shows_the_prediction_beside_the_measurement(table_file, tmp_path: Path):
    path, _, _ = table_file
    run = RunDir(tmp_path, make_config("quick", {"model": {"imgsz": 64}, "prune": {"latency_table": path}}))
    base = {"params": 10, "flops": 2e9, "map50": 0.5, "map": 0.3, "ap_small": 0.1, "cpu_latency_ms": 12.0}
    run.finish("dense", {"metrics": dict(base, predicted_latency_ms=3.25)}, 1.0)
    run.finish("finetune", {"metrics": base}, 1.0)
    lines, _ = _metrics_table(run)
    assert lines[0].endswith("predicted on the target (ms) |")
    assert lines[2].endswith("| 12.0 | 3.25 |") and lines[3].endswith("| 12.0 | – |")
    note = " ".join(_latency_note(run))
    assert "host, torch fp32, batch 1, 64x64" in note and "--latency-table" in note
    plain = RunDir(tmp_path / "plain", make_config("quick"))
    plain.finish("dense", {"metrics": base}, 1.0)
    assert "predicted" not in _metrics_table(plain)[0][0] and _latency_note(plain) == []
    assert json.loads(run.marker_path("dense").read_text())["outputs"]["metrics"]["predicted_latency_ms"] == 3.25


def test_export_comparison_puts_the_prediction_beside_the_measured_bundles(table_file, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxsim")
    from edgeprune.export.bundle import write_bundle
    from edgeprune.export.onnx_export import export_onnx
    from edgeprune.report import _predicted_vs_measured, _target_note
    from edgeprune.stages import compare_bundles, table_for_report

    path, model, table = table_file
    exp = export_onnx(model, 64)
    root = tmp_path / "bundle"
    write_bundle(root, model.spec, exp, exp.model)
    bench = compare_bundles(root, root, iterations=2, table_path=path)
    for label in ("dense", "pruned"):
        p = bench["predicted"][label]
        assert p["ms"] == pytest.approx(table["whole_model_ms"])      # the dense architecture, predicted exactly
        assert p["measured_ms"] > 0 and "backend torch (table) != onnxruntime" in p["key_mismatch"]
    text = "\n".join(_predicted_vs_measured(bench))
    assert f"| dense | {table['whole_model_ms']:.2f} |" in text and "backend torch (table) != onnxruntime" in text
    assert _predicted_vs_measured({k: v for k, v in bench.items() if k != "predicted"}) == []
    # prune.target=latency without a configured table: the sparse stage's measured table is the report's
    run = RunDir(tmp_path / "run", make_config("quick", {"model": {"imgsz": 64}}))
    assert table_for_report(run) is None and _target_note(run) == []
    lat = {"table": path, "predicted_ms": 2.0, "predicted_share": 0.5, "dense_ms": 4.0, "budget": 0.5, "met": True,
           "alignment": 8}
    run.finish("sparse", {"latency": lat}, 1.0)
    assert table_for_report(run) == path
    assert "50.0 % of the dense model's 4.00 ms (budget 50 %, met)" in " ".join(_target_note(run))


def test_the_latency_target_keys_the_sparse_stage(tmp_path: Path):
    """prune.target=latency changes what the sparse stage's ratio solver does, so its key (and downstream);
    with the FLOPs target the latency keys leave the training stages' keys alone."""
    def keys(**prune):
        run = RunDir(tmp_path, make_config("quick", {"prune": prune}))
        return {s: run.key(s) for s in ("dense", "sparse", "prune")}

    base = keys()
    flops = keys(latency_budget=0.3)
    assert flops["dense"] == base["dense"] and flops["sparse"] == base["sparse"]
    lat = keys(target="latency")
    assert lat["dense"] == base["dense"] and lat["sparse"] != base["sparse"] and lat["prune"] != base["prune"]
    assert keys(target="latency", latency_budget=0.3)["sparse"] != lat["sparse"]
