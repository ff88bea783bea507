"""HTTP front end of `edgeprune serve`: routing, auth, limits, JSON answers. Python 3.6+, stdlib only.

`HTTPServer` with a thread per connection (ThreadingHTTPServer is 3.7+), bounded by `max_connections`; one
side thread answers health checks past that limit and closes connections gracefully. Every read runs under a deadline: the idle
keep-alive timeout before a request, the request-head deadline, then the request's own --timeout for the
body. The handler talks to the `DetectionServer` as `self.server.app`.
"""
import hmac
import io
import json
import logging
import math
import queue
import re
import selectors
import socket
import socketserver
import sys
import threading
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
DECODE_SLOTS = 4  # concurrent decode+letterbox (also bounded in bytes by DecodeBudget)
PROBE_HEAD_S = 1.0  # head deadline of a connection past --max-connections (health checks only)
LINGER_S = 1.0  # how long a closing connection drains what the client still sends
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")


def known_method(method):
    # Clients choose the method token: only known ones become metric labels, so series stay bounded.
    return method if method in _KNOWN_METHODS else "other"


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


class DecodeBudget(object):
    """Bounds what concurrent decodes hold in memory: at most `max_jobs` at once and their estimated peak bytes
    (imageio.decode_cost) within `capacity`. One image larger than the whole budget runs only alone."""

    def __init__(self, capacity, max_jobs):
        self.capacity = int(capacity)
        self.max_jobs = int(max_jobs)
        self.used = 0
        self.jobs = 0
        self._cond = threading.Condition()

    def acquire(self, cost, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.jobs >= self.max_jobs or (self.jobs and self.used + cost > self.capacity):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self.jobs += 1
            self.used += cost
            return True

    def release(self, cost):
        with self._cond:
            self.jobs -= 1
            self.used -= cost
            self._cond.notify_all()


class _DeadlineReader(io.RawIOBase):
    """The socket's read side under a deadline for a whole phase (request head, body), not just per recv:
    a client trickling one byte a second cannot hold its connection past the deadline. `arm(idle, head)`
    waits `idle` s for the first byte of a request, then allows `head` s from that byte on."""

    def __init__(self, sock, io_timeout):
        io.RawIOBase.__init__(self)
        self._sock = sock
        self._io_timeout = io_timeout
        self._deadline = None
        self._then = None

    def readable(self):
        return True

    def arm(self, seconds, then=None):
        self._deadline = time.monotonic() + seconds
        self._then = then

    def readinto(self, buf):
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("deadline passed")
            self._sock.settimeout(min(remaining, self._io_timeout))
        n = self._sock.recv_into(buf)
        if n and self._then is not None:  # the first byte of a request: the head deadline starts now
            self._deadline, self._then = time.monotonic() + self._then, None
        return n


def raw_response(status, obj, headers=(), head_only=False):
    """A complete `Connection: close` HTTP/1.1 answer as bytes, for sockets no handler thread serves."""
    body = json.dumps(obj).encode("utf-8")
    lines = ["HTTP/1.1 {} {}".format(status, BaseHTTPRequestHandler.responses.get(status, ("",))[0]),
             "Content-Type: application/json", "Content-Length: {}".format(len(body)), "Cache-Control: no-store"]
    lines += ["{}: {}".format(name, value) for name, value in headers] + ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)


class _SideLoop(threading.Thread):
    """One thread, one selector, for connections no handler thread should wait on:
    - overflow (past --max-connections): read the request head (due within PROBE_HEAD_S), answer /healthz and
      /readyz as usual and anything else 503 + Retry-After, so health checks need no connection slot;
    - closing: after the server's FIN, read and drop what the client still sends (an upload answered 413/503
      unread) for up to LINGER_S, so the kernel does not answer that data with a reset that would destroy
      the reply before the client reads it.
    At most MAX_SOCKETS at once; past that a connection is answered 503 and closed at once."""
    MAX_SOCKETS = 1024

    def __init__(self, answer_probe):
        super(_SideLoop, self).__init__(name="edgeprune-side", daemon=True)
        self._answer_probe = answer_probe  # (method, path) -> raw response bytes
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stopped = False
        self.start()

    def _add(self, sock, state):
        """Register `sock`; False (the caller closes it) when full or stopped."""
        with self._lock:
            if self._stopped or len(self._selector.get_map()) >= self.MAX_SOCKETS:
                return False
            self._selector.register(sock, selectors.EVENT_READ, state)
            return True

    def overflow(self, sock):
        """Serve one health request on `sock` from this loop; False when the loop is full."""
        try:
            sock.setblocking(False)
        except OSError:
            sock.close()
            return True
        return self._add(sock, {"deadline": time.monotonic() + PROBE_HEAD_S, "head": b""})

    def close(self, sock):
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        if not self._add(sock, {"deadline": time.monotonic() + LINGER_S, "head": None}):
            sock.close()

    def stop(self):
        with self._lock:
            self._stopped = True

    def _forget(self, sock):
        self._selector.unregister(sock)
        sock.close()

    def _readable(self, sock, state):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if state["head"] is None:  # lingering: drop what arrives, close on EOF
            if not data:
                self._forget(sock)
            return
        state["head"] += data
        if b"\r\n\r\n" not in state["head"] and data and len(state["head"]) < 16384:
            return
        parts = state["head"].split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3:
            self._forget(sock)  # no request line (EOF or garbage): nothing to answer
            return
        try:
            sock.send(self._answer_probe(parts[0].decode("latin-1"), urlsplit(parts[1].decode("latin-1")).path))
            sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            self._forget(sock)
            return
        state["head"], state["deadline"] = None, time.monotonic() + LINGER_S

    def run(self):
        while True:
            with self._lock:
                keys = list(self._selector.get_map().values())
                if self._stopped:
                    for key in keys:
                        self._forget(key.fileobj)
                    return
            if not keys:
                time.sleep(0.02)
                continue
            ready = self._selector.select(0.02)
            with self._lock:
                for key, _ in ready:
                    self._readable(key.fileobj, key.data)
                now = time.monotonic()
                for key in list(self._selector.get_map().values()):
                    if key.data["deadline"] < now:
                        self._forget(key.fileobj)


class ThreadingServer(HTTPServer):
    """One thread per connection, at most `max_connections`; connections beyond that are served by the side
    loop (health checks answered, anything else 503 + Retry-After). Listen backlog: `--backlog`."""
    allow_reuse_address = True

    def __init__(self, address, app):
        self.app = app
        self.request_queue_size = app.options.backlog  # listen(2) backlog; the socketserver default is 5
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._side = _SideLoop(app.answer_probe)  # first: a failed bind calls server_close(), which stops it
        HTTPServer.__init__(self, address, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        slots = self.app.connection_slots
        if not slots.acquire(blocking=False):
            if not self._side.overflow(request):
                self.app.refuse_connection(request)
                socketserver.TCPServer.shutdown_request(self, request)
            return
        try:
            threading.Thread(target=self._serve_connection, args=(request, client_address),
                             name="edgeprune-conn", daemon=True).start()
        except Exception:
            slots.release()
            socketserver.TCPServer.shutdown_request(self, request)
            raise

    def _serve_connection(self, request, client_address):
        try:
            _Handler(request, client_address, self)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.app.connection_slots.release()

    def shutdown_request(self, request):
        self._side.close(request)

    def server_close(self):
        HTTPServer.server_close(self)
        self._side.stop()

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
        opts = self.server.app.options
        self.timeout = opts.io_timeout_s  # socket timeout of each read and write (stalled clients)
        self._in_dispatch, self._status, self._body_done, self._expect_continue = False, None, False, False
        self._requests = 0
        BaseHTTPRequestHandler.setup(self)
        self.rfile.close()  # the base class's socket file; reads go through the deadline reader instead
        self._reader = _DeadlineReader(self.connection, opts.io_timeout_s)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self):
        opts = self.server.app.options
        if self._requests == 0:  # a new connection: its first request head is due within --header-timeout
            self._reader.arm(opts.header_timeout_s)
        else:  # keep-alive: wait --keepalive-timeout for the next request, then --header-timeout for its head
            self._reader.arm(opts.keepalive_timeout_s, then=opts.header_timeout_s)
        self._requests += 1
        BaseHTTPRequestHandler.handle_one_request(self)  # a passed deadline closes the connection

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
        return known_method(self.command)

    def _send_bytes(self, code, body, content_type, headers=(), close=False):
        close = close or self._unread_body()
        self.connection.settimeout(self.server.app.options.io_timeout_s)  # reads may have left a shorter one
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
        self._reader.arm(app.options.timeout_s)  # the body is read within the request's own --timeout
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
            raise HTTPError(408, "timed out reading the body (--io-timeout between reads, --timeout in all)",
                            close=True)
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

        t0 = time.monotonic()
        cost = app.probe(body)  # sized from the header: 413 before a pixel is decoded
        pre_s = time.monotonic() - t0
        if not app.decode_budget.acquire(cost, timeout=max(deadline - time.monotonic(), 0.0)):
            raise _busy("too many images being decoded; retry")
        try:
            t0 = time.monotonic()
            tensor, meta = app.decode(body)
            pre_s += time.monotonic() - t0
        finally:
            app.decode_budget.release(cost)
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

