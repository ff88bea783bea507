"""A user's own detector (defined in a module outside the package, built by a factory) goes through the CLI:
`prune --model` -> `export` -> `verify` -> `detect`, and the device's detections are the pruned model's."""
import json
import textwrap

import numpy as np
import pytest
import torch

from edgeprune.cli import main

IMGSZ = 64

USER_DETECTOR = textwrap.dedent('''
    import torch
    from torch import nn

    def cbs(c_in, c_out, stride=1):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())

    class TinyDet(nn.Module):
        """Anchor-free, one level at stride 8; forward decodes: (cx, cy, w, h) in input pixels, class probs."""
        strides = [8]

        def __init__(self, nc=2):
            super().__init__()
            self.stem = nn.Sequential(cbs(3, 16, 2), cbs(16, 32, 2))
            self.res = nn.Sequential(nn.Conv2d(32, 16, 1), nn.ReLU(), cbs(16, 32))   # its first conv has no BN
            self.down = cbs(32, 48, 2)
            self.head = nn.Conv2d(48, 4 + nc, 1)

        def forward(self, x):
            y = self.stem(x)
            y = y + self.res(y)
            p = self.head(self.down(y))
            b, c, h, w = p.shape
            gy, gx = torch.meshgrid(torch.arange(h, dtype=p.dtype), torch.arange(w, dtype=p.dtype), indexing="ij")
            xy = (p[:, :2].sigmoid() + torch.stack((gx, gy))) * 8
            wh = p[:, 2:4].sigmoid() * 32
            return torch.cat((xy, wh, p[:, 4:].sigmoid()), 1).flatten(2).transpose(1, 2)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = cbs(3, 8, 2)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    def build():
        torch.manual_seed(0)
        return TinyDet()

    def classifier():
        return Classifier()
''')


@pytest.fixture
def user_detector(tmp_path, monkeypatch):
    pkg = tmp_path / "src" / "user_det_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "net.py").write_text(USER_DETECTOR)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    from user_det_pkg.net import build
    model = build()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.2)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    torch.save(model.state_dict(), tmp_path / "net.pt")
    return tmp_path / "net.pt"


def test_user_detector_prune_export_verify_detect(user_detector, tmp_path, capfd):
    from PIL import Image

    from edgeprune.prune import anymodel
    from jetson.postprocess import postprocess, scale_boxes
    from jetson.preprocess import preprocess

    pruned, bundle = tmp_path / "pruned", tmp_path / "bundle"
    assert main(["prune", "--model", "user_det_pkg.net:build", "--weights", str(user_detector), "--global-ratio",
                 "0.5", "--round-to", "1", "--min-channels", "1", "--imgsz", str(IMGSZ), "--out", str(pruned)]) == 0
    widths = json.loads((pruned / "model.json").read_text())["modules"]
    assert widths["res.0"]["out_channels"] < 16          # the BN-less producer is ranked by its weights too
    assert widths["stem.1.0"]["out_channels"] < 32 and widths["head"]["out_channels"] == 6
    capfd.readouterr()

    assert main(["export", str(pruned), "--out", str(bundle), "--names", "car,boat", "--parity-images", "2",
                 "--json"]) == 0
    res = json.loads(capfd.readouterr().out)
    m = res["manifest"]
    assert m["model"]["output_layout"] == "anchor_free_decoded" and m["classes"] == ["car", "boat"]
    assert m["strides"] == [8] and m["extra_files"]["model"] == "model.json" and "arch" not in m["extra_files"]
    assert res["verify"]["layers"] == 6 and res["verify"]["junctions"] == 1 and res["parity"]["max_abs_diff"] < 1e-3

    assert main(["verify", str(bundle), "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["verify"]["junctions"] == 1

    img = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "scene.png")
    assert main(["detect", str(bundle), "--source", str(tmp_path / "scene.png"), "--conf", "0.3"]) == 0
    dets = json.loads(capfd.readouterr().out.splitlines()[0])["detections"]
    model, _ = anymodel.load(pruned)
    x, meta = preprocess(img, IMGSZ)
    with torch.no_grad():
        boxes, scores, classes = postprocess(model.eval()(torch.from_numpy(x)).numpy(), 0.3, 0.45,
                                             layout="anchor_free_decoded")[0]
    assert len(dets) == len(scores) > 0
    assert [d["class_name"] for d in dets] == [["car", "boat"][c] for c in classes]
    assert np.allclose([d["box"] for d in dets], scale_boxes(boxes, meta), atol=0.05)

    # the bundle's model.json is what verify checks the graph against: a changed width is caught
    doc = json.loads((bundle / "model.json").read_text())
    doc["modules"]["down.0"]["out_channels"] += 1
    (bundle / "model.json").write_text(json.dumps(doc))
    assert main(["verify", str(bundle)]) == 1
    assert "(torch layer down.0): in/out channels" in capfd.readouterr().err


def test_dense_user_model_export_and_what_cannot_be_decoded(user_detector, tmp_path, capfd):
    assert main(["export", "--model", "user_det_pkg.net:build", "--weights", str(user_detector), "--out",
                 str(tmp_path / "b"), "--output-layout", "anchor_free_decoded", "--imgsz", str(IMGSZ),
                 "--parity-images", "1", "--json"]) == 0
    m = json.loads(capfd.readouterr().out)["manifest"]
    assert m["classes"] == ["class0", "class1"] and m["recombination"]["junctions"] == 0
    cases = [(["--model", "user_det_pkg.net:classifier"], "returns a tensor [2, 10]; `detect` needs"),
             (["--model", "user_det_pkg.net:build", "--names", "a,b,c"],
              "6 columns per box, 3 class names need 7 (anchor_free_decoded) or 8"),
             (["--model", "user_det_pkg.net:build"], "give --names"),
             (["--model", "user_det_pkg.net:build", "--output-layout", "yolov5_decoded", "--names", "a,b"],
              "2 class names for 1 classes"),
             (["--model", "user_det_pkg.net:build", "--imgsz", "60", "--names", "a,b"], "multiples of 8")]
    for args, message in cases:
        assert main(["export", *args, "--out", str(tmp_path / "x")]) == 1
        assert message in capfd.readouterr().err, args
    assert main(["export", str(user_detector), "--model", "user_det_pkg.net:build", "--out", str(tmp_path / "x")]) == 2
