#!/usr/bin/env bash
# Host set-up: a .venv with edgeprune[host,dev]. Idempotent; re-running only checks.
# torch 2.14.1 + torchvision 0.29.1 are pinned as a pair: PyPI's torchvision only imports against the
# matching torch build (the CPU-only torch wheel fails with "operator torchvision::nms does not exist").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[host,dev,test-import]"
# The yolov5 package (AGPL, tests only: tests/importer builds real yolov5 checkpoints with it), without its
# declared dependencies (ultralytics, boto3, roboflow, ...): the model code needs only the test-import extra.
# About 90 MB with pandas, 45 s on a shared 2-core machine.
.venv/bin/python -m pip install -q --no-deps "yolov5==7.0.14"
.venv/bin/python -c "import torch, torchvision, onnxruntime, edgeprune; print('edgeprune', edgeprune.__version__, 'torch', torch.__version__)"
