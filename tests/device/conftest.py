import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A real bundle: from EDGEPRUNE_TEST_BUNDLE (Python 3.6 runs) or exported here with torch."""
    given = os.environ.get("EDGEPRUNE_TEST_BUNDLE")
    if given:
        return given
    pytest.importorskip("torch")
    from bundle_factory import make_bundle
    root, _ = make_bundle(str(tmp_path_factory.mktemp("bundle") / "tiny"))
    return root


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A private, writable copy of the tiny bundle (tests that corrupt it)."""
    dst = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, dst, ignore=shutil.ignore_patterns("engines", "calib"))
    return dst


def scene(h=120, w=160, seed=0):
    """A deterministic RGB test image: noise plus a few bright rectangles."""
    rng = np.random.RandomState(seed)
    img = rng.randint(0, 60, size=(h, w, 3)).astype(np.uint8)
    for _ in range(4):
        y, x = rng.randint(0, h - 20), rng.randint(0, w - 20)
        img[y:y + rng.randint(8, 20), x:x + rng.randint(8, 20)] = rng.randint(150, 255, size=3)
    return img
