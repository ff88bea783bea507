"""`edgeprune serve` argument declarations. Python 3.6 compatible; imports nothing heavy.

`jetson/cli.py`'s `register(subparsers)` calls `register_serve(subparsers)`; the handler imports
jetson.serve lazily, so `edgeprune --help` stays fast and torch-free.
"""
import argparse

EPILOG = """example:
  edgeprune serve runs/default/bundle --port 8080 --max-batch 4
  curl --data-binary @runs/default/data/dataset/images/val/val_000000.png "http://127.0.0.1:8080/v1/detect?conf=0.3"
  (--token-file FILE requires "Authorization: Bearer <the file's token>" on every request)

endpoints: POST /v1/detect (JPEG/PNG body; conf, iou, max_det), GET /v1/model, /healthz, /readyz, /metrics.
SIGTERM or Ctrl-C drains in-flight requests and exits 0."""


def register_serve(subparsers):
    p = subparsers.add_parser(
        "serve", help="HTTP detection service for a deploy bundle (device side, stdlib HTTP)",
        description="Serve a deploy bundle over HTTP: one inference worker owns the model, a bounded queue "
                    "feeds it (503 when full), optional micro-batching and bearer-token auth.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from .cli import _common  # BUNDLE, --backend, --device, --precision, --threads, --cache-dir: as detect/bench
    _common(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: local only; 0.0.0.0 exposes it on every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port, 0 = any free port (default 8080)")
    p.add_argument("--max-queue", type=int, default=16, help="queued images before answering 503 (default 16)")
    p.add_argument("--max-batch", type=int, default=1,
                   help="images per inference call; speeds up dynamic-batch or batch-N models (default 1)")
    p.add_argument("--batch-window-ms", type=float, default=2.0,
                   help="how long the worker waits to fill a batch (default 2 ms)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body, else 413 (default 16)")
    p.add_argument("--max-megapixels", type=float, default=36.0,
                   help="largest decoded image, else 413 (default 36 MP)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request deadline, else 504 (default 10 s)")
    p.add_argument("--token-file", default=None,
                   help="file holding a bearer token; then /v1/* and /metrics need `Authorization: Bearer <token>`")
    p.add_argument("--max-connections", type=int, default=64, help="open connections before 503 (default 64)")
    p.add_argument("--io-timeout", type=float, default=10.0,
                   help="longest wait for any single read or write on a connection (default 10 s)")
    p.add_argument("--header-timeout", type=float, default=5.0,
                   help="a whole request head (request line + headers) must arrive within this (default 5 s)")
    p.add_argument("--keepalive-timeout", type=float, default=5.0,
                   help="an idle keep-alive connection is closed after this (default 5 s)")
    p.add_argument("--backlog", type=int, default=128,
                   help="listen backlog: connections the kernel queues before accept (default 128)")
    p.add_argument("--decode-budget-mb", type=float, default=256.0,
                   help="estimated memory of the images being decoded at once; more wait (default 256 MB)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, how long to wait for in-flight requests (default 30 s)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--json", action="store_true",
                   help="print lifecycle events (listening, ready, stopped) as JSON lines")
    p.set_defaults(handler=_run_serve)
    return p


def _run_serve(args):
    import logging

    from jetson.serve import ServeOptions, read_token, serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = read_token(args.token_file) if args.token_file else None
    options = ServeOptions(
        args.bundle, host=args.host, port=args.port, backend=args.backend, device=args.device,
        precision=args.precision, threads=args.threads, cache_dir=args.cache_dir, max_queue=args.max_queue,
        max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, max_body_mb=args.max_body_mb,
        max_megapixels=args.max_megapixels,
        timeout_s=args.timeout, token=token, max_connections=args.max_connections, io_timeout_s=args.io_timeout,
        drain_timeout_s=args.drain_timeout, access_log=args.access_log, backlog=args.backlog,
        header_timeout_s=args.header_timeout, keepalive_timeout_s=args.keepalive_timeout,
        decode_budget_mb=args.decode_budget_mb)
    return serve(options, as_json=args.json)

