"""The load benchmark itself: bounded, stops by itself, writes its JSON, and the server survives it."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.py36, pytest.mark.slow, pytest.mark.timeout(180)]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serve_load_short_run(serve_bundle, tmp_path):
    out = tmp_path / "load.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "serve_load.py"), serve_bundle, "--clients", "3",
           "--duration", "2", "--warmup", "0.5", "--out", str(out)]
    png = tmp_path / "load.png"
    if importlib.util.find_spec("matplotlib") is not None:  # host venv; the device venv has no matplotlib
        cmd += ["--plot", str(png)]
    cmd += ["--", "--max-queue", "1", "--backend", "onnxruntime"]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["requests"] > 0 and report["status_counts"].get("200", 0) > 0
    assert set(report["status_counts"]) <= {"200", "503"}  # 3 clients on a 1-slot queue: some 503s allowed
    assert report["other_than_200_503"] == 0
    assert report["latency_ms_200"]["p50"] <= report["latency_ms_200"]["p99"]
    assert report["server"]["exit_code"] == 0
    assert report["server"]["rss_kb_start"] > 0 and report["server"]["rss_kb_end"] > 0
    if "--plot" in cmd:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
