"""`compress --nproc-per-node 2`: the whole pipeline under a real torchrun with 2 gloo processes on CPU, a DDP
job killed mid-training and resumed by one process, and the launcher's errors (batch split, multi-node
without an endpoint, an endpoint the other node never reaches)."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.cli import main
from edgeprune.config import make_config
from tests.quick_floors import check_learned

ROOT = Path(__file__).resolve().parents[2]


def _env(cache: Path) -> dict:
    env = dict(os.environ, EDGEPRUNE_CACHE=str(cache), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    return env


def _cmd(runs: Path, name: str, *extra: str) -> list:
    return [sys.executable, "-m", "edgeprune", "compress", "--preset", "quick", "--name", name,
            "--runs-dir", str(runs), *extra]


def _world(log_json: Path) -> int:
    return json.loads(log_json.read_text())["world_size"]


@pytest.mark.slow
def test_compress_on_two_processes_trains_every_stage_ddp_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    cmd = _cmd(runs, "ddp", "--nproc-per-node", "2", "--json")
    out = subprocess.run(cmd, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    summary = json.loads(out.stdout)            # rank 1 printed nothing on stdout
    assert set(summary["stages"]) == {"data", "dense", "sparse", "prune", "finetune", "export", "report"}
    run = runs / "ddp"
    for log in ("dense/log.json", "sparse/train/log.json", "finetune/log.json"):
        assert _world(run / log) == 2, log
    for stage in ("dense", "sparse", "finetune"):
        assert out.stderr.count(f"[compress] stage {stage}: running on 2 processes") == 1   # rank 0 logs alone
    # trained on 2 processes (each its own half of every batch), the models still learn the quick scenes
    check_learned(summary["stages"]["dense"]["metrics"], summary["stages"]["finetune"]["metrics"])
    assert summary["stages"]["finetune"]["metrics"]["params"] > 0
    assert (run / "sparse" / "ratios.json").is_file() and (run / "bundle" / "manifest.json").is_file()

    again = subprocess.run(cmd, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s["status"] for s in json.loads(again.stdout)["stages"].values()} == {"cached"}


@pytest.mark.slow
def test_a_killed_ddp_job_resumes_in_one_process(tmp_path):
    runs, env = tmp_path / "runs", _env(tmp_path / "cache")
    common = ("--until", "dense", "--set", "train.epochs=3")
    proc = subprocess.Popen(_cmd(runs, "k", "--nproc-per-node", "2", *common), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = runs / "k" / "dense" / "log.json"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if log.is_file() and len(json.loads(log.read_text())["history"]) >= 1:
                break
            time.sleep(0.05)
    finally:
        # what a scheduler's preemption does: SIGTERM to the job; torchrun passes it on to both workers
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    time.sleep(3)                               # a surviving worker would go on writing
    history = json.loads(log.read_text())["history"]
    assert len(history) == 1, "the DDP job went on after it was stopped"
    assert _world(log) == 2 and not (runs / "k" / "stages" / "dense.done").exists()

    one = subprocess.run(_cmd(runs, "k", *common), env=env, capture_output=True, text=True, timeout=900)
    said = one.stdout + one.stderr
    assert one.returncode == 0, said[-3000:]
    assert "resuming from" in said and "after epoch 1/3" in said, said[-3000:]
    final = json.loads(log.read_text())
    assert _world(log) == 1 and len(final["history"]) == 3
    assert final["history"][0] == history[0]    # epoch 1 is the DDP job's, kept
    assert (runs / "k" / "stages" / "dense.done").is_file()


def test_world_size_that_does_not_split_the_batch_is_refused_before_launch(tmp_path, capsys):
    # quick preset: train.batch 8 -> 3 processes cannot split it; nothing is launched
    assert main(["compress", "--preset", "quick", "--runs-dir", str(tmp_path), "--nproc-per-node", "3"]) == 1
    err = capsys.readouterr().err
    assert "train.batch" in err and "world size 3" in err
    assert not (tmp_path / "quick").exists()


def test_nproc_per_node_takes_a_count_or_auto(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--preset", "quick", "--runs-dir", str(tmp_path), "--nproc-per-node", "two"])
    assert exc.value.code == 2 and "'two' is not a whole number or 'auto'" in capsys.readouterr().err
    from edgeprune.pipeline import resolve_nproc
    from edgeprune.pipeline_cli import _procs

    cfg = make_config("quick")               # batch 8: auto never splits it below 8 images a process
    assert resolve_nproc(argparse.Namespace(nproc_per_node=_procs("auto")), cfg) == 1
    assert resolve_nproc(argparse.Namespace(nproc_per_node=_procs("3")), cfg) == 3


def test_multi_node_needs_a_rendezvous_endpoint(tmp_path, capsys):
    assert main(["compress", "--preset", "quick", "--runs-dir", str(tmp_path), "--nnodes", "2"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_a_node_whose_peers_never_come_is_an_error_within_the_timeout(tmp_path):
    """--nnodes 2 but only this node starts: torchrun gives up after train.dist_timeout_s, and compress says
    which endpoint it waited on, instead of hanging."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    out = subprocess.run(_cmd(tmp_path / "runs", "lone", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}",
                              "--set", "train.dist_timeout_s=3"),
                         env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert f"127.0.0.1:{port}" in out.stderr and "dist_timeout_s" in out.stderr
    assert time.time() - t0 < 120
