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
from edgeprune.pipeline import RunDir
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
