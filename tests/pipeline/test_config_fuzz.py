"""Property-based tests of the config loader. Acceptance: generated *valid* `--set` items and YAML documents
give exactly the values they name (everything else stays the preset's). Rejection: specific invalid inputs
raise a ConfigError naming the key, and arbitrary YAML, text and bytes give a Config or a ConfigError, never
another exception."""
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeprune.config import CHOICES, Config, ConfigError, _flatten, load_config, make_config, parse_set

# key -> strategy of (text as typed after `--set key=`, the value the config must then hold)
_FLOAT_TEXT = st.sampled_from(["{!r}", "{:.3e}", "{:.6g}", "{:.4f}"])


def _floats(lo: float, hi: float):
    def render(v, fmt):
        text = fmt.format(v)
        return text, float(text)
    return st.builds(render, st.floats(lo, hi), _FLOAT_TEXT).filter(lambda tv: lo <= tv[1] <= hi)


def _ints(lo: int, hi: int):
    return st.integers(lo, hi).map(lambda v: (str(v), v))


_BOOLS = st.sampled_from([("true", True), ("True", True), ("false", False), ("FALSE", False), ("yes", True)])


def _choice(key: str):
    return st.sampled_from([(v, v) for v in CHOICES[key]])


VALID = {
    "name": st.from_regex(r"run[a-z0-9_-]{0,8}", fullmatch=True).map(lambda s: (s, s)),
    "data.synth_train": _ints(1, 10 ** 6),
    "data.seed": _ints(-10 ** 9, 10 ** 9),
    "data.skip_bad": _BOOLS,
    "data.synth_style": _choice("data.synth_style"),
    "model.size": _choice("model.size"),
    "model.imgsz": st.integers(2, 40).map(lambda k: (str(32 * k), 32 * k)),
    "train.epochs": _ints(1, 1000),
    "train.batch": _ints(1, 512),
    "train.lr0": _floats(1e-7, 1.0),
    "train.ema": _BOOLS,
    "train.optimizer": _choice("train.optimizer"),
    "sparse.target": _floats(0.001, 0.999),
    "sparse.lam": _floats(1e-9, 10.0),
    "sparse.attention_tol": _floats(1e-9, 1.0),
    "sparse.relax_to": _floats(0.0, 1.0),
    "prune.rule": _choice("prune.rule"),
    "prune.fold": _BOOLS,
    "export.opset": _ints(7, 21),
}
valid_items = st.lists(st.sampled_from(sorted(VALID)).flatmap(lambda k: VALID[k].map(lambda tv: (k, *tv))),
                       min_size=1, max_size=6)


def _expected(preset: str, pairs) -> dict:
    want = _flatten(make_config(preset).to_dict())
    for key, _, value in pairs:       # the last --set of a key wins
        want[key] = value
    return want


@settings(max_examples=150, deadline=None)
@given(pairs=valid_items)
def test_valid_set_items_give_exactly_their_values(pairs):
    cfg = make_config("quick", parse_set([f"{k}={text}" for k, text, _ in pairs]))
    assert _flatten(cfg.to_dict()) == _expected("quick", pairs)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=valid_items, preset=st.sampled_from(["default", "quick"]))
def test_valid_yaml_documents_give_exactly_their_values(tmp_path: Path, pairs, preset):
    doc: dict = {"preset": preset}
    for key, _, value in pairs:
        *sections, leaf = key.split(".")
        node = doc
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = value
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(doc))
    cfg = load_config(p)
    assert _flatten(cfg.to_dict()) == _expected(preset, pairs)


@pytest.mark.parametrize("items, named", [
    (["train.epochs=0"], "config key train.epochs: must be >= 1"),
    (["train.epochs=2.5"], "config key train.epochs: expected int"),
    (["train.ema=maybe"], "config key train.ema: expected bool"),
    (["data.skip_bad=1"], "config key data.skip_bad: expected bool"),
    (["prune.rule=widest"], "config key prune.rule: 'widest' is not one of"),
    (["data.synth_style=photo"], "config key data.synth_style"),
    (["train.bogus=1"], "config key train.bogus: unknown key"),
    (["train=3"], "config key train: expected a mapping"),
    (["train.epochs"], "expected KEY=VALUE"),
    (["train..epochs=3"], "is not a key path"),
    (["train.epochs=3", "train.epochs.x=1"], "train.epochs is a value, not a section"),
    (["train.lr0=[1"], "is not a valid YAML scalar"),
    (["model.imgsz=100"], "config key model.imgsz: must be a multiple of 32"),
    (["sparse.target=1.0"], "config key sparse.target: must lie strictly between 0 and 1"),
    (["sparse.lam=0"], "config key sparse.lam: must be > 0"),
    (["sparse.ramp_frac=0.6", "sparse.relax_frac=0.5"], "config key sparse.relax_frac"),
])
def test_specific_invalid_set_items_are_rejected_naming_the_key(items, named):
    with pytest.raises(ConfigError) as info:
        make_config("quick", parse_set(items))
    assert named in str(info.value)


@pytest.mark.parametrize("text, named", [
    ("train: [1, 2]\n", "config key train: expected a mapping"),
    ("preset: 3\n", "config key preset must be a string"),
    ("preset: huge\n", "unknown preset 'huge'"),
    ("- a\n- b\n", "must be a mapping of sections"),
    ("train: {epochs: x}\n", "config key train.epochs: expected int"),
    ("train: {epochs: 3\n", "bad.yaml: line 2, column 1: not valid YAML"),
    ("train:\n  epochs: 3\n   lr0: 0.1\n", "bad.yaml: line 3, column 7: not valid YAML"),
])
def test_specific_invalid_yaml_documents_are_rejected_naming_the_key(tmp_path: Path, text, named):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert named in str(info.value)


KEYS = ["preset", "name", "data", "model", "train", "sparse", "prune", "finetune", "export", "bogus"]
SUBKEYS = ["epochs", "batch", "lr0", "size", "imgsz", "rule", "target", "source", "seed", "opset", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(), max_size=3))
docs = st.dictionaries(st.sampled_from(KEYS),
                       st.one_of(scalars, st.dictionaries(st.sampled_from(SUBKEYS), scalars, max_size=4)), max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(docs, scalars))
def test_arbitrary_yaml_documents_give_a_config_or_a_config_error(tmp_path: Path, doc):
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(p)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(cfg, Config)


# a known key with any text after '=' (or arbitrary text): mostly errors, which must name the item or its key
near_valid = st.one_of(st.text(max_size=30),
                       st.builds("{}={}".format, st.sampled_from(sorted(VALID)), st.text(max_size=8)))


def _names(msg: str, item: str) -> bool:
    """The message quotes the item, or says `config key K` for K a prefix of its key path."""
    parts = item.split("=", 1)[0].strip().split(".")
    return repr(item) in msg or any(f"config key {'.'.join(parts[:i])}" in msg for i in range(1, len(parts) + 1))


@settings(max_examples=150, deadline=None)
@given(items=st.lists(near_valid, min_size=1, max_size=4))
def test_arbitrary_set_items_give_a_config_or_an_error_naming_the_item(items):
    try:
        cfg = make_config("quick", parse_set(items))
    except ConfigError as exc:
        msg = str(exc)
        assert any(_names(msg, it) for it in items), msg
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_raw_bytes(tmp_path: Path, raw):
    p = tmp_path / "raw.yaml"
    p.write_bytes(raw)
    try:
        load_config(p)
    except ConfigError:
        pass
