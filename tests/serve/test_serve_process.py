"""`edgeprune serve` as a real process: lifecycle events, graceful drain on SIGTERM/SIGINT, exit codes."""
import json
import signal
import socket
import time

import pytest

from serve_helpers import call, encoded, event, spawn_serve

pytestmark = [pytest.mark.py36, pytest.mark.timeout(120)]


def _refused(address):
    try:
        socket.create_connection(address, timeout=1).close()
        return False
    except OSError:
        return True


def test_sigterm_drains_the_in_flight_request_and_exits_0(served):
    proc, address = served()
    body = encoded(4)
    sock = socket.create_connection(address, timeout=30)
    try:
        head = "POST /v1/detect?conf=0.2 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n".format(len(body))
        sock.sendall(head.encode("ascii") + body[:100])  # in flight: the server is reading the body
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _refused(address):  # the listener closes at once; the open request carries on
            assert time.monotonic() < deadline, "the server kept accepting after SIGTERM"
            time.sleep(0.05)
        sock.sendall(body[100:])
        import http.client
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        assert resp.status == 200
        assert "detections" in json.loads(resp.read().decode("utf-8"))
    finally:
        sock.close()
    assert proc.wait(30) == 0
    stopped = event(proc, "stopped")
    assert stopped["drained"] is True and stopped["requests"] >= 1


def test_sigint_exits_0(served):
    proc, address = served()
    assert call(address, "GET", "/readyz").status == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def test_missing_bundle_exits_1_naming_it(tmp_path):
    proc = spawn_serve([str(tmp_path / "nope"), "--port", "0"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "nope" in err and "Traceback" not in err


def test_bad_flag_exits_2(serve_bundle):
    proc = spawn_serve([serve_bundle, "--port", "0", "--max-queue", "0"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--max-queue" in err
