"""One error family for the whole project (host and device). Python 3.6 compatible.

Every message names the thing that is wrong (file and line, config key, layer, ONNX node) and, where
there is one, what to do about it. The CLI turns these into exit code 1 (or 2 for UsageError) and a
one-line message instead of a traceback (scripts outside the CLI: `run_script`).
"""
import sys


class EdgepruneError(Exception):
    """Base of every error edgeprune raises on purpose."""


class UsageError(EdgepruneError):
    """Bad command-line usage (exit code 2)."""


class ConfigError(EdgepruneError):
    """A config value is missing or invalid; the message names the key path (e.g. `train.epochs`)."""


class DataError(EdgepruneError):
    """A dataset, image or label is missing or corrupt; the message names the file (and line)."""


class ModelError(EdgepruneError):
    """An architecture spec or checkpoint does not describe a valid model."""


class CheckpointError(ModelError):
    """A checkpoint is missing, truncated or of another architecture."""


class SparsityError(EdgepruneError):
    """L1RR sparse training cannot run as asked (no BN layers, bad target, bad ratios file)."""


class PruneError(EdgepruneError):
    """The pruner met a graph it cannot handle or ratios it cannot apply; names the node/layer."""


class ExportError(EdgepruneError):
    """ONNX export, simplification or verification failed; names the ONNX node where relevant."""


class BundleError(EdgepruneError):
    """A deploy bundle is missing, corrupt, tampered with or of an unknown schema version."""


class DeviceError(EdgepruneError):
    """The device runtime cannot run as asked (backend missing, engine stale, image undecodable)."""


class DistributedError(EdgepruneError):
    """A distributed (DDP) run cannot form its process group; names the rendezvous endpoint."""


class StorageError(EdgepruneError):
    """Writing an artefact failed (disk full, permission denied); names the path."""


def run_script(main):
    """Run a script's `main()` and exit with its status; an EdgepruneError becomes one `error: ...` line on
    stderr and exit status 2 (UsageError) or 1, as in the CLI."""
    try:
        status = main()
    except EdgepruneError as exc:
        sys.stderr.write("error: {}\n".format(exc))
        status = 2 if isinstance(exc, UsageError) else 1
    sys.exit(status)
