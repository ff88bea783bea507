import onnx
import pytest
from onnx import TensorProto

from edgeprune.errors import ExportError
from edgeprune.export.nms_plugin import NMS_OUTPUTS, append_efficient_nms
from edgeprune.export.onnx_export import export_onnx


def _shape(vi):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_efficient_nms_graph_structure(dense_export):
    g = append_efficient_nms(dense_export.model, 3, score_threshold=0.3, iou_threshold=0.5, max_output_boxes=50)
    nodes = [n for n in g.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(nodes) == 1
    node = nodes[0]
    assert node.domain == "TRT" and any(o.domain == "TRT" for o in g.opset_import)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["background_class"] == -1 and attrs["score_activation"] == 0 and attrs["box_coding"] == 1
    assert attrs["max_output_boxes"] == 50 and attrs["plugin_version"] == b"1"
    assert attrs["score_threshold"] == pytest.approx(0.3) and attrs["iou_threshold"] == pytest.approx(0.5)
    outs = {o.name: o for o in g.graph.output}
    assert list(outs) == list(NMS_OUTPUTS)
    assert _shape(outs["num_detections"]) == [1, 1]
    assert _shape(outs["detection_boxes"]) == [1, 50, 4]
    assert _shape(outs["detection_scores"]) == [1, 50]
    assert _shape(outs["detection_classes"]) == [1, 50]
    types = {k: v.type.tensor_type.elem_type for k, v in outs.items()}
    assert types == {"num_detections": TensorProto.INT32, "detection_boxes": TensorProto.FLOAT,
                     "detection_scores": TensorProto.FLOAT, "detection_classes": TensorProto.INT32}
    # inputs: boxes [B,N,4] sliced from columns 0:4, scores = class probs x objectness
    producers = {o: n for n in g.graph.node for o in n.output}
    boxes, scores = (producers[i] for i in node.input)
    assert boxes.op_type == "Slice" and scores.op_type == "Mul"
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}
    assert inits[boxes.input[1]].tolist() == [0] and inits[boxes.input[2]].tolist() == [4]
    assert {producers[i].op_type for i in scores.input} == {"Slice"}


def test_dynamic_batch_keeps_symbolic_batch(dense_model):
    exp = export_onnx(dense_model, 64, dynamic_batch=True)
    g = append_efficient_nms(exp.model, 3)
    assert _shape(g.graph.output[1])[0] == "batch"


def test_rewrite_errors(dense_export):
    g = append_efficient_nms(dense_export.model, 3)
    with pytest.raises(ExportError, match="already rewritten"):
        append_efficient_nms(g, 3)
    with pytest.raises(ExportError, match="columns"):
        append_efficient_nms(dense_export.model, 7)
    with pytest.raises(ExportError, match="thresholds"):
        append_efficient_nms(dense_export.model, 3, iou_threshold=1.5)
