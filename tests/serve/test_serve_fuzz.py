"""Fuzz the HTTP API: random methods, paths, query strings, headers and bodies must only ever get a
2xx, 4xx or 503 answer (never a 5xx crash, a hang or a dead server)."""
import http.client
import socket

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from serve_helpers import call, encoded  # noqa: E402

pytestmark = [pytest.mark.py36, pytest.mark.timeout(300)]

TOKEN = "fuzz-token-0123456789abcdef"
PATHS = ["/v1/detect", "/v1/model", "/healthz", "/readyz", "/metrics", "/", "/v1", "/v1/detect/", "//v1/detect"]
_URL_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="#")
_TOKEN = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x7A) | st.sampled_from("-_"),
                 min_size=1, max_size=20)
_HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=60)
_HEADERS = st.lists(st.one_of(
    st.tuples(_TOKEN, _HEADER_VALUE),
    st.tuples(st.sampled_from(["Content-Type", "Authorization", "Transfer-Encoding", "Expect", "Connection",
                               "Content-Encoding"]), _HEADER_VALUE),
), max_size=6)


@st.composite
def requests(draw):
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]) | _TOKEN)
    path = draw(st.sampled_from(PATHS) | st.text(_URL_CHARS, max_size=40).map(lambda s: "/" + s))
    query = draw(st.one_of(st.just(""), st.text(_URL_CHARS, max_size=40),
                           st.lists(st.tuples(st.sampled_from(["conf", "iou", "max_det", "x"]),
                                              st.sampled_from(["0", "0.5", "1", "-1", "nan", "inf", "1e9", "", "3",
                                                               "abc", "%00", "0x10"])),
                                    max_size=4).map(lambda kv: "&".join("=".join(p) for p in kv))))
    body = draw(st.one_of(st.binary(max_size=300), st.sampled_from([encoded(0)[:400], encoded(1, ".jpg")]),
                          st.just(b"")))
    length = draw(st.sampled_from(["exact", "exact", "missing", "short", "garbage"]))
    headers = draw(_HEADERS)
    if draw(st.booleans()):  # half the requests get past the bearer check to the body handling
        headers.append(("Authorization", "Bearer " + TOKEN))
    return method, path + ("?" + query if query else ""), headers, body, length


def _build(method, target, headers, body, length):
    lines = ["{} {} HTTP/1.1".format(method, target), "Host: 127.0.0.1"]
    lines += ["{}: {}".format(k, v) for k, v in headers if k.lower() not in ("content-length", "host")]
    if length == "exact":
        lines.append("Content-Length: {}".format(len(body)))
    elif length == "short":
        lines.append("Content-Length: {}".format(len(body) + 7))  # the server must give up after --io-timeout
    elif length == "garbage":
        lines.append("Content-Length: 12abc")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture(scope="module")
def fuzz_server(serve_bundle):
    from jetson.serve import DetectionServer
    from jetson.serve_options import ServeOptions
    srv = DetectionServer(ServeOptions(serve_bundle, port=0, backend="onnxruntime", io_timeout_s=0.2,
                                       max_body_mb=0.25, token=TOKEN)).start()
    assert srv.wait_until_loaded(60)
    yield srv
    srv.stop(drain_timeout=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(req=requests())
def test_random_requests_get_only_2xx_4xx_or_503(fuzz_server, req):
    method, target, headers, body, length = req
    sock = socket.create_connection(fuzz_server.address, timeout=10)  # a hang fails here
    try:
        sock.sendall(_build(method, target, headers, body, length))
        resp = http.client.HTTPResponse(sock, method=method)
        try:
            resp.begin()
            resp.read()
        except (ConnectionResetError, http.client.RemoteDisconnected):
            # The server may close without an answer only when the client's request was cut short.
            assert length in ("short", "garbage", "missing"), "connection dropped on a complete request"
            return
        assert 200 <= resp.status < 300 or 400 <= resp.status < 500 or resp.status == 503, resp.status
    finally:
        sock.close()
    assert call(fuzz_server, "GET", "/healthz", timeout=10).status == 200


def test_fuzz_server_still_serves_after_the_storm(fuzz_server):
    """Runs after the fuzz test (file order) on the same server: it must still work and never have answered 5xx."""
    from serve_helpers import parse_prometheus
    good = {"Authorization": "Bearer " + TOKEN}
    assert call(fuzz_server, "POST", "/v1/detect", encoded(2), good).status == 200
    text = call(fuzz_server, "GET", "/metrics", headers=good).body.decode("utf-8")
    samples = parse_prometheus(text)["edgeprune_http_requests_total"]["samples"]
    statuses = {labels["status"] for _, labels, _ in samples}
    methods = {labels["method"] for _, labels, _ in samples}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}, methods
    assert {labels["endpoint"] for _, labels, _ in samples} <= {"/v1/detect", "/v1/model", "/healthz", "/readyz",
                                                                 "/metrics", "other"}
    assert "200" in statuses and "400" in statuses
    assert not [s for s in statuses if s.startswith("5") and s != "503"], statuses
