"""Property-based fuzzing of the config loader: any YAML document or --set value gives a Config or a
ConfigError naming a key, never another exception."""
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeprune.config import Config, ConfigError, load_config, make_config, parse_set

KEYS = ["preset", "name", "data", "model", "train", "sparse", "prune", "finetune", "export", "bogus"]
SUBKEYS = ["epochs", "batch", "lr0", "size", "imgsz", "rule", "target", "source", "seed", "opset", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(), max_size=3))
docs = st.dictionaries(st.sampled_from(KEYS),
                       st.one_of(scalars, st.dictionaries(st.sampled_from(SUBKEYS), scalars, max_size=4)), max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(docs, scalars))
def test_yaml_documents(tmp_path: Path, doc):
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(p)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.text(max_size=30), max_size=4))
def test_set_overrides(items):
    try:
        cfg = make_config("quick", parse_set(items))
    except ConfigError as exc:
        assert str(exc)
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
