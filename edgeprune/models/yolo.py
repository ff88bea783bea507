"""YOLOv5-style detector (v6 layout: Conv stem, C3 + residual bottlenecks, SPPF, PAN neck, 3-scale head).

Layer indices follow YOLOv5's yaml so module paths look familiar (`layers.8.m.0.cv2`, ...).
Modes:
- train mode: forward returns the raw head maps, a list of 3 tensors [B, na*(5+nc), H, W] (the loss
  reshapes them; the pruner traces this mode: conv/bn/act/cat/add/upsample/pool only).
- eval mode: forward returns decoded predictions [B, N, 5+nc] = (cx, cy, w, h) in input pixels,
  objectness and per-class probabilities, all sigmoid-activated. This is the ONNX output layout that
  jetson/postprocess.py decodes (NMS happens there, in numpy, for host and device alike).
`forward_features` returns the three neck outputs (P3, P4, P5) that the feature attention loss reads.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .blocks import C3, SPPF, Concat, Conv, DetectorBase, WidthTable
from .spec import make_divisible, validate_spec


class Detect(nn.Module):
    def __init__(self, num_classes: int, anchors: list[list[float]], strides: list[int], channels: list[int]):
        super().__init__()
        self.nc = num_classes
        self.no = num_classes + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)

    def init_biases(self, image_size: int = 640) -> None:
        """YOLOv5's prior: ~8 objects per image for objectness, a uniform-ish class prior."""
        for conv, s in zip(self.m, self.stride.tolist()):
            b = conv.bias.view(self.na, -1)
            with torch.no_grad():
                b[:, 4] += math.log(8 / (image_size / s) ** 2)
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if self.nc > 1 else 0.0

    def forward(self, feats: list[torch.Tensor]):
        raw = [m(f) for m, f in zip(self.m, feats)]
        if self.training:
            return raw
        return self.decode(raw)

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i, x in enumerate(raw):
            bs, _, ny, nx = x.shape
            y = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            gy, gx = torch.meshgrid(torch.arange(ny, device=x.device, dtype=y.dtype),
                                    torch.arange(nx, device=x.device, dtype=y.dtype), indexing="ij")
            grid = torch.stack((gx, gy), 2).view(1, 1, ny, nx, 2)
            anchor = self.anchors[i].view(1, self.na, 1, 1, 2).to(y.dtype)
            xy = (y[..., 0:2] * 2 - 0.5 + grid) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * anchor
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).reshape(bs, -1, self.no))
        return torch.cat(out, 1)


class Detector(DetectorBase):
    output_layout = "yolov5_decoded"   # the manifest's model.output_layout of its eval-mode output

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = validate_spec(spec)
        d, w = spec["depth_multiple"], spec["width_multiple"]
        widths = WidthTable(spec["widths"])

        def ch(c: int) -> int:
            return make_divisible(c * w, 8)

        def depth(n: int) -> int:
            return max(round(n * d), 1)

        L: list[nn.Module] = []

        def conv(c_in: int, c_out: int, k: int, s: int, p: int | None = None) -> int:
            i = len(L)
            L.append(Conv(c_in, widths(f"layers.{i}", c_out), k, s, p))
            return L[-1].out_channels

        def c3(c_in: int, c_out: int, n: int, shortcut: bool) -> int:
            L.append(C3(f"layers.{len(L)}", c_in, c_out, n, shortcut, widths))
            return L[-1].out_channels

        def passthrough(module: nn.Module) -> None:
            L.append(module)

        c0 = conv(3, ch(64), 6, 2, 2)              # 0  P1/2
        c1 = conv(c0, ch(128), 3, 2)               # 1  P2/4
        c2 = c3(c1, ch(128), depth(3), True)       # 2
        c3_ = conv(c2, ch(256), 3, 2)              # 3  P3/8
        c4 = c3(c3_, ch(256), depth(6), True)      # 4
        c5 = conv(c4, ch(512), 3, 2)               # 5  P4/16
        c6 = c3(c5, ch(512), depth(9), True)       # 6
        c7 = conv(c6, ch(1024), 3, 2)              # 7  P5/32
        c8 = c3(c7, ch(1024), depth(3), True)      # 8
        L.append(SPPF(f"layers.{len(L)}", c8, ch(1024), widths))  # 9
        c9 = L[-1].out_channels
        c10 = conv(c9, ch(512), 1, 1)              # 10
        passthrough(nn.Upsample(scale_factor=2.0, mode="nearest"))  # 11
        passthrough(Concat())                      # 12 cat(11, 6)
        c13 = c3(c10 + c6, ch(512), depth(3), False)   # 13
        c14 = conv(c13, ch(256), 1, 1)             # 14
        passthrough(nn.Upsample(scale_factor=2.0, mode="nearest"))  # 15
        passthrough(Concat())                      # 16 cat(15, 4)
        c17 = c3(c14 + c4, ch(256), depth(3), False)   # 17 -> P3 out
        c18 = conv(c17, ch(256), 3, 2)             # 18
        passthrough(Concat())                      # 19 cat(18, 14)
        c20 = c3(c18 + c14, ch(512), depth(3), False)  # 20 -> P4 out
        c21 = conv(c20, ch(512), 3, 2)             # 21
        passthrough(Concat())                      # 22 cat(21, 10)
        c23 = c3(c21 + c10, ch(1024), depth(3), False)  # 23 -> P5 out
        widths.check_all_used()
        self.layers = nn.ModuleList(L)
        self.detect = Detect(spec["num_classes"], spec["anchors"], spec["strides"], [c17, c20, c23])
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        L = self.layers
        x4 = L[4](L[3](L[2](L[1](L[0](x)))))
        x6 = L[6](L[5](x4))
        x9 = L[9](L[8](L[7](x6)))
        x10 = L[10](x9)
        x13 = L[13](L[12]([L[11](x10), x6]))
        x14 = L[14](x13)
        p3 = L[17](L[16]([L[15](x14), x4]))
        p4 = L[20](L[19]([L[18](p3), x14]))
        p5 = L[23](L[22]([L[21](p4), x10]))
        return [p3, p4, p5]

    def forward(self, x: torch.Tensor):
        return self.detect(self.forward_features(x))



def build_model(spec: dict[str, Any]) -> nn.Module:
    """The detector of `spec`'s family (Detector, or models.yolov8.DetectorV8)."""
    spec = validate_spec(spec)
    if spec["family"] == "edgeprune-yolov8":
        from .yolov8 import DetectorV8
        return DetectorV8(spec)
    return Detector(spec)
