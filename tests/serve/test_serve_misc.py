"""Load failures, readiness, CLI declaration and binding details of `edgeprune serve`."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from serve_helpers import call, encoded

from edgeprune.errors import UsageError

pytestmark = [pytest.mark.py36, pytest.mark.timeout(120)]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def broken_bundle(serve_bundle, tmp_path):
    """A bundle whose manifest and checksum are right but whose model the backend cannot load."""
    dst = str(tmp_path / "broken")
    shutil.copytree(serve_bundle, dst, ignore=shutil.ignore_patterns("engines", "calib"))
    garbage = b"this is not an ONNX model" * 10
    with open(os.path.join(dst, "model.onnx"), "wb") as f:
        f.write(garbage)
    path = os.path.join(dst, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["model"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    with open(path, "w") as f:
        json.dump(manifest, f)
    return dst


def test_model_that_fails_to_load_keeps_probes_honest(broken_bundle):
    from edgeprune.errors import EdgepruneError
    from jetson.serve import DetectionServer
    from jetson.serve_options import ServeOptions
    srv = DetectionServer(ServeOptions(broken_bundle, port=0, backend="onnxruntime")).start()
    try:
        with pytest.raises(EdgepruneError):
            srv.wait_until_loaded(60)
        assert call(srv, "GET", "/healthz").status == 200
        ready = call(srv, "GET", "/readyz")
        assert ready.status == 503 and "failed to load" in ready.json()["reason"]
        reply = call(srv, "POST", "/v1/detect", encoded(0))
        assert reply.status == 503 and reply.headers["retry-after"] == "1"
        assert call(srv, "GET", "/v1/model").status == 503
    finally:
        assert srv.stop(drain_timeout=5)


def test_cli_exits_1_when_the_model_fails_to_load(broken_bundle):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "edgeprune", "serve", broken_bundle, "--port", "0", "--backend",
                           "onnxruntime"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=90)
    assert proc.returncode == 1
    assert "edgeprune: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_module_imports_nothing_heavy():
    code = ("import sys, jetson.serve_cli; "
            "print(sorted(m for m in ('numpy', 'torch', 'jetson.serve') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, universal_newlines=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), check=True)
    assert out.stdout.strip() == "[]"


def test_help_text_mentions_example(capsys):
    import argparse

    from jetson.serve_cli import register_serve
    parser = argparse.ArgumentParser(prog="edgeprune")
    register_serve(parser.add_subparsers())
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["serve", "--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out.lower()


def test_command_line_and_keyword_defaults_are_one_table():
    """`serve BUNDLE` with no flags and `ServeOptions(BUNDLE)` are the same settings (jetson/serve_options.py)."""
    import argparse

    from jetson.serve_cli import register_serve
    from jetson.serve_options import SETTINGS, ServeOptions
    parser = argparse.ArgumentParser(prog="edgeprune")
    register_serve(parser.add_subparsers())
    assert vars(ServeOptions.from_args(parser.parse_args(["serve", "b"]))) == vars(ServeOptions("b"))
    args = parser.parse_args(["serve", "b", "--timeout", "3", "--max-body-mb", "2"])
    opts = ServeOptions.from_args(args)
    assert (opts.timeout_s, opts.max_body_bytes) == (3.0, 2 * 1024 * 1024)
    assert len(SETTINGS) == len({row[1] for row in SETTINGS})       # one flag per setting
    with pytest.raises(UsageError, match="--max-queue"):
        ServeOptions("b", max_queue=0)
    with pytest.raises(UsageError, match="unknown setting"):
        ServeOptions("b", max_qeue=4)


def test_binds_loopback_by_default_and_port_in_use_is_a_clear_error(start_server, serve_bundle):
    from edgeprune.errors import DeviceError
    from jetson.serve import DetectionServer
    from jetson.serve_options import ServeOptions
    srv = start_server()
    assert srv.address[0] == "127.0.0.1"
    with pytest.raises(DeviceError, match="cannot listen"):
        DetectionServer(ServeOptions(serve_bundle, port=srv.address[1])).start()


def test_ipv6_loopback(start_server):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    srv = start_server(host="::1")
    assert srv.url.startswith("http://[::1]:")
    assert call(srv, "GET", "/healthz").status == 200
