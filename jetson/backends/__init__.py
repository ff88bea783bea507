"""Inference backends behind one small interface. Python 3.6, no torch.

A backend owns one model on one device and runs `infer(batch)` on a float32 NCHW batch, returning the
model's outputs (numpy arrays, in the manifest's `output_names` order). Attributes every backend sets:
  name          "onnxruntime" or "tensorrt"
  description   what actually runs, e.g. "onnxruntime CPUExecutionProvider on host"
  precision     the precision that actually runs (fp32/fp16/int8)
  batch         fixed batch size of the model, or None when the batch is dynamic
  max_batch     largest batch a dynamic model accepts (TensorRT optimization profile), None = unbounded
  last_split    per-phase milliseconds of the last infer() ({"h2d", "compute", "d2h"}) or None
`close()` frees the session/engine; backends are also context managers.
"""
import importlib

from edgeprune.errors import DeviceError

BACKENDS = ("auto", "tensorrt", "onnxruntime")


class Backend(object):
    name = "?"
    description = "?"
    precision = "fp32"
    batch = None
    max_batch = None
    last_split = None

    def infer(self, batch):
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _importable(module):
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
    except Exception:  # a broken install (e.g. tensorrt without libnvinfer) counts as absent
        return False


def resolve_backend(name, importable=_importable):
    """'auto' -> 'tensorrt' when `import tensorrt` works, else 'onnxruntime'. Checks an explicit choice too."""
    if name not in BACKENDS:
        raise DeviceError("--backend {!r}: choose one of {}".format(name, ", ".join(BACKENDS)))
    if name == "auto":
        if importable("tensorrt"):
            return "tensorrt"
        if importable("onnxruntime"):
            return "onnxruntime"
        raise DeviceError("no inference backend: install TensorRT (JetPack's python3-libnvinfer) or onnxruntime "
                          "(pip install onnxruntime)")
    if not importable(name):
        hint = ("TensorRT comes with JetPack (python3-libnvinfer); elsewhere use --backend onnxruntime"
                if name == "tensorrt" else "pip install onnxruntime (or onnxruntime-gpu)")
        raise DeviceError("--backend {}: the {} Python package is not importable; {}".format(name, name, hint))
    return name
