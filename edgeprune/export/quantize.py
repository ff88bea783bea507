"""Host-side INT8: ONNX Runtime static quantization (QDQ, per-channel symmetric weights, symmetric activations,
as TensorRT's explicit quantization expects) calibrated on `.npy` batches of preprocessed images.

Calibration folder (docs/CONTRACTS.md "Calibration set", written by `edgeprune calib build` into a bundle's
`calib/`): float32 NCHW `.npy` batches preprocessed exactly as the bundle's manifest says, listed in
`manifest.json` ("batches": [{"file", "sha256"}], each sha checked) or, without a manifest, every `*.npy`
in name order. Only Conv inputs are quantized: the box-decoding tail works in input pixels
(0..imgsz) and would lose box precision at 8 bits, so it stays float. The detect head's Convs keep float
weights too (`head_nodes`; an input shared with the neck keeps its Q/DQ): quantizing them reorders
near-tied objectness scores (measured: mAP50 against FP32's detections 0.15 with an int8 head, 0.99 with a
float head; docs/export.md).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx

from ..errors import DataError, ExportError
from ..fsio import sha256_file
from .onnx_export import stdout_to_stderr


def calib_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: calibration folder not found (build one with `edgeprune calib build`)")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            batches = json.loads(manifest.read_text())["batches"]
            entries = [(b["file"], b.get("sha256")) for b in batches]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{manifest}: expected a calibration manifest with a 'batches' list of "
                            f"{{'file', 'sha256'}} ({type(exc).__name__}: {exc})") from None
        files = []
        for name, sha in entries:
            path = _inside(folder, name, manifest)
            if not path.is_file():
                raise DataError(f"{manifest}: lists {path}, which is missing (rebuild with `edgeprune calib build`)")
            if sha is not None and sha256_file(path) != sha:
                raise DataError(f"{path}: sha256 does not match {manifest}; rebuild the calibration set")
            files.append(path)
    else:
        files = sorted(folder.glob("*.npy"))
    if not files:
        raise DataError(f"{folder}: no .npy calibration batches found")
    return files


def _inside(folder: Path, name: Any, manifest: Path) -> Path:
    path = (folder / str(name)).resolve()
    if not isinstance(name, str) or folder.resolve() not in path.parents:
        raise DataError(f"{manifest}: batch file {name!r} must be a relative path inside {folder}")
    return path


class NpyCalibrationReader:
    """onnxruntime CalibrationDataReader over a folder of `.npy` batches; yields batches of the model's batch
    size (a fixed batch-1 model gets the images one by one)."""

    def __init__(self, folder: str | Path, input_name: str, input_shape: list[int | str], max_images: int | None = None):
        self.files = calib_files(folder)
        self.input_name = input_name
        self.shape = input_shape
        self.max_images = max_images
        self.images = 0
        self._iter = self._batches()

    def _load(self, path: Path) -> np.ndarray:
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
        want = [d if isinstance(d, int) else None for d in self.shape[1:]]
        if arr.dtype != np.float32 or arr.ndim != 4 or [int(d) for d in arr.shape[1:]] != want:
            raise DataError(f"{path}: calibration batch is {arr.dtype} {list(arr.shape)}, the model needs "
                            f"float32 [B, {', '.join(str(d) for d in want)}] (re-run `edgeprune calib build` "
                            "with this model's input size)")
        return arr

    def _batches(self) -> Iterator[np.ndarray]:
        step = self.shape[0] if isinstance(self.shape[0], int) else None
        for path in self.files:
            arr = self._load(path)
            chunks = [arr] if step is None else [arr[i:i + step] for i in range(0, len(arr) - step + 1, step)]
            for chunk in chunks:
                if self.max_images is not None and self.images >= self.max_images:
                    return
                self.images += len(chunk)
                yield chunk

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}


def head_nodes(conv_nodes: dict[str, str], graph: onnx.ModelProto | None = None) -> list[str]:
    """ONNX names of the detect head's Convs, which we keep in float: those of our detectors' head (torch
    paths `detect.*`) and, in any detector (`graph` given), every Conv whose output reaches the graph
    output through no other Conv (a factory-built model's head, wherever its module path)."""
    names = {node for path, node in conv_nodes.items() if path.startswith("detect.")}
    if graph is not None:
        producer = {o: n for n in graph.graph.node for o in n.output}
        todo, seen = [o.name for o in graph.graph.output], set()
        while todo:
            node = producer.get(todo.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                names.add(node.name)
            else:
                todo.extend(node.input)
    return sorted(names)


def quantize_int8(fp32: onnx.ModelProto, calib_dir: str | Path, max_images: int | None = 256,
                  method: str = "percentile", float_nodes: Sequence[str] = ()) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Return (QDQ INT8 model, info). `fp32` is the decoded-output graph (no NMS plugin: ORT must run it);
    `float_nodes` (ONNX node names) stay unquantized. Percentile calibration is the default: on the default
    compress run it lost 0.54 mAP50 points against FP32 where minmax lost 1.44 (BENCHMARKS.md, INT8)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ExportError(f"calibration method {method!r}: choose one of {sorted(methods)}")
    inp = fp32.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inp.type.tensor_type.shape.dim]
    reader = NpyCalibrationReader(calib_dir, inp.name, shape, max_images)

    class _Reader(CalibrationDataReader):
        def get_next(self):
            return reader.get_next()

    with tempfile.TemporaryDirectory(prefix="edgeprune-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(fp32, str(src))
        # ORT logs a "consider pre-processing" advice on the root logger; its pre-processing would rename
        # the nodes `float_nodes` names, so we skip it and keep the advice out of the CLI output.
        logging.disable(logging.WARNING)
        try:
            with stdout_to_stderr():   # the percentile/entropy calibrators print their progress
                quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=["Conv"], calibrate_method=methods[method],
                                nodes_to_exclude=list(float_nodes),
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        except DataError:
            raise
        except Exception as exc:
            raise ExportError(f"ONNX Runtime static quantization failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        finally:
            logging.disable(logging.NOTSET)
        if reader.images == 0:
            raise DataError(f"{calib_dir}: no calibration images fit the model's batch size {shape[0]}")
        q = onnx.load(str(dst))
    ops: dict[str, int] = {}
    for n in q.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    info = {"format": "QDQ", "per_channel": True, "symmetric": True, "method": method, "float_nodes": list(float_nodes),
            "calib_images": reader.images, "calib_files": len(reader.files),
            "quantize_linear": ops.get("QuantizeLinear", 0), "dequantize_linear": ops.get("DequantizeLinear", 0)}
    return q, info
