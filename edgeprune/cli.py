"""The single `edgeprune` entry point. Python 3.6 compatible, imports no torch.

Each subsystem owns its subcommands in `<package>/cli.py` with a `register(subparsers)` function that
only declares arguments; the handler it sets imports the heavy code lazily, so `edgeprune --help` is
fast and the device-side commands (`detect`, `bench`, `serve`, `build-engine`) run where torch is absent.
Handlers return an exit code (0 ok, 1 failed); EdgepruneError becomes a one-line message.
"""
import argparse
import importlib
import sys

from . import __version__
from .errors import EdgepruneError, UsageError

# Modules with a `register(subparsers)` function, in --help order.
COMMAND_MODULES = (
    "edgeprune.pipeline_cli",
    "edgeprune.data.cli",
    "edgeprune.models.cli",
    "edgeprune.train.cli",
    "edgeprune.sparsity.cli",
    "edgeprune.prune.cli",
    "edgeprune.export.cli",
    "jetson.cli",
    "calib.cli",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("edgeprune: error: {}\n".format(message))
        raise SystemExit(2)


def build_parser():
    parser = _Parser(
        prog="edgeprune",
        description="L1RR pruning of YOLO-style detectors, from host training to Jetson serving.",
        epilog="example: edgeprune compress            (the whole host pipeline on the synthetic default)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="edgeprune " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A subsystem whose package is not installed (e.g. a trimmed device install) is left out;
            # any other import failure inside a registration module is a bug and propagates.
            # (exc.name is the missing module itself, or its parent package such as edgeprune.data)
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        code = args.handler(args)
    except UsageError as exc:
        sys.stderr.write("edgeprune: usage error: {}\n".format(exc))
        return 2
    except EdgepruneError as exc:
        sys.stderr.write("edgeprune: error: {}\n".format(exc))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("edgeprune: interrupted\n")
        return 130
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
