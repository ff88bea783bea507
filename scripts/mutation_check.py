#!/usr/bin/env python
"""Break the code on purpose and show that the tests notice (issue 25).

Each mutation replaces one exact piece of source text in a *copy* of the tree (under a temporary folder,
never in place), runs the tests that should catch it there, and counts it caught when at least one of them
fails. A mutation whose text is no longer in the source is reported as `stale` (update MUTATIONS), not
skipped silently. `--baseline` first runs the same tests on an unmutated copy: they must pass, or a
"caught" below would mean nothing.

Example:
    python scripts/mutation_check.py --baseline --json /tmp/mutations.json
    python scripts/mutation_check.py --only resume-epoch-off-by-one
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name, file, exact text, replacement, tests that must catch it (pytest node ids; slow ones are run too)
MUTATIONS = [
    {"name": "optimizer-step-skipped",
     "why": "the trainer computes gradients but never updates the weights",
     "file": "edgeprune/train/trainer.py",
     "find": "                self.scaler.step(self.optimizer)\n",
     "replace": "                pass  # mutation: no optimizer step\n",
     "tests": ["tests/train/test_trainer.py::test_loss_falls_on_four_images",
               "tests/train/test_train_cli.py::test_train_then_eval_json"]},
    {"name": "resume-epoch-off-by-one",
     "why": "a resumed run starts one epoch later than the checkpoint says",
     "file": "edgeprune/train/trainer.py",
     "find": 'self.epoch, self.step = int(st["epoch"]), int(st["step"])',
     "replace": 'self.epoch, self.step = int(st["epoch"]) + 1, int(st["step"])',
     "tests": ["tests/train/test_trainer.py::test_resume_matches_uninterrupted_run"]},
    {"name": "ort-parity-tolerance-loosened",
     "why": "export's ONNX Runtime vs torch check accepts any difference",
     "file": "edgeprune/export/parity.py",
     "find": "atol: float = 1e-3, map_tol: float = 0.001, min_match: float = 0.99,",
     "replace": "atol: float = 1e9, map_tol: float = 1.0, min_match: float = 0.0,",
     "tests": ["tests/export/test_parity.py"]},
    {"name": "prune-beta-fold-skipped",
     "why": "pruning drops removed channels' constant act(beta) instead of folding it into the consumers",
     "file": "edgeprune/prune/apply.py",
     "find": "    if fold:\n        _fold(model, plan, x)\n",
     "replace": "    if fold:\n        pass  # mutation: no folding\n",
     "tests": ["tests/prune/test_exact.py"]},
]

IGNORE = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis",
                                "*.egg-info", "build", "dist")


def _copy_tree(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    return dest


def _run_tests(tree: Path, tests: list[str], timeout: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               MKL_NUM_THREADS=os.environ.get("MKL_NUM_THREADS", "1"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--no-header", "-rN", *tests]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "summary": f"timed out after {timeout} s", "seconds": round(time.time() - t0, 1)}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return {"rc": proc.returncode, "summary": lines[-1] if lines else proc.stderr[-300:],
            "seconds": round(time.time() - t0, 1)}


def check(mutation: dict | None, tests: list[str], timeout: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgeprune-mutation-") as tmp:
        tree = _copy_tree(Path(tmp) / "tree")
        if mutation is not None:
            path = tree / mutation["file"]
            src = path.read_text()
            n = src.count(mutation["find"])
            if n != 1:
                return {"status": "stale", "summary": f"text found {n} times in {mutation['file']}"}
            path.write_text(src.replace(mutation["find"], mutation["replace"]))
        res = _run_tests(tree, tests, timeout)
    if mutation is None:
        res["status"] = "passes" if res["rc"] == 0 else "BROKEN"
    else:     # rc 1: a test failed; 0: all passed; anything else (2-5, None) says nothing about the mutation
        res["status"] = {0: "NOT CAUGHT", 1: "caught"}.get(res["rc"], "error")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Example:")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="run only this mutation (repeatable)")
    ap.add_argument("--baseline", action="store_true", help="first check the tests pass on an unmutated copy")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per pytest run (default 900)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m["name"] in args.only]
    if not chosen:
        ap.error(f"--only: no such mutation; known: {[m['name'] for m in MUTATIONS]}")
    rows = []
    if args.baseline:
        tests = [t for m in chosen for t in m["tests"]]
        res = check(None, list(dict.fromkeys(tests)), args.timeout)
        rows.append({"name": "(baseline, unmutated)", "file": "-", **res})
        print(f"baseline: {res['status']} ({res['summary']}, {res['seconds']} s)", flush=True)
    for m in chosen:
        res = check(m, m["tests"], args.timeout)
        rows.append({"name": m["name"], "file": m["file"], "why": m["why"], "tests": m["tests"], **res})
        print(f"{m['name']}: {res['status']} ({res.get('summary')}, {res.get('seconds', 0)} s)", flush=True)
    print("\n| mutation | file | result | pytest summary | s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['file']} | {r['status']} | {r.get('summary', '')} | {r.get('seconds', '')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    bad = [r for r in rows if r["status"] not in ("caught", "passes")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
