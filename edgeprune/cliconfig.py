"""Command-line flags that set config keys. Python 3.6, imports nothing heavy (the `*/cli.py` modules use it).

`config_flag(parser, "--epochs", "train.epochs", type=int, help=...)` declares a flag whose default is None, so
only a flag the user gave overrides the config: `edgeprune.config.config_from_args(args)` (the one function every
command builds its config with) applies them after `--set`. The config's default is never repeated here: --help
reads it from edgeprune/config.py when it is printed (`ConfigHelpFormatter`; where the host config cannot be
imported, e.g. Python 3.6 on a device, the help names the key alone).
"""
import argparse

CONFIG_KEYS = "config_keys"   # namespace attribute: {dest: config key} of the command's config flags
# --data-root of train/eval/sparse (edgeprune.data.synth.cache_dir decides the default)
DATA_ROOT_HELP = "cache folder of the synthetic dataset (default: $EDGEPRUNE_CACHE/synthetic, else ~/.cache/edgeprune/synthetic)"


def config_flag(parser, flag, key, value=None, **kwargs):
    """Add `flag` (default None) setting config `key`. A switch passes `value`, what it stores (False for
    --no-reweight). Returns the argparse action."""
    if value is not None:
        kwargs.update(action="store_const", const=value)
    action = parser.add_argument(flag, default=None, **kwargs)
    action.config_key = key
    keys = dict(parser.get_default(CONFIG_KEYS) or {})
    keys[action.dest] = key
    parser.set_defaults(**{CONFIG_KEYS: keys})
    return action


def config_default(key):
    """The default of config `key` (the dataclass default, preset "default"), or None where the host config
    cannot be imported (it needs Python >= 3.7 and PyYAML)."""
    try:
        from .config import default_value
    except (ImportError, SyntaxError):
        return None
    return default_value(key)


class ConfigHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """RawDescriptionHelpFormatter that ends a config flag's help with its key and the config's default."""

    def _get_help_string(self, action):
        text = action.help or ""
        key = getattr(action, "config_key", None)
        if key is None or text == argparse.SUPPRESS:
            return text
        if getattr(action, "const", None) is not None:   # a switch: it stores a fixed value
            return text + " (sets {}={})".format(key, action.const)
        default = config_default(key)
        tail = "config {}".format(key) if default is None else "config {}, default {}".format(key, default)
        return "{} ({})".format(text, tail.replace("%", "%%"))
