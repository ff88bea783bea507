"""`edgeprune serve` argument declarations. Python 3.6 compatible; imports nothing heavy.

`jetson/cli.py`'s `register(subparsers)` calls `register_serve(subparsers)`; the handler imports
jetson.serve lazily, so `edgeprune --help` stays fast and torch-free.
"""
import argparse

from .serve_options import SETTINGS

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
    for key, flag, kind, default, _, _, text in SETTINGS:
        p.add_argument(flag, dest=key, type=kind, default=default, help=text + " (default %(default)s)")
    p.add_argument("--token-file", default=None,
                   help="file holding a bearer token; then /v1/* and /metrics need `Authorization: Bearer <token>`")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--json", action="store_true",
                   help="print lifecycle events (listening, ready, stopped) as JSON lines")
    p.set_defaults(handler=_run_serve)
    return p


def _run_serve(args):
    import logging

    from .serve import serve
    from .serve_options import ServeOptions, read_token
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = read_token(args.token_file) if args.token_file else None
    options = ServeOptions.from_args(args, token=token)
    return serve(options, as_json=args.json)

