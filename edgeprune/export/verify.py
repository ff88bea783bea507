"""Graphsurgeon verification pass over an exported detector.

Generic checks (any graph): every residual Add's inputs agree in channels; every Conv's weight in-channels x
groups equals its input's channels; every channel Concat's output width is the sum of its inputs.
Spec checks (when the arch spec, torch->ONNX Conv map and recombination map are given): each layer's in/out
width equals what the spec builds, and each residual junction's producers emit exactly `len(kept)` channels
and its consumers read exactly that many. Channels come from onnx shape inference, imported with graphsurgeon.
Any mismatch -> ExportError naming the ONNX node.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import onnx
import onnx_graphsurgeon as gs
import torch

from ..errors import ExportError
from ..fsio import atomic_write_json
from ..models.yolo import build_model

# Ops whose output has their first input's channels: used where shape inference gives up (e.g. Resize with
# computed sizes in an un-simplified graph).
_SAME_CHANNELS = ("Mul", "Sigmoid", "Identity", "Relu", "Resize", "Upsample", "MaxPool", "BatchNormalization", "Add")


def _channels(t: gs.Tensor) -> int | None:
    shape = t.values.shape if isinstance(t, gs.Constant) else t.shape
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        return None
    return int(shape[1])


def _rank(t: gs.Tensor) -> int | None:
    shape = t.values.shape if isinstance(t, gs.Constant) else t.shape
    return None if shape is None else len(shape)


def _import(graph: onnx.ModelProto) -> gs.Graph:
    try:
        inferred = onnx.shape_inference.infer_shapes(graph, strict_mode=False)
    except Exception:  # a badly broken graph: verify what the raw graph says
        inferred = graph
    return gs.import_onnx(inferred)


def _expected_convs(spec: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """torch Conv2d path -> (in_channels, out_channels) that the spec builds."""
    model = build_model(spec)
    return {p: (m.in_channels, m.out_channels) for p, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


class _Checker:
    def __init__(self, g: gs.Graph):
        self.g = g
        self.nodes = {n.name: n for n in g.nodes}
        self.issues: list[str] = []
        self.unknown: list[str] = []
        self.counts = {"conv": 0, "add": 0, "concat": 0, "layers": 0, "junctions": 0}
        self._ch: dict[str, int | None] = {}

    def ch(self, t: gs.Tensor) -> int | None:
        """Channels of a rank-4 tensor: inferred shape, else derived from its producer."""
        known = _channels(t)
        if known is not None or isinstance(t, gs.Constant) or not t.inputs:
            return known
        if t.name not in self._ch:
            self._ch[t.name] = None  # guards against cycles in a malformed graph
            node = t.inputs[0]
            if node.op in _SAME_CHANNELS:
                self._ch[t.name] = self.ch(node.inputs[0])
            elif node.op == "Conv":
                io = self.conv_io(node)
                self._ch[t.name] = io[1] if io else None
            elif node.op == "Concat" and node.attrs.get("axis") in (1, -3):
                parts = [self.ch(x) for x in node.inputs]
                self._ch[t.name] = None if None in parts else sum(parts)
        return self._ch[t.name]

    def conv_io(self, node: gs.Node) -> tuple[int, int] | None:
        w = node.inputs[1]
        shape = w.values.shape if isinstance(w, gs.Constant) else w.shape
        if shape is None or len(shape) != 4:
            self.unknown.append(f"ONNX node {node.name}: weight shape unknown")
            return None
        return int(shape[1]) * int(node.attrs.get("group", 1)), int(shape[0])

    def generic(self) -> None:
        for node in self.g.nodes:
            if node.op == "Conv":
                self._conv(node)
            elif node.op == "Add":
                self._add(node)
            elif node.op == "Concat":
                self._concat(node)

    def _conv(self, node: gs.Node) -> None:
        io = self.conv_io(node)
        c_in = self.ch(node.inputs[0])
        if io is None:
            return
        if c_in is None:
            self.unknown.append(f"ONNX node {node.name}: input channels unknown")
            return
        self.counts["conv"] += 1
        if c_in != io[0]:
            self.issues.append(f"ONNX node {node.name} (Conv): weight expects {io[0]} input channels "
                               f"(in-channels x group) but its input {node.inputs[0].name} has {c_in}")
        if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant) and node.inputs[2].values.shape[0] != io[1]:
            self.issues.append(f"ONNX node {node.name} (Conv): bias has {node.inputs[2].values.shape[0]} entries "
                               f"for {io[1]} output channels")

    def _add(self, node: gs.Node) -> None:
        a, b = node.inputs[:2]
        if isinstance(a, gs.Constant) or isinstance(b, gs.Constant) or _rank(a) != 4 or _rank(b) != 4:
            return  # broadcasts with constants (box decoding), not a residual junction
        ca, cb = self.ch(a), self.ch(b)
        if ca is None or cb is None:
            self.unknown.append(f"ONNX node {node.name}: Add input channels unknown")
            return
        self.counts["add"] += 1
        if ca != cb:
            self.issues.append(f"ONNX node {node.name} (Add): inputs disagree in channels "
                               f"({a.name}: {ca}, {b.name}: {cb})")

    def _concat(self, node: gs.Node) -> None:
        out = node.outputs[0]
        if _rank(out) != 4 or node.attrs.get("axis") not in (1, -3):
            return
        widths = [self.ch(t) for t in node.inputs]
        c_out = _channels(out)  # inferred only: deriving it from the inputs would make the check circular
        if c_out is None and None not in widths:
            return  # nothing to compare against; the consumers' checks see the width
        if None in widths or c_out is None:
            self.unknown.append(f"ONNX node {node.name}: Concat widths unknown")
            return
        self.counts["concat"] += 1
        if sum(widths) != c_out:
            self.issues.append(f"ONNX node {node.name} (Concat): inputs {widths} add up to {sum(widths)}, "
                               f"output has {c_out}")

    def node(self, name: str, path: str) -> gs.Node | None:
        node = self.nodes.get(name)
        if node is None or node.op != "Conv":
            self.issues.append(f"torch layer {path}: mapped ONNX Conv node {name} is not in the graph")
            return None
        return node

    def layers(self, expected: dict[str, tuple[int, int]], conv_nodes: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in sorted(set(expected) - set(conv_nodes)):
            self.issues.append(f"torch layer {path}: no ONNX Conv node mapped to it")
        for path, name in conv_nodes.items():
            if path not in expected:
                self.issues.append(f"ONNX node {name}: mapped to torch layer {path}, which the arch spec lacks")
                continue
            node = self.node(name, path)
            io = self.conv_io(node) if node is not None else None
            if io is None:
                continue
            self.counts["layers"] += 1
            out[path] = {"node": name, "in": io[0], "out": io[1]}
            if io != expected[path]:
                self.issues.append(f"ONNX node {name} (torch layer {path}): in/out channels {io[0]}/{io[1]}, "
                                   f"the arch spec says {expected[path][0]}/{expected[path][1]}")
        return out

    def _ancestors(self, tensor: gs.Tensor) -> set[str]:
        seen: set[str] = set()
        todo = deque([tensor])
        while todo:
            t = todo.popleft()
            for producer in t.inputs:
                if producer.name not in seen:
                    seen.add(producer.name)
                    todo.extend(producer.inputs)
        return seen

    def junction(self, j: dict[str, Any], conv_nodes: dict[str, str]) -> dict[str, Any]:
        jid, kept = j.get("id", "?"), len(j.get("kept", []))
        producers: dict[str, str] = {}
        partial = set(j.get("partial_producers", []))  # emit the junction's channels among others
        for path in j.get("producers", []):
            name = conv_nodes.get(path)
            node = self.node(name, path) if name else None
            if name is None:
                self.issues.append(f"junction {jid}: producer {path} has no ONNX Conv node")
            io = self.conv_io(node) if node is not None else None
            if io is None:
                continue
            producers[path] = name
            pieces = self._chunk_pieces(node)
            concat = self._segment_concat(node)
            if pieces:  # chunk (C2f/C3k2/C2PSA): the pieces that feed a residual Add are the junction
                halves = [t for t in pieces if self._reaches_add(t)]
                widths = [self.ch(t) for t in halves]
                if not halves or None in widths:
                    self.unknown.append(f"ONNX node {name}: cannot tell which piece of producer {path}'s chunk "
                                        f"feeds junction {jid}")
                elif any(w != kept for w in widths):
                    self.issues.append(f"ONNX node {name} (producer {path} of junction {jid}, chunked): pieces of "
                                       f"{widths} channels feed the junction, the recombination map keeps {kept}")
            elif concat is not None and self._reaches_add(concat.outputs[0]):
                # an add over a concat: this producer is one segment of the junction (a Concat that reaches no
                # Add just reads the junction: a depth-pruned C3 whose zero shift onnxsim removed)
                width = self.ch(concat.outputs[0])
                if width is not None and width != kept:
                    self.issues.append(f"ONNX node {concat.name} (Concat of producer {path} of junction {jid}): "
                                       f"{width} channels, the recombination map keeps {kept}")
            elif io[1] < kept if path in partial else io[1] != kept:
                self.issues.append(f"ONNX node {name} (producer {path} of junction {jid}): emits {io[1]} channels, "
                                   f"the recombination map keeps {kept}" + (" of them" if path in partial else ""))
        for path in j.get("consumers", []):
            name = conv_nodes.get(path)
            node = self.node(name, path) if name else None
            if node is None:
                if name is None:
                    self.issues.append(f"junction {jid}: consumer {path} has no ONNX Conv node")
                continue
            width = self._junction_width_into(node.inputs[0], set(producers.values()))
            if width is None:
                self.unknown.append(f"ONNX node {name}: cannot tell how many channels it reads from junction {jid}")
            elif width != kept:
                self.issues.append(f"ONNX node {name} (consumer {path} of junction {jid}): reads {width} channels "
                                   f"from the junction, the recombination map keeps {kept}")
        self.counts["junctions"] += 1
        return {"id": jid, "kept": kept, "channels_before": j.get("channels_before"), "producers": producers}

    def _segment_concat(self, conv: gs.Node, depth: int = 3) -> gs.Node | None:
        """The channel Concat a producer's output reaches through its activation (BN, SiLU = Sigmoid+Mul), if any."""
        return self._after_act(conv, ("Concat",), depth)

    @staticmethod
    def _channel_slice(node: gs.Node) -> bool:
        """A Split, or a Slice whose axes are the channel axis (torch exports chunk() as either)."""
        if node.op == "Split":
            return node.attrs.get("axis", 0) in (1, -3)
        if node.op != "Slice" or len(node.inputs) < 4 or not isinstance(node.inputs[3], gs.Constant):
            return False
        return [int(a) for a in node.inputs[3].values.reshape(-1)] in ([1], [-3])

    def _chunk_pieces(self, conv: gs.Node) -> list[gs.Tensor]:
        """The channel pieces (Split/Slice outputs) a producer's activated output is cut into, if any."""
        act = self._after_act(conv, ("Split", "Slice"))
        if act is None:
            return []
        src = act.inputs[0]
        return [o for n in src.outputs if self._channel_slice(n) for o in n.outputs]

    def _after_act(self, conv: gs.Node, ops: tuple[str, ...], depth: int = 3) -> gs.Node | None:
        """The first channel-axis node of type `ops` a producer's output reaches through its activation."""
        frontier = [conv]
        for _ in range(depth):
            nxt = []
            for node in frontier:
                for consumer in node.outputs[0].outputs:
                    if consumer.op in ops and (consumer.attrs.get("axis") in (1, -3) or self._channel_slice(consumer)):
                        return consumer
                    if consumer.op in ("Mul", "Sigmoid", "Relu", "Identity", "BatchNormalization"):
                        nxt.append(consumer)
            frontier = nxt
        return None

    def _reaches_add(self, t: gs.Tensor) -> bool:
        """Does `t` reach a residual Add through channel-preserving ops (no Conv in between)?"""
        todo, seen = deque([t]), set()
        while todo:
            for consumer in todo.popleft().outputs:
                if consumer.op == "Add":
                    return True
                if consumer.op in _SAME_CHANNELS and consumer.name not in seen:
                    seen.add(consumer.name)
                    todo.extend(consumer.outputs)
        return False

    def _is_junction(self, t: gs.Tensor, producer_names: set[str], depth: int = 64) -> bool:
        """Does `t` carry the junction's channel set: a producer's output (through its activation), a residual
        Add of such tensors, or the half of a producer's chunk that feeds a residual Add?"""
        if depth == 0 or not t.inputs:
            return False
        node = t.inputs[0]
        if node.name in producer_names:
            return True
        if self._channel_slice(node):
            return self._reaches_add(t) and self._is_junction(node.inputs[0], producer_names, depth - 1)
        if node.op == "Add":
            return any(self._is_junction(x, producer_names, depth - 1) for x in node.inputs[:2])
        if node.op in _SAME_CHANNELS:
            return self._is_junction(node.inputs[0], producer_names, depth - 1)
        return False

    def _junction_width_into(self, tensor: gs.Tensor, producer_names: set[str]) -> int | None:
        """Channels a consumer reads from the junction: its whole input, or each Concat segment that carries
        the junction (C2f concatenates the junction several times: the chunk half and each bottleneck's
        output; every such segment must have the junction's width)."""
        src = tensor.inputs[0] if tensor.inputs else None
        if src is not None and src.op == "Concat":
            parts = [t for t in src.inputs if self._is_junction(t, producer_names)]
            widths = [self.ch(t) for t in parts]
            if not parts or None in widths:
                return None
            return widths[0] if len(set(widths)) == 1 else sum(widths)
        return self.ch(tensor)


def verify_graph(graph: onnx.ModelProto, spec: dict[str, Any] | None = None,
                 conv_nodes: dict[str, str] | None = None, recombination: dict[str, Any] | None = None,
                 report_path: str | Path | None = None) -> dict[str, Any]:
    """Run the checks; write the JSON report (if asked) and raise ExportError on any mismatch."""
    if spec is not None and conv_nodes is None:
        raise ExportError("verification against the arch spec needs the torch->ONNX Conv map too")
    if recombination is not None and conv_nodes is None:
        raise ExportError("verification of the recombination map needs the torch->ONNX Conv map")
    chk = _Checker(_import(graph))
    chk.generic()
    layers = chk.layers(_expected_convs(spec), conv_nodes) if spec is not None else {}
    junctions = [chk.junction(j, conv_nodes) for j in (recombination or {}).get("junctions", [])]
    report = {"ok": not chk.issues and not chk.unknown, "checked": chk.counts, "issues": chk.issues,
              "unknown": chk.unknown, "layers": layers, "junctions": junctions}
    if report_path is not None:
        atomic_write_json(report_path, report)
    problems = chk.issues + chk.unknown
    if problems:
        more = f" (+{len(problems) - 3} more; see the report)" if len(problems) > 3 else ""
        raise ExportError("graph verification failed: " + "; ".join(problems[:3]) + more)
    return report


def conv_flops(graph: onnx.ModelProto) -> int:
    """FLOPs (2 x MACs) of all Conv nodes at the graph's input size, from inferred shapes."""
    total = 0
    for node in _import(graph).nodes:
        if node.op != "Conv":
            continue
        w, y = node.inputs[1], node.outputs[0]
        if not isinstance(w, gs.Constant) or y.shape is None or not all(isinstance(d, int) for d in y.shape[1:]):
            raise ExportError(f"ONNX node {node.name}: cannot count FLOPs (unknown weight or output shape)")
        c_out, c_in_g, kh, kw = w.values.shape
        total += 2 * c_out * y.shape[2] * y.shape[3] * c_in_g * kh * kw
    return int(total)
