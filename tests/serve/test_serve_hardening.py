"""What an outside probe of `edgeprune serve` broke (issue 22), against real servers on 127.0.0.1: decompression
bombs of several formats, slow and idle clients holding every connection slot, bursts of new connections.
Every client loop here is bounded in time and stops by itself."""
import http.client
import select
import socket
import threading
import time

import pytest

from image_bombs import jpeg_with_junk_after_app0, tiff_bomb
from serve_helpers import call, encoded, proc_memory_kb

pytestmark = [pytest.mark.py36, pytest.mark.timeout(120)]


def _wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _reset_peak_rss(pid):
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/{}/clear_refs".format(pid), "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def test_bombs_answer_413_without_growing_the_server(served):
    proc, address = served()
    assert call(address, "POST", "/v1/detect", encoded(0, ".jpg")).status == 200  # warm: first-call allocations
    _reset_peak_rss(proc.pid)
    before = proc_memory_kb(proc.pid)
    baseline = before["VmHWM"]  # the reset makes this the current RSS; without it, the old peak (stricter than RSS)
    bombs = [tiff_bomb(13000, 13000), jpeg_with_junk_after_app0(7000, 7000)]
    assert all(len(b) < 250 * 1000 for b in bombs)
    for bomb in bombs:
        assert call(address, "POST", "/v1/detect", bomb).status == 413
    four = tiff_bomb(8000, 8000)
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(call(address, "POST", "/v1/detect", four).status))
               for _ in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    normal = call(address, "POST", "/v1/detect", encoded(1, ".png"))
    normal_s = time.monotonic() - t0
    for t in threads:
        t.join(30)
    growth_mb = (proc_memory_kb(proc.pid)["VmHWM"] - baseline) / 1024.0
    assert growth_mb < 50, "server peak RSS grew {:.0f} MB".format(growth_mb)
    assert replies == [413] * 4 and normal.status == 200
    assert normal_s < 5.0  # was 8.8 s while four 8000x8000 TIFFs were being decoded


class _Trickler(threading.Thread):
    """Sends an endless request head one byte every `every` s until the server closes the connection or
    `limit` s pass; `closed_after` is when the server closed it (None if it never did)."""

    def __init__(self, address, every=0.1, limit=6.0):
        super(_Trickler, self).__init__(daemon=True)
        self.sock = socket.create_connection(address, timeout=5)
        self.every, self.limit, self.closed_after = every, limit, None

    def run(self):
        started = time.monotonic()
        head = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        try:
            for byte in head:
                if time.monotonic() - started > self.limit:
                    return
                self.sock.send(bytes([byte]))
                self.sock.settimeout(self.every)
                try:
                    if self.sock.recv(4096) == b"":  # FIN: the server gave up on us
                        self.closed_after = time.monotonic() - started
                        return
                except socket.timeout:
                    pass
        except OSError:  # reset after the server's close
            self.closed_after = time.monotonic() - started
        finally:
            self.sock.close()


def _health_fast_and_others_503(srv):
    for path in ("/healthz", "/readyz"):
        t0 = time.monotonic()
        reply = call(srv, "GET", path, timeout=5)
        assert reply.status == 200 and time.monotonic() - t0 < 1.0, path
    reply = call(srv, "POST", "/v1/detect", encoded(2), timeout=5)
    assert reply.status == 503 and reply.headers["retry-after"] == "1"


def test_slow_clients_cannot_hold_the_slots_past_the_head_deadline(start_server):
    srv = start_server(max_connections=4, header_timeout_s=1.5, io_timeout_s=10.0)
    slow = [_Trickler(srv.address) for _ in range(4)]
    for t in slow:
        t.start()
    assert _wait_for(lambda: srv.connection_slots._value == 0, 5)
    _health_fast_and_others_503(srv)  # every slot held: probes still answered, others told to retry
    for t in slow:
        t.join(10)
    # each read came within --io-timeout, yet the whole head was due within --header-timeout
    assert all(t.closed_after is not None and 1.2 < t.closed_after < 3.5 for t in slow), \
        [t.closed_after for t in slow]
    assert _wait_for(lambda: call(srv, "POST", "/v1/detect", encoded(2)).status == 200, 5)


def test_idle_keepalive_connections_are_closed_and_never_block_health(start_server):
    srv = start_server(max_connections=4, keepalive_timeout_s=1.0)
    idle = []
    for _ in range(4):
        conn = http.client.HTTPConnection(*srv.address, timeout=5)
        conn.request("GET", "/readyz")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and resp.getheader("Connection") != "close"  # kept alive, then idle
        idle.append(conn)
    t0 = time.monotonic()
    try:
        _health_fast_and_others_503(srv)
        for conn in idle:  # the server closes each idle connection after --keepalive-timeout
            conn.sock.settimeout(5)
            assert conn.sock.recv(1) == b""
        assert time.monotonic() - t0 < 3.0
    finally:
        for conn in idle:
            conn.close()
    assert _wait_for(lambda: call(srv, "POST", "/v1/detect", encoded(2)).status == 200, 5)


def _burst(address, clients, body):
    """`clients` threads connect at the same instant and POST one image each; returns statuses or error names."""
    gate = threading.Barrier(clients)
    results = []

    def one():
        try:
            gate.wait(10)
            results.append(call(address, "POST", "/v1/detect", body, timeout=30).status)
        except (OSError, http.client.HTTPException) as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_a_burst_of_64_clients_gets_only_200_or_503(start_server):
    srv = start_server()  # defaults: --backlog 128, --max-connections 64
    assert srv._httpd.request_queue_size == 128
    results = _burst(srv.address, 64, encoded(3))
    assert len(results) == 64 and set(results) <= {200, 503}, sorted(set(map(str, results)))
    assert 200 in results


def test_a_burst_past_the_connection_limit_gets_503_not_resets(start_server):
    srv = start_server(max_connections=8)
    results = _burst(srv.address, 64, encoded(3))
    assert len(results) == 64 and set(results) <= {200, 503}, sorted(set(map(str, results)))
    assert results.count(503) >= 1 and 200 in results


def test_health_is_answered_while_slow_clients_hold_the_slots_and_others_hammer(start_server):
    srv = start_server(max_connections=2, header_timeout_s=5.0)
    slow = [_Trickler(srv.address, limit=4.0) for _ in range(2)]
    for t in slow:
        t.start()
    assert _wait_for(lambda: srv.connection_slots._value == 0, 5)
    stop_at = time.monotonic() + 2.5
    others = []

    def hammer():  # bounded: stops at stop_at
        while time.monotonic() < stop_at:
            try:
                others.append(call(srv, "POST", "/v1/detect", encoded(4), timeout=5).status)
            except (OSError, http.client.HTTPException) as exc:
                others.append(type(exc).__name__)

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(12)]  # answered 503, they reconnect at once
    for t in threads:
        t.start()
    probes = []
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        probes.append((call(srv, "GET", "/readyz", timeout=5).status, time.monotonic() - t0))
        time.sleep(0.2)
    for t in threads + slow:
        t.join(10)
    assert probes and all(status == 200 and seconds < 1.0 for status, seconds in probes), probes
    assert others and set(others) == {503}, sorted(set(map(str, others)))


def test_decode_budget_bounds_concurrent_decoded_bytes():
    from jetson.serve_http import DecodeBudget
    budget = DecodeBudget(capacity=100, max_jobs=3)
    assert budget.acquire(60, 0.1) and budget.acquire(40, 0.1)  # 100 of 100
    assert not budget.acquire(1, 0.05)  # over the byte budget: waits, then gives up at its deadline
    budget.release(60)
    assert budget.acquire(30, 0.1) and budget.acquire(30, 0.1)  # 100 again, 3 jobs
    assert not budget.acquire(0, 0.05)  # the job count is bounded too
    for cost in (40, 30, 30):
        budget.release(cost)
    assert budget.acquire(500, 0.1)  # larger than the whole budget: admitted only alone
    released = threading.Timer(0.2, budget.release, args=(500,))
    released.start()
    t0 = time.monotonic()
    assert budget.acquire(10, 5) and time.monotonic() - t0 >= 0.15  # waited for the big one to finish
    released.join()


def test_a_trickled_body_gets_408_at_the_request_deadline(start_server):
    srv = start_server(timeout_s=1.0, io_timeout_s=10.0)
    body = encoded(5)
    sock = socket.create_connection(srv.address, timeout=5)
    t0 = time.monotonic()
    try:
        sock.sendall("POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n".format(len(body))
                     .encode("ascii"))
        for i in range(40):  # one byte every 0.1 s until the server answers: each read is quick, the body slow
            sock.send(body[i:i + 1])
            if select.select([sock], [], [], 0.1)[0]:
                break
        answered_after = time.monotonic() - t0
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        assert resp.status == 408
    finally:
        sock.close()
    assert 0.8 < answered_after < 2.5, answered_after
    assert call(srv, "POST", "/v1/detect", body).status == 200
