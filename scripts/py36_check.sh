#!/usr/bin/env bash
# Device side under Python 3.6 (the Python of JetPack 4.6 on a TX2), as CI runs it:
#   1. a 3.6 venv with pip 21.3.1 and `pip install -e '.[device]'` (setup.cfg packaging; numpy 1.19.5,
#      onnxruntime 1.10.0, Pillow 8.4.0 - close to JetPack 4.6),
#   2. `edgeprune detect` and `edgeprune bench` on a bundle the host side produced,
#   3. the tests marked py36, under 3.6, against that bundle (EDGEPRUNE_TEST_BUNDLE),
#   4. a byte-compile of every device-side file with the real 3.6 interpreter, and vermin -t=3.6-.
# usage: scripts/py36_check.sh [BUNDLE]
#   Without BUNDLE a tiny one is exported with the host venv (HOST_PYTHON, default .venv/bin/python).
# env: PY36 (3.6 interpreter, default pyenv's 3.6.15), PY36_VENV (default .venv36), HOST_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PY36=${PY36:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/3.6.15/bin/python}
VENV=${PY36_VENV:-.venv36}
HOST_PYTHON=${HOST_PYTHON:-.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/py36check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step() { printf '\n== py36: %s\n' "$*"; }
# pip here may be configured with extra find-links folders that do not exist; keep its real errors only
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [ ! -x "$PY36" ]; then
    echo "py36_check: no Python 3.6 at $PY36 (pyenv install 3.6.15, or set PY36=...)" >&2
    exit 1
fi

step "venv $VENV with $("$PY36" --version 2>&1)"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY36" -m venv "$VENV"
fi
quiet_pip "$VENV/bin/python" -m pip install -q --upgrade "pip==21.3.1"
# The one documented device install command (docs/device.md), plus pytest (+ pytest-timeout: the serve tests' timeout marks) for step 3.
quiet_pip "$VENV/bin/python" -m pip install -q -e '.[device]' pytest pytest-timeout
"$VENV/bin/python" - <<'EOF'
import sys, numpy, onnxruntime, PIL
assert sys.version_info[:2] == (3, 6), sys.version
print("python", sys.version.split()[0], "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__,
      "Pillow", PIL.__version__)
try:
    import torch  # noqa: F401
    raise SystemExit("torch must not be installed in the device venv")
except ImportError:
    pass
EOF

BUNDLE=${1:-}
if [ -z "$BUNDLE" ]; then
    step "exporting a tiny bundle with the host venv ($HOST_PYTHON)"
    if [ ! -x "$HOST_PYTHON" ]; then
        echo "py36_check: no host venv at $HOST_PYTHON to export a bundle (run scripts/setup.sh or pass BUNDLE)" >&2
        exit 1
    fi
    BUNDLE="$WORK/bundle"
    "$HOST_PYTHON" tests/device/device_helpers.py "$BUNDLE" >/dev/null
fi
BUNDLE=$(cd "$BUNDLE" && pwd)

step "edgeprune detect / bench under 3.6 on $BUNDLE"
mkdir -p "$WORK/images"
"$VENV/bin/python" - "$WORK/images" <<'EOF'
import sys
import numpy as np
from PIL import Image
rng = np.random.RandomState(0)
for i in range(3):
    img = rng.randint(30, 90, size=(240, 320, 3)).astype(np.uint8)
    for _ in range(6):
        y, x = rng.randint(0, 200), rng.randint(0, 280)
        img[y:y + 30, x:x + 30] = rng.randint(150, 255, size=3)
    Image.fromarray(img).save("{}/scene{}.jpg".format(sys.argv[1], i))
EOF
"$VENV/bin/edgeprune" --help >/dev/null
"$VENV/bin/edgeprune" detect "$BUNDLE" --source "$WORK/images" --out "$WORK/detections" --backend auto --json
test -s "$WORK/detections/detections.jsonl"
"$VENV/bin/edgeprune" bench "$BUNDLE" --compare "$BUNDLE" --device tx2 --backend auto --iterations 20 --warmup 0.2 \
    --json --out "$WORK/bench.json" >/dev/null
"$VENV/bin/python" -c "import json,sys; r=json.load(open(sys.argv[1])); m=r['models'][0]; \
print('bench (3.6):', m['note']); print('  end-to-end mean %.2f ms, p99 %.2f ms; speed-up %.3f' % \
(m['end_to_end']['mean'], m['end_to_end']['p99'], r['compare']['speedup_end_to_end_mean']))" "$WORK/bench.json"

step "tests marked py36 under 3.6"
# Only files that hold py36 tests are collected: the others may import torch at module level.
mapfile -t FILES < <(grep -rl --include='test_*.py' -E 'mark\.py36|pytest\.mark\.py36' tests | sort)
EDGEPRUNE_TEST_BUNDLE="$BUNDLE" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m py36 "${FILES[@]}"

step "3.6 compatibility of the device-side sources"
shopt -s nullglob
SOURCES=(jetson calib edgeprune/__init__.py edgeprune/__main__.py edgeprune/cli.py edgeprune/errors.py
         edgeprune/fsio.py edgeprune/cliconfig.py edgeprune/stagedefs.py edgeprune/*/cli.py edgeprune/*_cli.py)
shopt -u nullglob
"$VENV/bin/python" -m compileall -q "${SOURCES[@]}" >/dev/null
"$VENV/bin/python" - "${SOURCES[@]}" <<'EOF'
# import every device-side module under 3.6 (catches 3.7+ stdlib use that byte-compiles fine)
import importlib, os, sys
mods = []
for src in sys.argv[1:]:
    paths = [src] if src.endswith(".py") else [os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs
                                               if f.endswith(".py")]
    for p in paths:
        mods.append(p[:-3].replace(os.sep, ".").replace(".__init__", ""))
for m in sorted(set(mods)):
    if m in ("edgeprune.__main__",):
        continue
    importlib.import_module(m)
print("imported", len(set(mods)), "device-side modules under", sys.version.split()[0])
EOF
VERMIN=()
if [ -x "$(dirname "$HOST_PYTHON")/vermin" ]; then
    VERMIN=("$(dirname "$HOST_PYTHON")/vermin")
elif command -v vermin >/dev/null 2>&1; then
    VERMIN=(vermin)
fi
if [ ${#VERMIN[@]} -gt 0 ]; then
    "${VERMIN[@]}" -t=3.6- --no-tips --violations --eval-annotations "${SOURCES[@]}"
else
    echo "vermin not found (pip install vermin in the host venv); the 3.6 byte-compile and imports above still ran"
fi
step "OK"
