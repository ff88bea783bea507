"""report.md from done-markers (no training): stage times, the dense-vs-pruned comparison, summary.png."""
import sys
from pathlib import Path

import pytest

from edgeprune.config import make_config
from edgeprune.rundir import RunDir
from edgeprune.report import write_report

METRICS = {"dense": (1_772_035, 1.1e9, 0.61), "sparse": (1_772_035, 1.1e9, 0.60), "prune": (145_155, 0.2e9, 0.3),
           "finetune": (145_155, 0.2e9, 0.58)}


def _finished_run(root: Path, bench: dict | None) -> RunDir:
    run = RunDir(root, make_config("quick"), log=lambda msg: None)
    run.finish("data", {"dataset": "/cache/synth", "names": ["plane"], "train_images": 48, "val_images": 16,
                        "skipped": 0}, 0.4)
    for k, (stage, (params, flops, map50)) in enumerate(METRICS.items()):
        run.finish(stage, {"metrics": {"params": params, "flops": flops, "map50": map50, "map": map50 / 2,
                                       "ap_small": 0.1, "cpu_latency_ms": 5.0}, "threads": 2}, 10.0 * (k + 1))
    export = {"bundle": f"{root}/bundle", "verify": {"status": "passed"}, "parity": {"max_abs_diff": 1e-5}}
    if bench:
        export.update(dense_bundle=f"{root}/bundle_dense", bench=bench)
    run.finish("export", export, 3.25)
    return run


def test_report_has_stage_times_comparison_and_labelled_plot(tmp_path):
    bench = {"backend": "onnxruntime", "threads": 1, "iterations": 30,
             "latency_ms": {"dense": {"end_to_end": 14.5, "infer": 12.0}, "pruned": {"end_to_end": 10.0, "infer": 7.5}},
             "speedup_end_to_end": 1.45, "speedup_infer": 1.6,
             "summary": ["end to end: pruned is 1.45x faster than dense (mean 10.00 vs 14.50 ms, median 10.00 vs "
                         "14.50 ms)"]}
    text = write_report(_finished_run(tmp_path, bench)).read_text()
    assert "samples skipped" not in text                 # nothing was skipped, so nothing is said
    times = text.split("## Stage times", 1)[1]
    assert "| dense | 10.0 | 2 |" in times and "| finetune | 40.0 | 2 |" in times and "| export | 3.2 |  |" in times
    assert "| total | 103.7 |" in times                   # 0.4 + 10 + 20 + 30 + 40 + 3.25
    cmp = text.split("### Dense vs pruned", 1)[1]
    assert "| dense | 14.50 | 12.00 |" in cmp and "| pruned | 10.00 | 7.50 |" in cmp
    assert "pruned is 1.45x faster than dense" in cmp
    assert f"edgeprune bench {tmp_path}/bundle --compare {tmp_path}/bundle_dense" in cmp
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_report_of_an_older_run_without_dense_bundle(tmp_path):
    text = write_report(_finished_run(tmp_path, None)).read_text()
    assert "## Deploy bundle" in text and "Dense vs pruned" not in text and "## Stage times" in text


def test_compare_bundles_measures_both(tmp_path):
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "device"))
    from device_helpers import make_bundle

    from edgeprune.stages import compare_bundles

    bundle, _ = make_bundle(str(tmp_path / "b"), imgsz=64)    # one bundle twice: the plumbing, not a speed-up
    rep = compare_bundles(Path(bundle), Path(bundle), iterations=3)
    assert set(rep["latency_ms"]) == {"dense", "pruned"}
    assert rep["speedup_end_to_end"] == pytest.approx(
        rep["latency_ms"]["dense"]["end_to_end"] / rep["latency_ms"]["pruned"]["end_to_end"], rel=1e-3)
    assert rep["summary"][0].startswith("end to end: pruned is ")


def test_data_stage_links_the_dataset_it_used(tmp_path):
    from edgeprune.stages import _link_dataset

    folder, coco = tmp_path / "cache" / "synth-abc", tmp_path / "instances.json"
    folder.mkdir(parents=True)
    coco.write_text("{}")
    (tmp_path / "run").mkdir()
    link = _link_dataset(tmp_path / "run", folder)
    assert link == str(tmp_path / "run" / "dataset") and Path(link).resolve() == folder.resolve()
    assert _link_dataset(tmp_path / "run", folder) == link                 # a rerun replaces the link
    json_link = _link_dataset(tmp_path / "run", coco)                      # a file keeps its suffix (format detection)
    assert json_link.endswith("dataset.json") and Path(json_link).read_text() == "{}"
