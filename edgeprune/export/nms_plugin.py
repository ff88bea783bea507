"""Append TensorRT's EfficientNMS_TRT plugin to the decoded-output graph (graphsurgeon rewrite).

The decoded output [B, N, 5+nc] is split into boxes [B, N, 4] (cx, cy, w, h -> box_coding=1) and scores
[B, N, nc] = objectness x class probability (already sigmoid-ed -> score_activation=0); the anchor-free
layout [B, N, 4+nc] has no objectness: scores = its class columns. ONNX Runtime cannot
run the plugin; TensorRT's ONNX parser maps the node to the plugin by its op type.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import ExportError
from .onnx_export import OUTPUT_NAME

PLUGIN_OP = "EfficientNMS_TRT"
PLUGIN_DOMAIN = "TRT"
NMS_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def _slice(graph: gs.Graph, x: gs.Variable, start: int, end: int, name: str) -> gs.Variable:
    consts = [gs.Constant(f"{name}_{k}", np.array([v], dtype=np.int64))
              for k, v in (("starts", start), ("ends", end), ("axes", 2))]
    return graph.layer(op="Slice", name=name, inputs=[x, *consts], outputs=[gs.Variable(f"{name}_out", np.float32)])[0]


def append_efficient_nms(model: onnx.ModelProto, num_classes: int, score_threshold: float = 0.25,
                         iou_threshold: float = 0.45, max_output_boxes: int = 100,
                         anchor_free: bool = False) -> onnx.ModelProto:
    graph = gs.import_onnx(model)
    outs = [t for t in graph.outputs if t.name == OUTPUT_NAME]
    if len(graph.outputs) != 1 or not outs:
        raise ExportError(f"EfficientNMS rewrite expects one graph output named {OUTPUT_NAME!r}, got "
                          f"{[t.name for t in graph.outputs]} (already rewritten?)")
    pred = outs[0]
    if pred.shape is not None and len(pred.shape) == 3 and isinstance(pred.shape[2], int) \
            and pred.shape[2] != 5 - anchor_free + num_classes:
        raise ExportError(f"graph output {OUTPUT_NAME} has {pred.shape[2]} columns, expected "
                          f"{5 - anchor_free}+{num_classes}")
    if not (0.0 <= score_threshold <= 1.0 and 0.0 <= iou_threshold <= 1.0 and max_output_boxes >= 1):
        raise ExportError("EfficientNMS: thresholds must lie in [0, 1] and max_output_boxes >= 1")
    batch = pred.shape[0] if pred.shape else "batch"
    boxes = _slice(graph, pred, 0, 4, "nms_boxes")
    if anchor_free:
        scores = _slice(graph, pred, 4, 4 + num_classes, "nms_cls")
    else:
        obj = _slice(graph, pred, 4, 5, "nms_obj")
        cls = _slice(graph, pred, 5, 5 + num_classes, "nms_cls")
        scores = graph.layer(op="Mul", name="nms_scores", inputs=[cls, obj],
                             outputs=[gs.Variable("nms_scores_out", np.float32)])[0]
    outputs = [gs.Variable(NMS_OUTPUTS[0], np.int32, [batch, 1]),
               gs.Variable(NMS_OUTPUTS[1], np.float32, [batch, max_output_boxes, 4]),
               gs.Variable(NMS_OUTPUTS[2], np.float32, [batch, max_output_boxes]),
               gs.Variable(NMS_OUTPUTS[3], np.int32, [batch, max_output_boxes])]
    attrs = {"plugin_version": "1", "background_class": -1, "max_output_boxes": int(max_output_boxes),
             "score_threshold": float(score_threshold), "iou_threshold": float(iou_threshold),
             "score_activation": 0, "box_coding": 1}
    graph.layer(op=PLUGIN_OP, name="efficient_nms", inputs=[boxes, scores], outputs=outputs, attrs=attrs,
                domain=PLUGIN_DOMAIN)
    graph.outputs = outputs
    out = gs.export_onnx(graph.cleanup().toposort())
    if not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    try:
        onnx.checker.check_model(out)  # no full_check: the plugin op has no ONNX schema to infer shapes
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"EfficientNMS rewrite produced an invalid graph: {str(exc).splitlines()[0]}") from None
    return out
