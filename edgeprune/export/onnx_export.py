"""Export a Detector to ONNX: legacy TorchScript exporter -> onnxsim (checked by running both graphs) -> onnx.checker.

The legacy exporter (`dynamo=False`) is used on purpose: the dynamo path needs `onnxscript`, which the host
extra does not ship, and the TorchScript path names every Conv weight by its torch parameter path
(`layers.2.m.0.cv1.conv.weight`) when BN is not folded at export time. We read that to map torch module paths
to ONNX node names *before* onnxsim folds BN into the Conv weights (which renames the initializers but keeps
node names), and carry the map forward for verification.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

from ..config import ExportConfig
from ..errors import ExportError
from ..fsio import AtomicFile
from ..prune.latency import conv_layers

INPUT_NAME = "images"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 13  # TensorRT 8.0/8.2 (JetPack 4.6) parse opset 13


@dataclass
class ExportResult:
    model: onnx.ModelProto
    conv_nodes: dict[str, str]            # torch Conv module path -> ONNX Conv node name
    input_shape: list[int]
    opset: int
    dynamic_batch: bool
    simplified: bool
    notes: list[str] = field(default_factory=list)
    layers: dict[str, Any] | None = None   # layers.json: conv geometry for the device's latency tables


def _torch_export(model: torch.nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    buf = io.BytesIO()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # Constant folding off: Conv weights keep their torch names (see module docstring); onnxsim folds later.
            torch.onnx.export(model, (dummy,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=False,
                              dynamo=False)
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''} (try another --opset)") from None
    return onnx.load_from_string(buf.getvalue())


def conv_node_map(model: torch.nn.Module, graph: onnx.ModelProto) -> dict[str, str]:
    """torch Conv module path -> ONNX node name, read from the un-folded graph's weight initializer names."""
    by_weight = {n.input[1]: n.name for n in graph.graph.node if n.op_type == "Conv" and len(n.input) > 1}
    out: dict[str, str] = {}
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            node = by_weight.get(f"{path}.weight")
            if node is None:
                raise ExportError(f"no ONNX Conv node uses the weight of torch layer {path} "
                                  "(exporter changed naming?); cannot verify widths")
            if not node:
                raise ExportError(f"the ONNX Conv node for torch layer {path} has no name")
            out[path] = node
    return out


@contextlib.contextmanager
def stdout_to_stderr():
    """onnxsim and ORT calibration print progress on stdout (Python and C++); keep stdout clean for `--json`."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# onnxsim tries to constant-fold every node and says so for each one whose inputs are not constants (they
# depend on the image): `WARNING: failed to run "Unsqueeze" op (name is "..."), skip...`. Expected and harmless
# (the node simply stays in the graph, and the folded graph is checked against the original), so not shown.
_ONNXSIM_NOISE = re.compile(r'^WARNING: failed to run ".*" op \(name is ".*"\), skip\.\.\.')


@contextlib.contextmanager
def _quiet_onnxsim():
    """Capture what onnxsim's C++ side writes to fd 1 and 2; pass on to stderr all but its expected notes."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            log.seek(0)
            rest = [line for line in log.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _ONNXSIM_NOISE.match(line.strip())]
            if rest:
                sys.stderr.write("\n".join(rest) + "\n")


def simplify(graph: onnx.ModelProto, atol: float = ExportConfig.parity_atol) -> onnx.ModelProto:
    """onnxsim, then a check that the simplified graph computes what the original does (same_outputs).
    onnxsim's own check (check_n) is not used: its fixed tolerance (atol 1e-5, rtol 1e-4) is below float32
    roundoff where a decoded output in pixels nearly cancels. Measured on a fine-tuned YOLOv8-style model (issue
    18): with BN folded into the convs, a box centre y = (y1 + y2) / 2 of 0.015 px, from y1 ~ -117 and y2 ~ +117,
    moved by 2.3e-5 px, 1e-6 of the box's coordinates, and onnxsim refused the graph."""
    import onnxsim

    try:
        with _quiet_onnxsim():
            simplified, _ = onnxsim.simplify(graph, check_n=0)
    except Exception as exc:
        raise ExportError(f"onnxsim failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                          "(export without simplification to inspect the raw graph)") from None
    same_outputs(graph, simplified, atol)
    return simplified


def same_outputs(original: onnx.ModelProto, simplified: onnx.ModelProto, atol: float, rtol: float = 1e-4) -> None:
    """Both graphs on one seeded uniform [0, 1) input, run as written (ONNX Runtime's own fusions off):
    ExportError unless every output agrees within atol + rtol * |original|. atol is the export's parity
    tolerance (export.parity_atol), which the ONNX Runtime vs torch check applies to the same outputs."""
    import numpy as np
    import onnxruntime as ort

    dims = original.graph.input[0].type.tensor_type.shape.dim
    x = np.random.default_rng(0).random([d.dim_value or 1 for d in dims], dtype=np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outs = [ort.InferenceSession(g.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {original.graph.input[0].name: x}) for g in (original, simplified)]
    for out, a, b in zip(original.graph.output, *outs):
        diff = np.abs(a - b)
        if a.shape != b.shape or (diff > atol + rtol * np.abs(a)).any():
            worst = f"max |difference| {diff.max():.3g}" if a.shape == b.shape else f"shape {b.shape} vs {a.shape}"
            raise ExportError(f"onnxsim changed output {out.name!r} on a random input: {worst}, over atol {atol} + "
                              f"{rtol} relative (export without simplification to inspect the raw graph)")


def export_onnx(model: torch.nn.Module, imgsz: int | tuple[int, int], opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, batch: int = 1, do_simplify: bool = True,
                stride: int = 32, atol: float = ExportConfig.parity_atol) -> ExportResult:
    """Export a detector (eval mode, one decoded output: `[B, N, 5+nc]`, or `[B, N, 4+nc]` anchor-free;
    edgeprune's own or a factory-built one that export.source.detection_head checked) and return the
    checked ONNX graph in memory. Both input sides must be multiples of `stride` (its largest)."""
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"export expects a detector (a torch nn.Module), got {type(model).__name__}")
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    if h % stride or w % stride:
        raise ExportError(f"input size {h}x{w}: both sides must be multiples of {stride} (the largest stride)")
    if not 7 <= opset <= 21:
        raise ExportError(f"--opset {opset}: choose 11..21 (13 for TensorRT 8.0/8.2 on JetPack 4.6)")
    was_training = model.training
    model.eval()
    try:
        dummy = torch.zeros(batch, 3, h, w)
        raw = _torch_export(model, dummy, opset, dynamic_batch)
        outs = raw.graph.output
        if len(outs) != 1 or len(outs[0].type.tensor_type.shape.dim) != 3:
            raise ExportError(f"export expects a detector whose eval output is one decoded tensor [B, N, C]; "
                              f"{type(model).__name__} gives {len(outs)} output(s) of rank "
                              f"{[len(o.type.tensor_type.shape.dim) for o in outs]}")
        node_map = conv_node_map(model, raw)
        layers = conv_layers(model, (h, w), batch)
    finally:
        model.train(was_training)
    graph = simplify(raw, atol) if do_simplify else raw
    if do_simplify:
        names = {n.name for n in graph.graph.node if n.op_type == "Conv"}
        lost = [p for p, n in node_map.items() if n not in names]
        if lost:
            raise ExportError(f"onnxsim renamed or removed Conv node {node_map[lost[0]]} (torch layer {lost[0]}); "
                              "export with simplification off to verify")
    check(graph)
    return ExportResult(graph, node_map, [batch, 3, h, w], opset, dynamic_batch, do_simplify, layers=layers)


def check(graph: onnx.ModelProto, source: str = "exported graph") -> None:
    try:
        onnx.checker.check_model(graph, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{source}: onnx.checker rejected the graph: {str(exc).splitlines()[0]}") from None


def save_onnx(graph: onnx.ModelProto, path: str | Path) -> None:
    with AtomicFile(path, suffix=".onnx") as tmp:
        onnx.save(graph, tmp)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: ONNX model not found")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__}); re-export it") from None


def graph_summary(graph: onnx.ModelProto) -> dict[str, Any]:
    ops: dict[str, int] = {}
    for n in graph.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"nodes": len(graph.graph.node), "ops": dict(sorted(ops.items())),
            "opset": max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))}
