"""`edgeprune serve` against a real server (ephemeral port) and the real ONNX Runtime detector."""
import json
import threading
import time

import pytest

from serve_helpers import call, encoded, raw_call, same_detections

pytestmark = [pytest.mark.py36, pytest.mark.timeout(120)]


def _reference(detector, body, **params):
    from jetson.imageio import decode_image
    return detector.detect(decode_image(body), **params)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_detect_returns_the_runtimes_boxes(server, reference_detector, ext):
    body = encoded(1, ext)
    reply = call(server, "POST", "/v1/detect?conf=0.3&iou=0.5&max_det=50", body, {"Content-Type": "image/png"})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    out = reply.json()
    want = _reference(reference_detector, body, conf=0.3, iou=0.5, max_det=50)
    assert want, "the tiny bundle should detect something in the test scene"
    assert same_detections(out["detections"], want)
    assert set(out["timing_ms"]) >= {"queue", "preprocess", "infer", "postprocess", "total"}
    assert all(v >= 0 for v in out["timing_ms"].values())
    assert out["timing_ms"]["total"] >= out["timing_ms"]["infer"]
    assert out["model"]["backend"] == "onnxruntime"
    assert out["model"]["sha256"] == reference_detector.manifest["model"]["sha256"]


def test_query_parameters_change_the_answer(server, reference_detector):
    body = encoded(2)
    default = call(server, "POST", "/v1/detect", body).json()["detections"]
    assert same_detections(default, _reference(reference_detector, body))  # manifest thresholds
    one = call(server, "POST", "/v1/detect?max_det=1&conf=0.01", body).json()["detections"]
    assert len(one) == 1
    none = call(server, "POST", "/v1/detect?conf=1", body).json()["detections"]
    assert none == []


def test_model_health_ready(server, reference_detector):
    model = call(server, "GET", "/v1/model")
    assert model.status == 200
    assert model.json() == json.loads(json.dumps(reference_detector.public_manifest()))
    assert not any(k.startswith("_") for k in model.json())
    assert call(server, "GET", "/healthz").json() == {"status": "ok"}
    ready = call(server, "GET", "/readyz")
    assert ready.status == 200 and ready.json()["ready"] is True
    head = call(server, "HEAD", "/healthz")
    assert head.status == 200 and head.body == b""


@pytest.mark.parametrize("query,needle", [
    ("conf=2", "conf"), ("conf=abc", "conf"), ("conf=nan", "conf"), ("iou=-0.1", "iou"), ("iou=", "iou"),
    ("max_det=0", "max_det"), ("max_det=1.5", "max_det"), ("max_det=99999999", "max_det"),
    ("size=640", "unknown query parameter"), ("conf=0.1&conf=0.2", "more than once"), ("a&&b", "malformed"),
])
def test_bad_query_is_400_naming_the_parameter(server, query, needle):
    reply = call(server, "POST", "/v1/detect?" + query, encoded(0))
    assert reply.status == 400
    assert needle in reply.json()["error"]


def test_undecodable_image_is_400_with_the_reason(server):
    reply = call(server, "POST", "/v1/detect", b"GIF89a but not really an image")
    assert reply.status == 400
    assert "cannot decode" in reply.json()["error"]
    truncated = encoded(0, ".png")[:200]
    assert call(server, "POST", "/v1/detect", truncated).status == 400
    assert call(server, "POST", "/v1/detect", b"").status == 400  # empty body
    assert call(server, "GET", "/healthz").status == 200


def test_multipart_upload_is_415_with_a_hint(server):
    reply = call(server, "POST", "/v1/detect", b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"})
    assert reply.status == 415 and "--data-binary" in reply.json()["error"]
    # curl --data-binary labels the body x-www-form-urlencoded: that must still work
    reply = call(server, "POST", "/v1/detect", encoded(0), {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 200


def test_unknown_path_404_and_wrong_method_405(server):
    assert call(server, "GET", "/v2/detect").status == 404
    assert call(server, "GET", "/../../etc/passwd").status == 404
    reply = call(server, "GET", "/v1/detect")
    assert reply.status == 405 and reply.headers["allow"] == "POST"
    reply = call(server, "DELETE", "/healthz")
    assert reply.status == 405 and "GET" in reply.headers["allow"]
    assert call(server, "POST", "/metrics", b"x").status == 405


def test_missing_length_411_and_too_large_413(server):
    addr = server.address
    reply = raw_call(addr, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status == 411
    reply = raw_call(addr, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"5\r\nhello\r\n0\r\n\r\n")
    assert reply.status == 411
    # 17 MiB announced, nothing sent: the limit is checked before reading a byte of the body.
    reply = raw_call(addr, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 17825792\r\n\r\n")
    assert reply.status == 413 and reply.headers["connection"] == "close"
    reply = raw_call(addr, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert reply.status == 400


def test_image_over_the_pixel_limit_is_413(start_server):
    srv = start_server(max_megapixels=0.01)  # 10 000 pixels; the scene has 19 200
    for ext in (".png", ".jpg"):
        reply = call(srv, "POST", "/v1/detect", encoded(0, ext))
        assert reply.status == 413 and "pixels" in reply.json()["error"]
    assert call(srv, "POST", "/v1/detect", encoded(0, ".png", h=60, w=80)).status == 200


def test_truncated_body_times_out_without_hurting_the_server(start_server):
    srv = start_server(io_timeout_s=0.3)
    reply = raw_call(srv.address, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
    assert reply.status in (400, 408)
    assert call(srv, "POST", "/v1/detect", encoded(3)).status == 200


def test_bearer_token(start_server, tmp_path):
    from jetson.serve_options import read_token
    path = tmp_path / "token"
    path.write_text("s3cret-token-for-tests-0123456789\n")
    path.chmod(0o600)
    srv = start_server(token=read_token(str(path)))
    good = {"Authorization": "Bearer s3cret-token-for-tests-0123456789"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"},
                    {"Authorization": "Bearer"}, {"Authorization": "s3cret-token-for-tests-0123456789"}):
        reply = call(srv, "POST", "/v1/detect", encoded(0), headers)
        assert reply.status == 401, headers
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert call(srv, "GET", "/v1/model").status == 401
    assert call(srv, "GET", "/metrics").status == 401
    assert call(srv, "POST", "/v1/detect", encoded(0), good).status == 200
    assert call(srv, "GET", "/metrics", headers=good).status == 200
    assert call(srv, "GET", "/healthz").status == 200 and call(srv, "GET", "/readyz").status == 200


def test_short_token_file_is_refused(tmp_path):
    from edgeprune.errors import UsageError
    from jetson.serve_options import read_token
    path = tmp_path / "token"
    path.write_text("short\n")
    with pytest.raises(UsageError, match="token"):
        read_token(str(path))
    with pytest.raises(UsageError, match="cannot read"):
        read_token(str(tmp_path / "missing"))


def _post_in_thread(srv, body, results, key, query=""):
    def run():
        results[key] = call(srv, "POST", "/v1/detect" + query, body)
    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_full_queue_is_503_with_retry_after(start_server):
    srv = start_server(max_queue=1)
    assert srv.worker.pause()  # the worker takes nothing: the first job stays queued
    results = {}
    t = _post_in_thread(srv, encoded(0), results, "first")
    assert _wait_for(lambda: srv.jobs.qsize() == 1)
    reply = call(srv, "POST", "/v1/detect", encoded(1))
    assert reply.status == 503 and reply.headers["retry-after"] == "1"
    assert "queue full" in reply.json()["error"]
    srv.worker.resume()
    t.join(30)
    assert results["first"].status == 200
    assert srv.metrics.rejected.value() == 1


def test_per_request_timeout_is_504_and_the_worker_skips_it(start_server):
    srv = start_server(timeout_s=0.3)
    assert srv.worker.pause()
    reply = call(srv, "POST", "/v1/detect", encoded(0))
    assert reply.status == 504
    srv.worker.resume()
    assert _wait_for(lambda: srv.jobs.qsize() == 0)
    assert call(srv, "POST", "/v1/detect", encoded(0)).status == 200
    assert srv.metrics.timeouts.value() == 1
    assert srv.metrics.batch_size.count() == 1  # the cancelled job never reached the model


def test_micro_batch_gives_each_client_its_own_answer(start_server, reference_detector):
    srv = start_server(max_batch=4, batch_window_ms=200, max_queue=8)
    assert srv.worker.pause()
    bodies = {seed: encoded(seed) for seed in (11, 12, 13)}
    results = {}
    threads = [_post_in_thread(srv, b, results, seed, "?conf=0.1") for seed, b in bodies.items()]
    assert _wait_for(lambda: srv.jobs.qsize() == 3)
    srv.worker.resume()
    for t in threads:
        t.join(30)
    answers = {}
    for seed, body in bodies.items():
        out = results[seed].json()
        assert out["batch_size"] == 3
        assert same_detections(out["detections"], _reference(reference_detector, body, conf=0.1))
        answers[seed] = [d["box"] for d in out["detections"]]
    assert len({repr(a) for a in answers.values()}) == 3      # three different answers, not only neighbours


def test_concurrent_clients_each_get_their_own_answer(server, reference_detector):
    seeds = list(range(20, 28))
    bodies = {s: encoded(s, ".jpg" if s % 2 else ".png") for s in seeds}
    results = {}
    threads = [_post_in_thread(server, bodies[s], results, s, "?conf=0.2") for s in seeds]
    for t in threads:
        t.join(60)
    boxes = set()
    for s in seeds:
        assert results[s].status == 200
        got = results[s].json()["detections"]
        assert same_detections(got, _reference(reference_detector, bodies[s], conf=0.2)), s
        boxes.add(json.dumps([d["box"] for d in got]))
    assert len(boxes) == len(seeds), "different images must give different boxes"


def test_connection_limit_answers_503_but_still_health_checks(start_server):
    import socket
    srv = start_server(max_connections=1)
    holder = socket.create_connection(srv.address, timeout=5)  # occupies the only slot
    try:
        assert _wait_for(lambda: srv.connection_slots._value == 0)
        for path in ("/healthz", "/readyz"):  # answered on a probe slot
            assert call(srv, "GET", path).status == 200
        for method, path, body in (("POST", "/v1/detect", encoded(0)), ("GET", "/v1/model", None)):
            reply = call(srv, method, path, body)
            assert reply.status == 503 and reply.headers["retry-after"] == "1"
            assert "too many connections" in reply.json()["error"]
    finally:
        holder.close()
    assert _wait_for(lambda: call(srv, "POST", "/v1/detect", encoded(0)).status == 200)


def test_metrics_parse_as_prometheus_text(server):
    from serve_helpers import parse_prometheus
    call(server, "POST", "/v1/detect", encoded(5))
    call(server, "GET", "/nope")
    assert _wait_for(lambda: server.metrics.requests.value(("other", "GET", 404)) >= 1)  # counted after the answer
    reply = call(server, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = parse_prometheus(reply.body.decode("utf-8"))
    assert fams["edgeprune_http_requests_total"]["type"] == "counter"
    samples = fams["edgeprune_http_requests_total"]["samples"]
    reqs = {(l["endpoint"], l["method"], l["status"]): v for _, l, v in samples}
    assert reqs[("/v1/detect", "POST", "200")] >= 1 and reqs[("other", "GET", "404")] >= 1
    for name in ("edgeprune_http_request_duration_seconds", "edgeprune_inference_duration_seconds",
                 "edgeprune_batch_size"):
        fam = fams[name]
        assert fam["type"] == "histogram"
        series = {}
        for sample, labels, value in fam["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if sample.endswith("_bucket"):
                series[key]["buckets"].append((float(labels["le"].replace("+Inf", "inf")), value))
            elif sample.endswith("_count"):
                series[key]["count"] = value
        assert series, name
        for s in series.values():
            counts = [v for _, v in s["buckets"]]
            assert counts == sorted(counts) and s["buckets"][-1][0] == float("inf") and counts[-1] == s["count"]
    for gauge in ("edgeprune_queue_depth", "edgeprune_model_ready", "edgeprune_in_flight_requests"):
        assert fams[gauge]["type"] == "gauge"
    assert fams["edgeprune_model_ready"]["samples"][0][2] == 1.0


def test_bad_options_name_the_flag(serve_bundle):
    from edgeprune.errors import UsageError
    from jetson.serve_options import ServeOptions
    with pytest.raises(UsageError, match="--max-queue"):
        ServeOptions(serve_bundle, max_queue=0)
    with pytest.raises(UsageError, match="--timeout"):
        ServeOptions(serve_bundle, timeout_s="soon")


def test_expect_100_continue_only_after_the_checks(server):
    import http.client
    import socket
    addr = server.address
    reply = raw_call(addr, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                           b"Content-Length: 99999999\r\n\r\n")
    assert reply.status == 413  # answered at once, no "100 Continue" invitation to upload
    body = encoded(6)
    sock = socket.create_connection(addr, timeout=30)
    try:
        sock.sendall("POST /v1/detect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n"
                     .format(len(body)).encode("ascii"))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        assert resp.status == 200 and "detections" in json.loads(resp.read().decode("utf-8"))
    finally:
        sock.close()


def test_protocol_errors_are_answered_as_json_and_counted(start_server):
    from serve_helpers import parse_prometheus
    srv = start_server()
    addr = srv.address
    reply = raw_call(addr, b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status == 405 and reply.headers["allow"] == "GET, HEAD"
    assert raw_call(addr, b"BREW /teapot HTTP/1.1\r\nHost: x\r\n\r\n").status == 404
    reply = raw_call(addr, b"GET /healthz HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 150 + b"\r\n")
    assert reply.status == 431 and reply.json()["status"] == 431
    import socket
    sock = socket.create_connection(addr, timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.x\r\n\r\n")  # unparsable version: the base class answers HTTP/0.9-style
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert b'"status": 400' in data

    def statuses():  # a request is counted just after its answer is written: poll
        fams = parse_prometheus(call(srv, "GET", "/metrics").body.decode("utf-8"))
        return {l["status"] for _, l, _ in fams["edgeprune_http_requests_total"]["samples"]}
    assert _wait_for(lambda: {"400", "404", "405", "431"} <= statuses()), statuses()  # numeric on every Python
    text = call(srv, "GET", "/metrics").body.decode("utf-8")
    assert "BREW" not in text and 'method="other"' in text  # client-chosen tokens never become label values


def test_dynamic_batch_model_runs_a_micro_batch_in_one_call(dynamic_bundle):
    from jetson.runtime import load_detector
    from jetson.serve import DetectionServer
    from jetson.serve_options import ServeOptions
    srv = DetectionServer(ServeOptions(dynamic_bundle, port=0, backend="onnxruntime", max_batch=4,
                                       batch_window_ms=200)).start()
    ref = load_detector(dynamic_bundle, backend="onnxruntime")
    try:
        assert srv.wait_until_loaded(60)
        assert srv.worker.detector.backend.batch is None  # symbolic batch: Detector.infer makes one call
        calls = []
        backend_infer = srv.worker.detector.backend.infer
        srv.worker.detector.backend.infer = lambda x: calls.append(x.shape[0]) or backend_infer(x)  # count, not fake
        assert srv.worker.pause()
        bodies = {seed: encoded(seed) for seed in (31, 32, 33, 34)}
        results = {}
        threads = [_post_in_thread(srv, b, results, seed, "?conf=0.1") for seed, b in bodies.items()]
        assert _wait_for(lambda: srv.jobs.qsize() == 4)
        srv.worker.resume()
        for t in threads:
            t.join(30)
        assert calls == [4]
        for seed, body in bodies.items():
            out = results[seed].json()
            assert out["batch_size"] == 4 and out["model"]["input_shape"][0] == -1
            assert same_detections(out["detections"], _reference(ref, body, conf=0.1))
    finally:
        ref.close()
        srv.stop(drain_timeout=5)


def test_a_stuck_inference_call_makes_readyz_fail(start_server):
    srv = start_server(timeout_s=0.2)  # "stuck" = one call longer than 3 x 0.2 s
    release = threading.Event()
    backend = srv.worker.detector.backend
    real_infer = backend.infer
    backend.infer = lambda x: release.wait(20) and real_infer(x)  # a slow engine: waits, then really infers
    try:
        assert call(srv, "POST", "/v1/detect", encoded(0)).status == 504
        assert _wait_for(lambda: call(srv, "GET", "/readyz").status == 503)
        assert "inference call" in call(srv, "GET", "/readyz").json()["reason"]
        assert call(srv, "GET", "/healthz").status == 200  # the process is up, only not ready
    finally:
        release.set()
    assert _wait_for(lambda: call(srv, "GET", "/readyz").status == 200)
    backend.infer = real_infer
    assert call(srv, "POST", "/v1/detect", encoded(0)).status == 200
