import json

import pytest
import torch

from edgeprune.errors import CheckpointError, ModelError
from edgeprune.models.io import load_checkpoint, model_from_checkpoint, save_checkpoint
from edgeprune.models.spec import load_spec, new_spec, save_spec, with_widths
from edgeprune.models.yolo import build_model


@pytest.mark.parametrize("size", ["n", "s", "m"])
def test_forward_shapes(size):
    model = build_model(new_spec(3, size=size))
    x = torch.zeros(1, 3, 64, 96)
    raw = model.train()(x)
    assert [tuple(r.shape) for r in raw] == [(1, 24, 8, 12), (1, 24, 4, 6), (1, 24, 2, 3)]
    dec = model.eval()(x)
    assert dec.shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8)
    dec = dec.detach()
    assert float(dec[..., 4:].min()) >= 0 and float(dec[..., 4:].max()) <= 1


def test_arbitrary_widths_build_and_round_trip(tmp_path):
    spec = new_spec(2, size="n")
    dense = build_model(spec).conv_widths()
    widths = {k: max(1, v - (i % 5)) for i, (k, v) in enumerate(dense.items())}
    # residual-tied widths must agree: C3.cv1 and each bottleneck cv2 in backbone C3s
    for c3 in ("layers.2", "layers.4", "layers.6", "layers.8"):
        tied = [k for k in widths if k == f"{c3}.cv1" or (k.startswith(f"{c3}.m.") and k.endswith(".cv2"))]
        for k in tied:
            widths[k] = 5
    spec2 = with_widths(spec, widths)
    model = build_model(spec2)
    assert model.conv_widths() == widths
    model.eval()
    out = model(torch.rand(1, 3, 64, 64))
    save_spec(spec2, tmp_path / "arch.json")
    assert load_spec(tmp_path / "arch.json") == spec2
    save_checkpoint(tmp_path / "m.pt", model)
    again = model_from_checkpoint(tmp_path / "m.pt").eval()
    assert torch.equal(again(torch.zeros(1, 3, 64, 64)), model(torch.zeros(1, 3, 64, 64)))
    assert out.shape[-1] == 7


def test_inconsistent_residual_widths_name_the_layer():
    spec = new_spec(2, size="n")
    with pytest.raises(ModelError, match="layers.2.m.0"):
        build_model(with_widths(spec, {"layers.2.m.0.cv2": 8}))


def test_widths_for_another_architecture_are_rejected():
    with pytest.raises(ModelError, match="another architecture"):
        build_model(with_widths(new_spec(2), {"backbone.conv9": 8}))


def test_bad_spec_and_checkpoint_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="bad.json"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"family": "other"}))
    with pytest.raises(ModelError, match="family"):
        load_spec(tmp_path / "wrong.json")
    model = build_model(new_spec(2))
    save_checkpoint(tmp_path / "ok.pt", model)
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["spec"]["num_classes"] == 2
