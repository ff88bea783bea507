"""ONNX Runtime helpers shared by parity, quantization and `edgeprune verify` (CPU provider, fixed threads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..errors import ExportError


def session(model: onnx.ModelProto | str | Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        where = "in-memory graph" if isinstance(model, onnx.ModelProto) else str(model)
        raise ExportError(f"{where}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0]})") from None


def run(sess, batch: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
