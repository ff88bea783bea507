import os

import pytest

# Determinism and a fair share of this 2-core machine for every test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")


try:  # importing ultralytics (tests/test_ultralytics_map.py, tests/importer) replaces PIL.Image.open
    from PIL import Image as _PILImage  # with a HEIF-aware wrapper; every test gets Pillow's own back
    _PIL_OPEN = _PILImage.open
except ImportError:
    _PILImage = None


@pytest.fixture(autouse=True)
def _seed_and_threads():
    if _PILImage is not None:
        _PILImage.open = _PIL_OPEN
    try:
        import torch
    except ImportError:  # device-side runs (Python 3.6 venv) have no torch
        yield
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


try:  # property tests are deterministic like every other test: a fixed example sequence per test
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("edgeprune", derandomize=True, print_blob=True)
    _hypothesis_settings.load_profile("edgeprune")
except ImportError:  # the Python 3.6 device venv may not have hypothesis
    pass


@pytest.fixture(scope="session")
def quick_dense(tmp_path_factory):
    """`edgeprune train --preset quick` once per session (the quick preset's dense model, ~30 s of one core):
    (its output folder, the synthetic data root, its --json result). The slow tests of train/ and sparsity/
    start from it instead of each training a model that learns nothing."""
    import contextlib
    import io
    import json

    from edgeprune.cli import main

    base = tmp_path_factory.mktemp("quick_dense")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "--preset", "quick", "--data", "synthetic", "--data-root", str(base / "data"),
                     "--out", str(base / "run"), "--quiet", "--json"])
    assert code == 0
    return base / "run", base / "data", json.loads(buf.getvalue())
