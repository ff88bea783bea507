"""`edgeprune serve` settings: one table, read by both the argument declarations (serve_cli.py) and the
validation (`ServeOptions`), so a default, a range and a flag name are written once. Python 3.6, stdlib only.
"""
import logging
import math
import os

from edgeprune.errors import UsageError

log = logging.getLogger("edgeprune.serve")

# keyword, flag, kind, default, lowest, highest, help (--help appends the default). `ServeOptions(bundle, keyword=...)`; the flag names the
# setting in --help and in errors. The model settings (--backend, --device, --precision, --threads,
# --cache-dir) are the device commands' common flags (jetson/cli.py).
SETTINGS = (
    ("host", "--host", str, "127.0.0.1", None, None,
     "address to bind (127.0.0.1: local only; 0.0.0.0 exposes it on every interface)"),
    ("port", "--port", int, 8080, 0, 65535, "TCP port, 0 = any free port"),
    ("max_queue", "--max-queue", int, 16, 1, 100000, "queued images before answering 503"),
    ("max_batch", "--max-batch", int, 1, 1, 1024,
     "images per inference call; speeds up dynamic-batch or batch-N models"),
    ("batch_window_ms", "--batch-window-ms", float, 2.0, 0.0, 1000.0,
     "how long the worker waits to fill a batch, in ms"),
    ("max_body_mb", "--max-body-mb", float, 16.0, 0.001, 4096.0, "largest request body in MB, else 413"),
    ("max_megapixels", "--max-megapixels", float, 36.0, 0.001, 10000.0,
     "largest decoded image in megapixels, else 413"),
    ("timeout_s", "--timeout", float, 10.0, 0.001, 3600.0, "per-request deadline in seconds, else 504"),
    ("max_connections", "--max-connections", int, 64, 1, 100000, "open connections before 503"),
    ("io_timeout_s", "--io-timeout", float, 10.0, 0.01, 3600.0,
     "longest wait in seconds for any single read or write on a connection"),
    ("header_timeout_s", "--header-timeout", float, 5.0, 0.01, 3600.0,
     "seconds within which a whole request head (request line + headers) must arrive"),
    ("keepalive_timeout_s", "--keepalive-timeout", float, 5.0, 0.01, 3600.0,
     "seconds after which an idle keep-alive connection is closed"),
    ("backlog", "--backlog", int, 128, 1, 65535,
     "listen backlog: connections the kernel queues before accept"),
    ("decode_budget_mb", "--decode-budget-mb", float, 256.0, 1.0, 65536.0,
     "estimated memory (MB) of the images being decoded at once; more wait"),
    ("drain_timeout_s", "--drain-timeout", float, 30.0, 0.0, 3600.0,
     "on SIGTERM, how many seconds to wait for in-flight requests"),
)
MODEL_SETTINGS = {"backend": "auto", "device": "host", "precision": "fp32", "threads": None, "cache_dir": None}


class ServeOptions(object):
    """Validated server settings (keywords and defaults: SETTINGS, MODEL_SETTINGS, plus `token` and
    `access_log`); a bad value raises UsageError naming the command-line flag."""

    def __init__(self, bundle, token=None, access_log=False, **settings):
        known = dict((row[0], row) for row in SETTINGS)
        unknown = sorted(set(settings) - set(known) - set(MODEL_SETTINGS))
        if unknown:
            raise UsageError("ServeOptions: unknown setting(s) {}".format(", ".join(unknown)))
        self.bundle = str(bundle)
        for key, default in MODEL_SETTINGS.items():
            setattr(self, key, settings.get(key, default))
        if self.threads is not None:
            self.threads = _check_int("--threads", self.threads, 1, 1024)
        for key, flag, kind, default, lo, hi, _ in SETTINGS:
            value = settings.get(key, default)
            if kind is int:
                value = _check_int(flag, value, lo, hi)
            elif kind is float:
                value = _check_float(flag, value, lo, hi)
            setattr(self, key, value)
        self.batch_window_s = self.batch_window_ms / 1000.0
        self.max_body_bytes = int(self.max_body_mb * 1024 * 1024)
        self.max_pixels = int(self.max_megapixels * 1e6)
        self.decode_budget_bytes = int(self.decode_budget_mb * 1024 * 1024)
        self.access_log = bool(access_log)
        if token is not None and not token:
            raise UsageError("--token-file: the token is empty; put a secret of at least 16 characters in it")
        self.token = token

    @classmethod
    def from_args(cls, args, token=None):
        """The options of a parsed `edgeprune serve` command line."""
        settings = dict((key, getattr(args, key)) for key in MODEL_SETTINGS)
        settings.update((row[0], getattr(args, row[0])) for row in SETTINGS)
        return cls(args.bundle, token=token, access_log=args.access_log, **settings)


def _check_int(flag, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UsageError("{}: expected an integer in [{}, {}], got {!r}".format(flag, lo, hi, value))
    return value


def _check_float(flag, value, lo, hi):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UsageError("{}: expected a number, got {!r}".format(flag, value))
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UsageError("{}: expected a number in [{}, {}], got {!r}".format(flag, lo, hi, value))
    return value


def read_token(path):
    """The bearer token from `path` (surrounding whitespace stripped). UsageError names the file."""
    try:
        with open(str(path), "r", encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("--token-file {}: cannot read it ({}); write the token into it as UTF-8 text"
                         .format(path, exc))
    if len(token) < 16:
        raise UsageError("--token-file {}: the token has {} characters; use at least 16 (e.g. "
                         "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)".format(path, len(token)))
    try:
        if os.stat(str(path)).st_mode & 0o077:
            log.warning("--token-file %s is readable by other users; `chmod 600 %s`", path, path)
    except OSError:
        pass
    return token
