import numpy as np
import onnx
import pytest
import torch

from edgeprune.errors import ExportError
from edgeprune.export import ort_run
from edgeprune.export.onnx_export import export_onnx, graph_summary, load_onnx, save_onnx

from tests.export.export_helpers import IMGSZ, PRUNED_WIDTHS


@pytest.mark.parametrize("which", ["dense", "pruned"])
def test_export_simplifies_checks_and_names_io(which, request):
    exp = request.getfixturevalue(f"{which}_export")
    model = request.getfixturevalue(f"{which}_model")
    g = exp.model
    onnx.checker.check_model(g, full_check=True)
    assert [i.name for i in g.graph.input] == ["images"] and [o.name for o in g.graph.output] == ["output"]
    summary = graph_summary(g)
    assert summary["opset"] == 13
    assert "BatchNormalization" not in summary["ops"], "onnxsim should fold BN into the Convs"
    assert summary["ops"]["Conv"] == 60
    # every torch Conv maps to a distinct ONNX Conv of the right width
    assert len(exp.conv_nodes) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(set(exp.conv_nodes.values())) == len(exp.conv_nodes)
    inits = {i.name: i for i in g.graph.initializer}
    nodes = {n.name: n for n in g.graph.node}
    for block, width in PRUNED_WIDTHS.items():
        w = inits[nodes[exp.conv_nodes[f"{block}.conv"]].input[1]]
        expected = width if which == "pruned" else model.conv_widths()[block]
        assert w.dims[0] == expected
    out = ort_run.run(ort_run.session(g), np.zeros((1, 3, IMGSZ, IMGSZ), np.float32))
    assert out.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 5 + 3)


def test_dynamic_batch_and_opset(dense_model, tmp_path):
    exp = export_onnx(dense_model, IMGSZ, opset=17, dynamic_batch=True)
    assert graph_summary(exp.model)["opset"] == 17
    save_onnx(exp.model, tmp_path / "m.onnx")
    sess = ort_run.session(tmp_path / "m.onnx")
    x = np.random.default_rng(0).random((2, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = ort_run.run(sess, x)
    with torch.no_grad():
        ref = dense_model(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-3


def test_export_errors(dense_model, tmp_path):
    with pytest.raises(ExportError, match="multiples of 32"):
        export_onnx(dense_model, 50)
    with pytest.raises(ExportError, match="opset"):
        export_onnx(dense_model, IMGSZ, opset=3)
    with pytest.raises(ExportError, match=r"one decoded tensor \[B, N, C\]; Conv2d gives 1 output\(s\) of rank \[4\]"):
        export_onnx(torch.nn.Conv2d(3, 3, 1), IMGSZ)
    with pytest.raises(ExportError, match="not found"):
        load_onnx(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ExportError, match="bad.onnx"):
        load_onnx(tmp_path / "bad.onnx")


def test_onnxsim_notes_do_not_reach_the_console(dense_model, capfd):
    """onnxsim's per-node 'failed to run ... skip' notes (inputs not constant: harmless) are not shown; any
    other text it writes still is (on stderr, so stdout stays clean for --json)."""
    import os
    import sys

    from edgeprune.export.onnx_export import _quiet_onnxsim, export_onnx

    export_onnx(dense_model, 64)
    out, err = capfd.readouterr()
    assert "failed to run" not in out + err and "Checking 0/" not in out + err
    with _quiet_onnxsim():
        os.write(1, b'WARNING: failed to run "Unsqueeze" op (name is "/detect/Unsqueeze"), skip...\n')
        os.write(2, b"something onnxsim really means\n")
        print("python-side progress")
        sys.stdout.flush()
    out, err = capfd.readouterr()
    assert out == "" and err == "something onnxsim really means\n"


def test_simplified_graph_is_checked_by_running_both(dense_export, dense_model):
    """export_onnx compares the simplified graph with the original on a random input (same_outputs): a
    graph that computes the same passes; one with a changed weight is refused, naming the output."""
    from onnx import numpy_helper

    from edgeprune.export.onnx_export import same_outputs

    raw = export_onnx(dense_model, IMGSZ, do_simplify=False).model
    same_outputs(raw, dense_export.model, atol=1e-3)
    changed = onnx.ModelProto()
    changed.CopyFrom(dense_export.model)
    head_conv = [n for n in changed.graph.node if n.op_type == "Conv"][-1]       # a head output conv
    init = next(i for i in changed.graph.initializer if i.name == head_conv.input[2])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
    with pytest.raises(ExportError, match=r"onnxsim changed output 'output' on a random input: max \|difference\|"):
        same_outputs(raw, changed, atol=1e-3)
