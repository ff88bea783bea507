import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A real bundle: from EDGEPRUNE_TEST_BUNDLE (Python 3.6 runs) or exported here with torch."""
    given = os.environ.get("EDGEPRUNE_TEST_BUNDLE")
    if given:
        return given
    pytest.importorskip("torch")
    from device_helpers import make_bundle
    root, _ = make_bundle(str(tmp_path_factory.mktemp("bundle") / "tiny"))
    return root


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A private, writable copy of the tiny bundle (tests that corrupt it)."""
    dst = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, dst, ignore=shutil.ignore_patterns("engines", "calib"))
    return dst

