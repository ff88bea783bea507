"""End-to-end `compress --preset quick`, and the kill test: SIGKILL during the sparse stage, rerun, and the
run resumes (not restarts) and ends with the same metrics as an uninterrupted run with the same seed.

The quick preset learns its simple synthetic scenes: every test first checks the mAP50 floors of
tests/quick_floors.py, so its comparisons (resumed vs uninterrupted, ONNX Runtime vs torch) are between real
numbers, and a trainer that learns nothing fails here instead of comparing 0 with 0."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.quick_floors import check_learned

pytestmark = pytest.mark.slow


def _compress(runs: Path, name: str, cache: Path, *extra: str, wait: bool = True):
    env = dict(os.environ, EDGEPRUNE_CACHE=str(cache), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "edgeprune", "compress", "--preset", "quick", "--name", name,
           "--runs-dir", str(runs), *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)   # a loaded machine


def _final_metrics(run: Path) -> dict:
    return json.loads((run / "stages" / "finetune.done").read_text())["outputs"]["metrics"]


def _learned(run: Path) -> tuple[dict, dict]:
    """(dense, final) metrics of a finished run, after checking both learned something."""
    dense = json.loads((run / "stages" / "dense.done").read_text())["outputs"]["metrics"]
    final = _final_metrics(run)
    check_learned(dense, final)
    return dense, final


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("compress")
    out = _compress(base / "runs", "ref", base / "cache", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return base, json.loads(out.stdout)


def test_quick_compress_writes_every_artefact(reference_run):
    base, summary = reference_run
    run = base / "runs" / "ref"
    assert set(summary["stages"]) == {"data", "dense", "sparse", "prune", "finetune", "export", "report"}
    for rel in ("config.yaml", "report.md", "bundle/manifest.json", "bundle/model.onnx", "prune/arch.json",
                "prune/recombination.json", "sparse/ratios.json"):
        assert (run / rel).is_file(), rel
    dense, final = _learned(run)
    assert final["params"] < dense["params"] and final["flops"] < dense["flops"]
    # rerunning the finished command does nothing but report the cached stages
    again = _compress(base / "runs", "ref", base / "cache")
    assert again.returncode == 0
    assert again.stdout.count("already finished") == 7


def test_finetune_distill_reruns_only_the_stages_after_prune(reference_run):
    base, _ = reference_run
    runs = base / "runs"
    shutil.copytree(runs / "ref", runs / "distill")
    out = _compress(runs, "distill", base / "cache", "--set", "finetune.distill=true")
    assert out.returncode == 0, out.stdout + out.stderr
    for stage in ("dense", "sparse", "prune"):
        assert f"stage {stage}: already finished" in out.stdout
    assert "stage finetune: already finished" not in out.stdout
    history = json.loads((runs / "distill" / "finetune" / "log.json").read_text())["history"]
    assert history and all(row["att"] > 0 for row in history)      # the attention loss against the dense model


def test_kill_during_sparse_then_resume(reference_run):
    base, _ = reference_run
    runs = base / "runs"
    _learned(runs / "ref")
    # the reference's finished dense stage, everything after it undone: the run below starts at sparse
    shutil.copytree(runs / "ref", runs / "killed")
    for stage in ("sparse", "prune", "finetune", "export", "report"):
        (runs / "killed" / "stages" / f"{stage}.done").unlink()
    for folder in ("sparse", "prune", "finetune", "bundle"):
        shutil.rmtree(runs / "killed" / folder)
    proc = _compress(runs, "killed", base / "cache", wait=False)
    sparse_ckpt = runs / "killed" / "sparse" / "train" / "last.pt"
    deadline = time.time() + 600
    while not sparse_ckpt.exists():  # the sparse stage has finished at least one epoch
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "sparse stage never checkpointed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (runs / "killed" / "stages" / "sparse.done").exists()
    out = _compress(runs, "killed", base / "cache")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stage dense: already finished" in out.stdout
    assert "resum" in out.stdout.split("stage sparse: running", 1)[1].lower()
    ref, resumed = _final_metrics(runs / "ref"), _learned(runs / "killed")[1]
    # Same seed, deterministic CPU kernels, per-epoch RNG state in the checkpoint: identical up to float noise.
    for key in ("map50", "map", "params", "flops"):
        assert resumed[key] == pytest.approx(ref[key], abs=1e-6), key


def test_bundle_map_through_onnxruntime_equals_torch(reference_run):
    base, summary = reference_run
    run = base / "runs" / "ref"
    dataset = summary["stages"]["data"]["dataset"]
    torch_metrics = _learned(run)[1]
    out = subprocess.run([sys.executable, "-m", "edgeprune", "eval", str(run / "bundle"), "--data", dataset, "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ort = json.loads(out.stdout)
    assert abs(ort["map50"] - torch_metrics["map50"]) <= 0.001 and abs(ort["map"] - torch_metrics["map"]) <= 0.001


def test_help_examples_name_paths_the_run_made(reference_run):
    """Every path an `--help` example reads exists after the run (runs/default/ = this run) or is written by
    another example; and what the dense-vs-pruned comparison needs is there."""
    from tests.test_help_examples import missing_paths

    base, summary = reference_run
    default = base / "runs" / "default"
    if not default.exists():
        default.symlink_to(base / "runs" / "ref", target_is_directory=True)
    assert missing_paths(base) == []
    export = summary["stages"]["export"]
    assert (base / "runs" / "ref" / "bundle_dense" / "manifest.json").is_file()
    assert export["bench"]["summary"][0].startswith("end to end: pruned is ")
    report = (base / "runs" / "ref" / "report.md").read_text()
    assert "## Stage times" in report and "### Dense vs pruned" in report
