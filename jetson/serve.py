"""`edgeprune serve`: an HTTP object-detection service for the device. Python 3.6+, stdlib + numpy.

Threads and why:
- connection threads (`socketserver.ThreadingMixIn` + `HTTPServer`; `ThreadingHTTPServer` is 3.7+):
  route, authorise, read and decode the body, letterbox it, enqueue a job, wait for it, run NMS on
  the job's own output and answer. Decoding and NMS run here so the worker only runs the model.
- one inference worker that creates the detector itself (a CUDA context is bound to the thread
  that made it) and is the only thread that touches it; it gathers up to `max_batch` queued jobs
  within a short window and runs them as one backend call.
Everything is bounded: connections (`max_connections`, extra ones get 503; health checks still get an
answer from the side loop), the time a client may take for a request head, between requests and for its body,
concurrent decodes and their memory (`decode_budget_mb`), queued jobs (`max_queue`, full -> 503 +
Retry-After), body bytes (413) and pixels (413, read from the image header before anything is decoded).
"""
import json
import logging
import queue
import sys
import threading
import time

from edgeprune.errors import DeviceError, EdgepruneError

from .serve_http import DECODE_SLOTS, DecodeBudget, HTTPError, ThreadingServer, known_method, raw_response
from .serve_metrics import ServeMetrics
from .serve_worker import InferenceWorker

log = logging.getLogger("edgeprune.serve")
STUCK_FACTOR = 3  # /readyz turns 503 when one backend call runs longer than this many --timeout


class DetectionServer(object):
    """The service: HTTP front end + inference worker. `start()` binds (port 0 = ephemeral) and
    returns at once; the model loads on the worker (`/readyz` says when). `stop()` drains."""

    def __init__(self, options):
        from .bundle import load_bundle  # validates the manifest and sha256 up front: fail before binding
        self.options = options
        self.manifest = load_bundle(options.bundle)
        self.token = options.token.encode("utf-8") if options.token is not None else None
        self.jobs = queue.Queue(maxsize=options.max_queue)
        self.connection_slots = threading.BoundedSemaphore(options.max_connections)
        self.decode_budget = DecodeBudget(options.decode_budget_bytes, DECODE_SLOTS)
        self.draining = False
        self._in_flight = 0
        self._idle = threading.Condition()
        self.metrics = ServeMetrics(queue_depth=self.jobs.qsize, queue_capacity=lambda: options.max_queue,
                                    ready=lambda: 1 if self.readiness()[0] else 0, in_flight=lambda: self._in_flight)
        self.worker = InferenceWorker(options, self.jobs, self.metrics)
        self._httpd = None
        self._stopped = False
        self._thread = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self):
        try:
            self._httpd = ThreadingServer((self.options.host, self.options.port), self)
        except OSError as exc:
            raise DeviceError("cannot listen on {}:{}: {}; choose another --host/--port".format(
                self.options.host, self.options.port, exc.strerror or exc))
        self.worker.start()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="edgeprune-http", daemon=True)
        self._thread.start()
        return self

    @property
    def address(self):
        return self._httpd.server_address[:2]

    @property
    def url(self):
        host, port = self.address
        return "http://{}:{}".format("[{}]".format(host) if ":" in host else host, port)

    def wait_until_loaded(self, timeout=None):
        """Block until the worker has loaded the detector; re-raise its load error (DeviceError if foreign)."""
        if not self.worker.loaded.wait(timeout):
            return False
        exc = self.worker.load_error
        if exc is not None:
            if isinstance(exc, EdgepruneError):
                raise exc
            raise DeviceError("bundle {}: loading the detector failed: {}: {}".format(
                self.options.bundle, type(exc).__name__, exc))
        return True

    @property
    def model_info(self):
        det = self.worker.detector
        if det is None:
            return None
        return {"file": self.manifest["model"]["file"], "sha256": self.manifest["model"].get("sha256"),
                "backend": det.backend_name, "device": det.device, "input_shape": self.manifest["model"]["input_shape"]}

    def stop(self, drain_timeout=None):
        """Refuse new work, let in-flight requests finish (up to `drain_timeout` s), stop the worker.
        Returns True when everything in flight was answered."""
        drain_timeout = self.options.drain_timeout_s if drain_timeout is None else drain_timeout
        self.draining = True
        if self._httpd is None or self._stopped:
            return True
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        deadline = time.monotonic() + drain_timeout
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(min(0.1, max(deadline - time.monotonic(), 0.0)))
            drained = self._in_flight == 0
        self.worker.stop()
        self.worker.join(max(deadline - time.monotonic(), 1.0))
        return drained and not self.worker.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- used by the handler --------------------------------------------------------------------
    def readiness(self):
        if self.draining:
            return False, "shutting down"
        if not self.worker.loaded.is_set():
            return False, "loading the model"
        if self.worker.load_error is not None:
            return False, "model failed to load: {}".format(self.worker.load_error)
        if not self.worker.is_alive():
            return False, "inference worker stopped"
        busy_since = self.worker.busy_since
        if busy_since is not None and time.monotonic() - busy_since > STUCK_FACTOR * self.options.timeout_s:
            # A hung engine (e.g. a wedged GPU) keeps the thread alive but serves nothing: tell the orchestrator.
            return False, "one inference call has run for {:.1f} s (> {} x --timeout)".format(
                time.monotonic() - busy_since, STUCK_FACTOR)
        return True, "ok"

    def probe(self, body):
        """Image bytes -> estimated peak bytes of decoding them, from the header alone (no pixel decoded);
        HTTPError 413 over --max-megapixels or Pillow's MAX_IMAGE_PIXELS, 400 when no size can be read."""
        from .imageio import ImageTooLarge, probe_image
        try:
            return probe_image(body, self.options.max_pixels, name="the image")[2]
        except ImageTooLarge as exc:
            raise HTTPError(413, "{} (--max-megapixels {:g})".format(exc, self.options.max_pixels / 1e6))
        except EdgepruneError as exc:
            raise HTTPError(400, "cannot decode the image: {}".format(exc))

    def decode(self, body):
        """Image bytes -> (1x3xHxW float32, letterbox meta); HTTPError 400/413 for bad or oversized images."""
        from .imageio import ImageTooLarge, decode_image
        from .preprocess import preprocess_from_manifest
        try:
            img = decode_image(body, name="the image", max_pixels=self.options.max_pixels)
        except ImageTooLarge as exc:
            raise HTTPError(413, "{} (--max-megapixels {:g})".format(exc, self.options.max_pixels / 1e6))
        except EdgepruneError as exc:
            raise HTTPError(400, "cannot decode the image: {}".format(exc))
        return preprocess_from_manifest(img, self.manifest)

    def refuse_connection(self, sock):
        """Past --max-connections with the side loop full too: 503 at once, without reading the request."""
        self.metrics.requests.inc(("other", "-", 503))
        try:  # runs on the accept thread: never block (a few hundred bytes fit any fresh send buffer)
            sock.setblocking(False)
            sock.send(raw_response(503, self._too_many(), (("Retry-After", "1"),)))
        except OSError:
            pass

    def _too_many(self):
        return {"error": "too many connections (--max-connections {}); retry".format(self.options.max_connections),
                "status": 503}

    def answer_probe(self, method, path):
        """The answer to a request past --max-connections: /healthz and /readyz as usual, else 503."""
        head_only = method == "HEAD"
        if method in ("GET", "HEAD") and path == "/healthz":
            status, obj, headers = 200, {"status": "ok"}, ()
        elif method in ("GET", "HEAD") and path == "/readyz":
            ready, reason = self.readiness()
            status, obj, headers = 200 if ready else 503, {"ready": ready, "reason": reason}, ()
        else:
            status, obj, headers = 503, self._too_many(), (("Retry-After", "1"),)
        endpoint = path if path in ("/healthz", "/readyz") else "other"
        self.metrics.requests.inc((endpoint, known_method(method), status))
        return raw_response(status, obj, headers, head_only)

    def request_started(self):
        with self._idle:
            self._in_flight += 1

    def request_finished(self, endpoint, method, status, seconds):
        self.metrics.requests.inc((endpoint, method, status if status is not None else "-"))
        self.metrics.latency.observe(seconds, (endpoint,))
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()


def _emit(as_json, event, text, **fields):
    if as_json:
        fields["event"] = event
        sys.stdout.write(json.dumps(fields) + "\n")
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


def serve(options, as_json=False):
    """Run until SIGTERM/SIGINT, then drain and return 0 (1 if the model failed to load or the worker died)."""
    import signal
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("signal %d: draining", signum)
        stop.set()

    server = DetectionServer(options).start()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        _emit(as_json, "listening", "listening on {} (loading {})".format(server.url, options.bundle),
              url=server.url, host=server.address[0], port=server.address[1])
        while not stop.is_set() and not server.wait_until_loaded(0.2):
            pass
        if not stop.is_set():
            info = server.model_info
            _emit(as_json, "ready", "ready: {} on {} ({})".format(info["file"], info["backend"], info["device"]),
                  url=server.url, **info)
        while not stop.wait(0.5):
            if not server.worker.is_alive():
                log.error("the inference worker stopped unexpectedly; exiting")
                code = 1
                break
    finally:
        drained = server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _emit(as_json, "stopped", "stopped ({})".format("drained" if drained else "drain timed out"),
              drained=drained, requests=int(server.metrics.requests.total()))
    return code
