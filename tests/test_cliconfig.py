"""CLI flags and the config: every config flag of every command defaults to None and names a real key, the one
shared function applies them (flags over --set over the preset), and --help shows the config's own default."""
import argparse

import pytest

from edgeprune.cli import build_parser
from edgeprune.config import config_from_args, default_value, make_config
from edgeprune.errors import ConfigError


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_config_flag_defaults_to_none_and_names_a_config_key():
    found = {}
    for name, sub in _subparsers().items():
        keys = sub.get_default("config_keys") or {}
        for action in sub._actions:
            key = getattr(action, "config_key", None)
            if key is None:
                continue
            assert action.default is None, f"{name} {action.option_strings}: default {action.default!r}, not None"
            assert keys[action.dest] == key
            default_value(key)                       # raises for a key the config does not have
            found.setdefault(name, []).append(key)
    assert {"compress", "train", "eval", "sparse", "prune", "export"} <= set(found)
    assert "export.parity_images" in found["export"] and "prune.round_to" in found["prune"]


def test_help_shows_the_configs_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"config export.parity_images, default {default_value('export.parity_images')})" in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sparse", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"config sparse.epochs, default {default_value('sparse.epochs')})" in text
    assert "(sets sparse.reweight=False)" in text


def test_flags_win_over_set_and_the_preset(tmp_path):
    args = build_parser().parse_args(["train", "--out", "o", "--preset", "quick", "--epochs", "3",
                                      "--set", "train.epochs=5", "--set", "train.lr0=0.03"])
    cfg = config_from_args(args)
    assert (cfg.train.epochs, cfg.train.lr0, cfg.model.imgsz) == (3, 0.03, make_config("quick").model.imgsz)
    args = build_parser().parse_args(["prune", "x.pt", "--ratios", "r.json", "--out", "o", "--round-to", "4"])
    assert (config_from_args(args).prune.round_to, config_from_args(args).prune.rule) == (4, "union")
    path = tmp_path / "c.yaml"
    path.write_text("preset: quick\n")
    args = build_parser().parse_args(["sparse", "d.pt", "--out", "o", "--config", str(path), "--preset", "default"])
    with pytest.raises(ConfigError, match="--preset default conflicts with preset 'quick'"):
        config_from_args(args)
