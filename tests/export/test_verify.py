import copy

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from edgeprune.errors import ExportError
from edgeprune.export.verify import conv_flops, verify_graph

from tests.export.export_helpers import RECOMBINATION

BAD_NODE = "/layers.2/m/m.0/cv2/conv/Conv"


def _corrupt_conv_input_channels(model, node_name):
    """Drop one input channel from a Conv's weight (graphsurgeon), as a broken pruning step would."""
    g = gs.import_onnx(model)
    node = next(n for n in g.nodes if n.name == node_name)
    w = node.inputs[1]
    node.inputs[1] = gs.Constant(w.name + "_corrupt", np.ascontiguousarray(w.values[:, :-1]))
    return gs.export_onnx(g.cleanup())


def test_good_graphs_pass_and_write_a_report(dense_export, pruned_export, pruned_model, dense_model, tmp_path):
    rep = verify_graph(dense_export.model, dense_model.spec, dense_export.conv_nodes, report_path=tmp_path / "v.json")
    assert rep["ok"] and rep["checked"] == {"conv": 60, "add": 7, "concat": 13, "layers": 60, "junctions": 0}
    assert (tmp_path / "v.json").is_file()
    rep = verify_graph(pruned_export.model, pruned_model.spec, pruned_export.conv_nodes, RECOMBINATION)
    assert rep["checked"]["junctions"] == 2 and not rep["issues"] and not rep["unknown"]
    assert rep["layers"]["layers.2.cv1.conv"]["out"] == 5


def test_corrupted_conv_is_named(dense_export, dense_model, tmp_path):
    bad = _corrupt_conv_input_channels(dense_export.model, BAD_NODE)
    with pytest.raises(ExportError, match=BAD_NODE) as exc:
        verify_graph(bad)
    assert "15 input channels" in str(exc.value) and "has 16" in str(exc.value)
    with pytest.raises(ExportError, match=BAD_NODE):
        verify_graph(bad, dense_model.spec, dense_export.conv_nodes, report_path=tmp_path / "r.json")
    import json

    assert json.loads((tmp_path / "r.json").read_text())["ok"] is False


def test_graph_of_another_arch_fails_on_layer_width(pruned_export, dense_model):
    with pytest.raises(ExportError, match=r"/layers\.2/cv1/conv/Conv \(torch layer layers\.2\.cv1\.conv\)"):
        verify_graph(pruned_export.model, dense_model.spec, pruned_export.conv_nodes)


def test_recombination_mismatch_names_the_producer(pruned_export, pruned_model):
    rec = copy.deepcopy(RECOMBINATION)
    rec["junctions"][1]["kept"] = rec["junctions"][1]["kept"][:-1]
    with pytest.raises(ExportError, match=r"/layers\.4/cv1/conv/Conv \(producer layers\.4\.cv1\.conv of junction layers\.4\.m\)"):
        verify_graph(pruned_export.model, pruned_model.spec, pruned_export.conv_nodes, rec)
    rec = copy.deepcopy(RECOMBINATION)
    rec["junctions"][0]["producers"].append("layers.99.conv")
    with pytest.raises(ExportError, match="layers.99.conv"):
        verify_graph(pruned_export.model, pruned_model.spec, pruned_export.conv_nodes, rec)


def test_residual_add_mismatch_is_named(dense_export):
    # Feed a 1x1 Conv with fewer outputs into the first residual Add: channels disagree at the Add.
    g = gs.import_onnx(dense_export.model)
    add = next(n for n in g.nodes if n.name == "/layers.2/m/m.0/Add")
    src = add.inputs[1]
    w = gs.Constant("shrink_w", np.ones((8, 16, 1, 1), np.float32))
    out = g.layer(op="Conv", name="shrink", inputs=[src, w], outputs=[gs.Variable("shrunk", np.float32)])[0]
    add.inputs[1] = out
    with pytest.raises(ExportError, match=r"/layers\.2/m/m\.0/Add \(Add\): inputs disagree"):
        verify_graph(gs.export_onnx(g.cleanup().toposort()))


def test_spec_without_map_is_refused(dense_export, dense_model):
    with pytest.raises(ExportError, match="Conv map"):
        verify_graph(dense_export.model, dense_model.spec)


def test_conv_flops_matches_hand_count(dense_export, dense_model):
    from tests.export.export_helpers import IMGSZ

    expected, hooks = 0, []

    def hook(m, inp, out):
        nonlocal expected
        expected += 2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    import torch

    for m in dense_model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        dense_model(torch.zeros(1, 3, IMGSZ, IMGSZ))
    for h in hooks:
        h.remove()
    assert conv_flops(dense_export.model) == expected


def test_unsimplified_graph_verifies_too(pruned_model):
    from edgeprune.export.onnx_export import export_onnx

    exp = export_onnx(pruned_model, 64, do_simplify=False)
    assert any(n.op_type == "BatchNormalization" for n in exp.model.graph.node)
    rep = verify_graph(exp.model, pruned_model.spec, exp.conv_nodes, RECOMBINATION)
    assert rep["checked"]["layers"] == 60 and rep["checked"]["junctions"] == 2


def _add_over_concat_graph(c_seg=(2, 2), c_short=4):
    """X -> convA, convB -> Concat -> Add(convC(X)) -> convD: a junction whose producers are Concat segments."""
    rng = np.random.default_rng(0)
    x = gs.Variable("x", np.float32, (1, 4, 8, 8))
    g = gs.Graph(inputs=[x], opset=13)

    def conv(name, inp, c_out, c_in):
        w = gs.Constant(f"{name}_w", rng.random((c_out, c_in, 1, 1), dtype=np.float32))
        return g.layer(op="Conv", name=name, inputs=[inp, w], outputs=[gs.Variable(f"{name}_y", np.float32)])[0]

    a, b = conv("A", x, c_seg[0], 4), conv("B", x, c_seg[1], 4)
    cat = g.layer(op="Concat", name="cat", inputs=[a, b], outputs=[gs.Variable("cat_y", np.float32)],
                  attrs={"axis": 1})[0]
    s = g.layer(op="Add", name="add", inputs=[cat, conv("C", x, c_short, 4)], outputs=[gs.Variable("add_y", np.float32)])[0]
    g.outputs = [conv("D", s, 3, c_short)]
    g.outputs[0].dtype = np.float32
    return gs.export_onnx(g)


def test_add_over_concat_junction():
    junction = {"id": "j", "producers": ["a", "b", "c"], "consumers": ["d"], "kept": [0, 1, 2, 3]}
    nodes = {"a": "A", "b": "B", "c": "C", "d": "D"}
    rep = verify_graph(_add_over_concat_graph(), None, nodes, {"junctions": [junction]})
    assert rep["checked"]["add"] == 1 and rep["checked"]["concat"] == 1 and rep["checked"]["junctions"] == 1
    with pytest.raises(ExportError, match=r"ONNX node cat \(Concat of producer a of junction j\): 4 channels"):
        verify_graph(_add_over_concat_graph(), None, nodes, {"junctions": [{**junction, "kept": [0, 1, 2]}]})
