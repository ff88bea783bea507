"""HTTP front end of `edgeprune serve`: routing, auth, limits, JSON answers. Python 3.6+, stdlib only.

`socketserver.ThreadingMixIn` + `HTTPServer` (ThreadingHTTPServer is 3.7+): one thread per connection,
bounded by `max_connections`. The handler talks to the `DetectionServer` as `self.server.app`.
"""
import hmac
import json
import logging
import math
import queue
import re
import socket
import socketserver
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl, urlsplit

from edgeprune import __version__

from .serve_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .serve_worker import Job

log = logging.getLogger("edgeprune.serve")

# path -> methods it answers; HEAD is served wherever GET is.
ROUTES = {
    "/v1/detect": ("POST",),
    "/v1/model": ("GET", "HEAD"),
    "/healthz": ("GET", "HEAD"),
    "/readyz": ("GET", "HEAD"),
    "/metrics": ("GET", "HEAD"),
}
# Probes stay open so an orchestrator needs no secret; everything that reveals or uses the model is guarded.
PROTECTED = ("/v1/detect", "/v1/model", "/metrics")
MAX_DET_LIMIT = 10000
DECODE_SLOTS = 4  # concurrent decode+letterbox: bounds memory when many clients send large images at once
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")


class HTTPError(Exception):
    """An expected client-facing failure: the handler answers `status` with `message` as JSON."""

    def __init__(self, status, message, headers=(), close=False):
        super(HTTPError, self).__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)
        self.close = close


def _ms(seconds):
    return round(seconds * 1000.0, 3)


def _busy(message):
    return HTTPError(503, message, headers=(("Retry-After", "1"),), close=True)


def parse_detect_query(query):
    """`conf`, `iou`, `max_det` from a query string, validated; HTTPError(400) names the bad parameter."""
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise HTTPError(400, "malformed query string: {}".format(exc))
    params = {}
    for key, value in pairs:
        if key not in ("conf", "iou", "max_det"):
            raise HTTPError(400, "unknown query parameter {!r}; allowed: conf, iou, max_det".format(key))
        if key in params:
            raise HTTPError(400, "query parameter {!r} given more than once".format(key))
        if key == "max_det":
            if not _DIGITS.match(value.strip()) or not 1 <= int(value) <= MAX_DET_LIMIT:
                raise HTTPError(400, "max_det must be an integer in [1, {}], got {!r}".format(MAX_DET_LIMIT, value))
            params[key] = int(value)
        else:
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not (math.isfinite(number) and 0.0 <= number <= 1.0):
                raise HTTPError(400, "{} must be a number in [0, 1], got {!r}".format(key, value))
            params[key] = number
    return params


_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_size(data):
    """(width, height) read from a PNG or JPEG header without decoding, or None if not found.
    Lets the server refuse decompression bombs (a small file that decodes to gigabytes) up front."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _JPEG_SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


class ThreadingServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True  # idle keep-alive connections must not block exit; draining is tracked per request
    allow_reuse_address = True

    def __init__(self, address, app):
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        HTTPServer.__init__(self, address, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        if not self.app.connection_slots.acquire(blocking=False):
            self.app.refuse_connection(request)
            self.shutdown_request(request)
            return
        try:
            socketserver.ThreadingMixIn.process_request(self, request, client_address)
        except Exception:
            self.app.connection_slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            socketserver.ThreadingMixIn.process_request_thread(self, request, client_address)
        finally:
            self.app.connection_slots.release()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            log.debug("client %s went away: %s", client_address, exc)
        else:
            log.exception("unhandled error on a connection from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgeprune-serve/" + __version__
    sys_version = ""

    def setup(self):
        self.timeout = self.server.app.options.io_timeout_s  # socket timeout for reads (slow or stalled clients)
        self._in_dispatch, self._status, self._body_done, self._expect_continue = False, None, False, False
        BaseHTTPRequestHandler.setup(self)

    def handle_expect_100(self):
        # The base class answers `Expect: 100-continue` before routing; defer it to _read_body so a client
        # refused by auth or the size limit (401/411/413) never starts uploading.
        self._expect_continue = True
        return True

    # -- plumbing -------------------------------------------------------------------------------
    def log_message(self, fmt, *args):
        level = logging.INFO if self.server.app.options.access_log else logging.DEBUG
        log.log(level, "%s %s", self.address_string(), fmt % args)

    def send_response(self, code, message=None):
        self._status = int(code)  # http.HTTPStatus prints as "HTTPStatus.OK" before 3.11: keep metric labels numeric
        BaseHTTPRequestHandler.send_response(self, code, message)

    def send_error(self, code, message=None, explain=None):
        """Errors the base class detects itself (bad request line, header overflow, unknown method)."""
        code = int(code)
        if not self._in_dispatch:
            self.server.app.metrics.requests.inc(("other", self._method_label(), code))
        self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0], "status": code},
                        close=True)

    def _unread_body(self):
        """True when the client sent (or announced) a body we did not read: the connection must then close."""
        headers = getattr(self, "headers", None)  # absent when the request line itself was bad
        if self._body_done or headers is None:
            return False
        return headers.get("Content-Length", "0").strip() not in ("", "0") or bool(headers.get("Transfer-Encoding"))

    def _method_label(self):
        # Clients choose the method token: only known ones become metric labels, so series stay bounded.
        return self.command if self.command in _KNOWN_METHODS else "other"

    def _send_bytes(self, code, body, content_type, headers=(), close=False):
        close = close or self._unread_body()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, code, obj, headers=(), close=False):
        self._send_bytes(code, json.dumps(obj).encode("utf-8"), "application/json", headers, close)

    # -- dispatch -------------------------------------------------------------------------------
    def _dispatch(self):
        app = self.server.app
        started = time.monotonic()
        self._in_dispatch, self._status, self._body_done = True, None, False
        url = urlsplit(self.path)
        endpoint = url.path if url.path in ROUTES else "other"
        app.request_started()
        try:
            self._route(app, url.path, url.query, started)
        except HTTPError as exc:
            if exc.status == 401:
                exc.headers += (("WWW-Authenticate", 'Bearer realm="edgeprune"'),)
            self._send_json(exc.status, {"error": exc.message, "status": exc.status}, exc.headers, exc.close)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("%s %s failed", self.command, self.path)
            if self._status is None:
                self._send_json(500, {"error": "internal error: {}".format(exc), "status": 500}, close=True)
            self.close_connection = True
        finally:
            self._in_dispatch = self._expect_continue = False
            app.request_finished(endpoint, self._method_label(), self._status, time.monotonic() - started)

    def __getattr__(self, name):
        # The base class looks up `do_<METHOD>`: every method reaches the router, so an unknown method on a
        # known path is a 405 with `Allow` (and a 404 elsewhere) instead of the base class's 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _route(self, app, path, query, started):
        if path not in ROUTES:
            raise HTTPError(404, "no endpoint {!r}; endpoints: {}".format(path[:200], ", ".join(sorted(ROUTES))))
        allowed = ROUTES[path]
        if self.command not in allowed:
            raise HTTPError(405, "{} does not accept {}; use {}".format(path, self.command, " or ".join(allowed)),
                            headers=(("Allow", ", ".join(allowed)),))
        if path in PROTECTED and not self._authorised(app.token):
            raise HTTPError(401, "missing or wrong bearer token; send `Authorization: Bearer <token>`")
        if path == "/healthz":
            return self._send_json(200, {"status": "ok"})
        if path == "/readyz":
            ready, reason = app.readiness()
            return self._send_json(200 if ready else 503, {"ready": ready, "reason": reason})
        if path == "/metrics":
            return self._send_bytes(200, app.metrics.render().encode("utf-8"), METRICS_CONTENT_TYPE)
        if path == "/v1/model":
            ready, reason = app.readiness()
            if not ready:
                raise _busy("not ready: {}".format(reason))
            return self._send_json(200, app.worker.detector.public_manifest())
        return self._detect(app, query, started)

    def _authorised(self, token):
        if token is None:
            return True
        scheme, _, credentials = self.headers.get("Authorization", "").strip().partition(" ")
        # Headers arrive decoded as latin-1; re-encoding gives back the client's exact bytes.
        given = credentials.strip().encode("latin-1", "replace") if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(given, token)

    def _content_length(self, limit):
        if self.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "chunked transfer encoding is not supported; send the image with a Content-Length",
                            close=True)
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise HTTPError(411, "Content-Length is required; send the image bytes as the request body")
        if len(set(v.strip() for v in values)) != 1 or not _DIGITS.match(values[0].strip()):
            raise HTTPError(400, "bad Content-Length {!r}".format(", ".join(values)[:100]), close=True)
        length = int(values[0].strip())
        if length > limit:
            raise HTTPError(413, "body of {} bytes exceeds --max-body-mb ({} bytes)".format(length, limit), close=True)
        if length == 0:
            raise HTTPError(400, "empty body; send a JPEG or PNG image")
        return length

    def _read_body(self, length):
        if self._expect_continue:
            self.send_response_only(100)
            self.end_headers()
            self._expect_continue = False
        try:
            body = self.rfile.read(length)
        except socket.timeout:
            raise HTTPError(408, "timed out reading the body", close=True)
        self._body_done = True
        if len(body) != length:
            raise HTTPError(400, "body ended after {} of {} bytes".format(len(body), length), close=True)
        return body

    def _detect(self, app, query, started):
        opts = app.options
        ready, reason = app.readiness()
        if not ready:
            raise _busy("not ready: {}".format(reason))
        params = parse_detect_query(query)
        if self.headers.get("Content-Type", "").strip().lower().startswith("multipart/"):
            raise HTTPError(415, "send the raw image bytes as the body (curl --data-binary @scene.jpg), "
                                 "not a multipart form upload (curl -F)")
        body = self._read_body(self._content_length(opts.max_body_bytes))
        deadline = started + opts.timeout_s

        if not app.decode_slots.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise _busy("too many images being decoded; retry")
        try:
            t0 = time.monotonic()
            tensor, meta = app.decode(body)
            pre_s = time.monotonic() - t0
        finally:
            app.decode_slots.release()
        del body

        job = Job(tensor, meta)
        try:
            app.jobs.put_nowait(job)
        except queue.Full:
            app.metrics.rejected.inc()
            raise _busy("queue full ({} jobs waiting); retry".format(opts.max_queue))
        if not job.done.wait(max(deadline - time.monotonic(), 0.0)):
            job.cancelled = True
            if not job.done.is_set():
                app.metrics.timeouts.inc()
                raise HTTPError(504, "no result within --timeout {} s".format(opts.timeout_s))
        if job.error is not None:
            raise HTTPError(500, "inference failed: {}".format(job.error))

        t1 = time.monotonic()
        # Detector.postprocess is a pure function of the manifest (NMS + box mapping), safe off the worker thread;
        # absent parameters (None) fall back to the manifest's thresholds.
        detections = app.worker.detector.postprocess(job.output, [meta], params.get("conf"), params.get("iou"),
                                                     params.get("max_det"))[0]
        post_s = time.monotonic() - t1
        self._send_json(200, {
            "detections": detections,
            "timing_ms": {"queue": _ms(job.started - job.enqueued), "preprocess": _ms(pre_s),
                          "infer": _ms(job.infer_s), "postprocess": _ms(post_s),
                          "total": _ms(time.monotonic() - started)},
            "batch_size": job.batch,
            "model": app.model_info,
        })

