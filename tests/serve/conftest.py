"""Fixtures for the serve tests: a real tiny bundle and real servers on ephemeral ports.

The bundle is exported with torch by the device tests' factory, or taken from EDGEPRUNE_TEST_BUNDLE so
the Python 3.6 venv (no torch) runs the same tests against a bundle the host venv made.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "device"))


@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory):
    given = os.environ.get("EDGEPRUNE_TEST_BUNDLE")
    if given:
        return given
    pytest.importorskip("torch")
    from device_helpers import make_bundle
    root, _ = make_bundle(str(tmp_path_factory.mktemp("serve") / "bundle"))
    return root


@pytest.fixture(scope="session")
def dynamic_bundle(tmp_path_factory):
    """The same kind of tiny detector exported with a symbolic batch (manifest input_shape[0] = -1), so
    micro-batches run as one backend call. EDGEPRUNE_TEST_DYNAMIC_BUNDLE for the 3.6 venv."""
    given = os.environ.get("EDGEPRUNE_TEST_DYNAMIC_BUNDLE")
    if given:
        return given
    pytest.importorskip("torch")
    from serve_helpers import export_dynamic_bundle
    return export_dynamic_bundle(str(tmp_path_factory.mktemp("serve") / "dynamic"))


@pytest.fixture(scope="session")
def reference_detector(serve_bundle):
    """The runtime's own detector on the same bundle: the answers the server must reproduce."""
    from jetson.runtime import load_detector
    det = load_detector(serve_bundle, backend="onnxruntime")
    yield det
    det.close()


@pytest.fixture
def start_server(serve_bundle):
    """`start_server(**ServeOptions kwargs)` -> a started, loaded DetectionServer (in this process,
    port 0); every server is stopped (drained) at teardown."""
    from jetson.serve import DetectionServer
    from jetson.serve_options import ServeOptions
    servers = []

    def start(**kwargs):
        kwargs.setdefault("port", 0)
        kwargs.setdefault("backend", "onnxruntime")
        server = DetectionServer(ServeOptions(serve_bundle, **kwargs)).start()
        servers.append(server)
        assert server.wait_until_loaded(60), "the detector did not load within 60 s"
        return server

    yield start
    for server in servers:
        server.stop(drain_timeout=5)


@pytest.fixture(scope="session")
def server(serve_bundle):
    """One shared default server for the read-only tests."""
    from jetson.serve import DetectionServer
    from jetson.serve_options import ServeOptions
    srv = DetectionServer(ServeOptions(serve_bundle, port=0, backend="onnxruntime", max_batch=4)).start()
    assert srv.wait_until_loaded(60)
    yield srv
    srv.stop(drain_timeout=5)


@pytest.fixture
def served(serve_bundle):
    """`served(*extra_flags)` -> (Popen, (host, port)): `edgeprune serve` as a real process, ready; killed at
    teardown if still running."""
    from serve_helpers import event, spawn_serve
    procs = []

    def start(*extra):
        proc = spawn_serve([serve_bundle, "--port", "0", "--backend", "onnxruntime", "--json"] + list(extra))
        procs.append(proc)
        listening = event(proc, "listening")
        ready = event(proc, "ready")
        assert ready["url"] == listening["url"] and ready["backend"] == "onnxruntime"
        return proc, (listening["host"], listening["port"])

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
