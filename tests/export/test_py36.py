import os
import shutil
import subprocess
import sys

import pytest

PY36 = os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python")


# Not marked py36: it starts the 3.6 interpreter itself, from the host suite (tests/export's conftest needs torch).
@pytest.mark.skipif(not os.path.exists(PY36), reason="Python 3.6.15 (pyenv) not installed")
def test_export_cli_registers_under_python36():
    """`edgeprune/export/cli.py` is on the device's import path: it must parse and register on Python 3.6."""
    code = ("import argparse, sys\n"
            "from edgeprune.export import cli\n"
            "p = argparse.ArgumentParser(); s = p.add_subparsers(); cli.register(s)\n"
            "a = p.parse_args(['export', 'm.pt', '--out', 'b', '--int8', '--calib', 'c', '--json'])\n"
            "assert a.int8 and a.calib == 'c' and a.opset is None\n"   # None: export.opset of the config applies
            "assert p.parse_args(['verify', 'b']).bundle == 'b'\n"
            "h = ' '.join(s.choices['export'].format_help().split())\n"
            "assert '(config export.opset)' in h, h\n"     # the host config is not importable here: the key alone
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules\n")
    out = subprocess.run([PY36, "-c", code], cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, env={"PYTHONPATH": os.getcwd(), "PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr


VERMIN = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")


@pytest.mark.skipif(not os.path.exists(VERMIN), reason="vermin not installed")
def test_export_cli_source_targets_python36():
    vermin = VERMIN
    out = subprocess.run([vermin, "-t=3.6-", "--no-tips", "--violations", "edgeprune/export/cli.py",
                          "edgeprune/export/__init__.py"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    assert out.returncode == 0, out.stdout
