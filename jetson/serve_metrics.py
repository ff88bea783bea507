"""Prometheus text-format metrics for `edgeprune serve`. Python 3.6 compatible, stdlib only.

A few thread-safe counters, gauges and histograms and a renderer for the text exposition format
(version 0.0.4): `# HELP` / `# TYPE` lines, `name{label="value"} number`, histograms as cumulative
`_bucket{le=...}` series plus `_sum` and `_count`. Label values here come from a fixed set (the
server maps unknown paths to "other"), so the series count stays bounded whatever clients send.
"""
import math
import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names, values, extra=None):
    pairs = ['{}="{}"'.format(n, _escape(v)) for n, v in zip(names, values)]
    if extra is not None:
        pairs.append('{}="{}"'.format(extra[0], _escape(extra[1])))
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _num(x):
    if isinstance(x, float):
        if math.isinf(x):
            return "+Inf" if x > 0 else "-Inf"
        if math.isnan(x):
            return "NaN"
        return repr(x)
    return str(x)


class _Metric(object):
    kind = ""

    def __init__(self, name, help_text, label_names=()):
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)
        self._lock = threading.Lock()

    def _header(self):
        return ["# HELP {} {}".format(self.name, self.help), "# TYPE {} {}".format(self.name, self.kind)]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name, help_text, label_names=()):
        super(Counter, self).__init__(name, help_text, label_names)
        self._values = {} if self.label_names else {(): 0}

    def inc(self, labels=(), amount=1):
        key = tuple(str(v) for v in labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, labels=()):
        with self._lock:
            return self._values.get(tuple(str(v) for v in labels), 0)

    def total(self):
        with self._lock:
            return sum(self._values.values())

    def render(self):
        with self._lock:
            items = sorted(self._values.items())
        return self._header() + ["{}{} {}".format(self.name, _labels(self.label_names, k), _num(v)) for k, v in items]


class Gauge(_Metric):
    """A gauge whose value is read from a callable at render time (queue depth, readiness)."""
    kind = "gauge"

    def __init__(self, name, help_text, read):
        super(Gauge, self).__init__(name, help_text)
        self._read = read

    def render(self):
        return self._header() + ["{} {}".format(self.name, _num(float(self._read())))]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help_text, buckets, label_names=()):
        super(Histogram, self).__init__(name, help_text, label_names)
        self.buckets = tuple(float(b) for b in buckets)
        self._series = {}  # labels -> [per-bucket counts (non-cumulative, + overflow), sum, count]

    def observe(self, value, labels=()):
        key = tuple(str(v) for v in labels)
        idx = len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                idx = i
                break
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            series[0][idx] += 1
            series[1] += value
            series[2] += 1

    def count(self, labels=()):
        with self._lock:
            series = self._series.get(tuple(str(v) for v in labels))
            return series[2] if series else 0

    def render(self):
        with self._lock:
            items = sorted((k, (list(s[0]), s[1], s[2])) for k, s in self._series.items())
        lines = self._header()
        for key, (counts, total, n) in items:
            cumulative = 0
            for bound, c in zip(self.buckets + (float("inf"),), counts):
                cumulative += c
                lines.append("{}_bucket{} {}".format(
                    self.name, _labels(self.label_names, key, ("le", _num(bound))), cumulative))
            lines.append("{}_sum{} {}".format(self.name, _labels(self.label_names, key), _num(float(total))))
            lines.append("{}_count{} {}".format(self.name, _labels(self.label_names, key), n))
        return lines


class ServeMetrics(object):
    """Every metric the server exports. `queue_depth`, `queue_capacity`, `ready` and `in_flight` are
    callables the server supplies, read at scrape time."""

    def __init__(self, queue_depth, queue_capacity, ready, in_flight):
        self.requests = Counter("edgeprune_http_requests_total",
                                "HTTP requests answered, by endpoint, method and status code.",
                                ("endpoint", "method", "status"))
        self.latency = Histogram("edgeprune_http_request_duration_seconds",
                                 "Wall time from parsed request to response sent, by endpoint.",
                                 LATENCY_BUCKETS, ("endpoint",))
        self.inference = Histogram("edgeprune_inference_duration_seconds",
                                   "Time of one backend inference call (one micro-batch).", LATENCY_BUCKETS)
        self.batch_size = Histogram("edgeprune_batch_size", "Images per backend inference call.", BATCH_BUCKETS)
        self.rejected = Counter("edgeprune_queue_rejected_total",
                                "Detect requests refused because the queue was full.")
        self.timeouts = Counter("edgeprune_request_timeouts_total",
                                "Detect requests answered 504 because they ran past --timeout.")
        self._gauges = [
            Gauge("edgeprune_queue_depth", "Detect jobs waiting for the inference worker.", queue_depth),
            Gauge("edgeprune_queue_capacity", "Size of the bounded job queue (--max-queue).", queue_capacity),
            Gauge("edgeprune_in_flight_requests", "HTTP requests being handled right now.", in_flight),
            Gauge("edgeprune_model_ready", "1 when the model is loaded and the worker alive, else 0.", ready),
        ]

    def render(self):
        lines = []
        for metric in [self.requests, self.latency, self.inference, self.batch_size, self.rejected,
                       self.timeouts] + self._gauges:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
