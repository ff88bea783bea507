"""YOLOv8/YOLO11-style detector family: C2f / C3k2 / C2PSA blocks, SPPF, and the anchor-free decoupled
head with distribution focal loss (DFL) box regression.

The spec (family "edgeprune-yolov8") lists the resolved layers (channels after the width multiple,
repeats after the depth multiple), so the n/s/m presets, imported ultralytics models (YOLOv5u, YOLOv8,
YOLO11) and pruned children are all one builder: `widths` overrides any Conv by its module path, as in
the YOLOv5-style family. Layer i is `layers.i`; the head is `detect` (`detect.cv2.<level>` = box branch,
`detect.cv3.<level>` = class branch).
Modes:
- train mode: forward returns the raw head maps, a list of 3 tensors [B, 4*reg_max + nc, H, W]
  (box-distribution logits first, then class logits), what the loss and the pruner's trace read;
- eval mode: forward returns decoded predictions [B, N, 4+nc] = (cx, cy, w, h) in input pixels and
  per-class probabilities (sigmoid); no objectness. Manifest `output_layout` "anchor_free_decoded";
  jetson/postprocess.py decodes it (score = best class probability).
`forward_features` returns the three neck outputs (P3, P4, P5).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .blocks import C2PSA, C3, SPPF, C2f, C3k2, Concat, Conv, DetectorBase, WidthTable, fixed_width

OUTPUT_LAYOUT = "anchor_free_decoded"

class DFLDetect(nn.Module):
    """Anchor-free decoupled head: per level a box branch (two 3x3 Convs, then 4*reg_max logits: a
    distribution over 0..reg_max-1 grid cells for each of left/top/right/bottom, Li et al.'s GFL) and a
    class branch (two 3x3 Convs, or depthwise 3x3 + 1x1 pairs for YOLO11, then nc logits)."""

    def __init__(self, num_classes: int, channels: list[int], strides: list[int], reg_max: int,
                 dw_cls: bool, widths: WidthTable):
        super().__init__()
        self.nc, self.nl, self.reg_max = num_classes, len(channels), reg_max
        self.no = num_classes + 4 * reg_max
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float32), persistent=False)
        c2 = max(16, channels[0] // 4, reg_max * 4)
        c3 = max(channels[0], min(num_classes, 100))
        cv2, cv3 = [], []
        for i, c in enumerate(channels):
            p = f"detect.cv2.{i}"
            a = widths(f"{p}.0", c2)
            b = widths(f"{p}.1", c2)
            cv2.append(nn.Sequential(Conv(c, a, 3), Conv(a, b, 3), nn.Conv2d(b, 4 * reg_max, 1)))
            p = f"detect.cv3.{i}"
            if dw_cls:
                a = widths(f"{p}.0.1", c3)
                b = widths(f"{p}.1.1", c3)
                cv3.append(nn.Sequential(
                    nn.Sequential(Conv(c, fixed_width(widths, f"{p}.0.0", c), 3, g=c), Conv(c, a, 1)),
                    nn.Sequential(Conv(a, fixed_width(widths, f"{p}.1.0", a), 3, g=a), Conv(a, b, 1)),
                    nn.Conv2d(b, num_classes, 1)))
            else:
                a = widths(f"{p}.0", c3)
                b = widths(f"{p}.1", c3)
                cv3.append(nn.Sequential(Conv(c, a, 3), Conv(a, b, 3), nn.Conv2d(b, num_classes, 1)))
        self.cv2, self.cv3 = nn.ModuleList(cv2), nn.ModuleList(cv3)

    def init_biases(self) -> None:
        """Box logits start flat (bias 1); class prior ~5 objects of nc classes per 640x640 image."""
        for a, b, s in zip(self.cv2, self.cv3, self.stride.tolist()):
            with torch.no_grad():
                a[-1].bias.fill_(1.0)
                b[-1].bias.fill_(math.log(5 / self.nc / (640 / s) ** 2))

    def forward(self, feats: list[torch.Tensor]):
        raw = [torch.cat((self.cv2[i](f), self.cv3[i](f)), 1) for i, f in enumerate(feats)]
        if self.training:
            return raw
        return self.decode(raw)

    def anchor_points(self, raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell centres in grid units [N, 2] (x, y) and each one's stride [N, 1], level after level."""
        pts, strides = [], []
        for i, x in enumerate(raw):
            ny, nx = x.shape[2], x.shape[3]
            sy = torch.arange(ny, device=x.device, dtype=torch.float32) + 0.5
            sx = torch.arange(nx, device=x.device, dtype=torch.float32) + 0.5
            gy, gx = torch.meshgrid(sy, sx, indexing="ij")
            pts.append(torch.stack((gx, gy), -1).view(-1, 2))
            strides.append(torch.full((ny * nx, 1), 1.0, device=x.device) * self.stride[i])
        return torch.cat(pts), torch.cat(strides)

    def split_raw(self, raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> box-distribution logits [B, N, 4, reg_max] and class logits [B, N, nc]."""
        bs = raw[0].shape[0]
        x = torch.cat([r.flatten(2) for r in raw], 2).permute(0, 2, 1)
        return x[..., :4 * self.reg_max].reshape(bs, -1, 4, self.reg_max), x[..., 4 * self.reg_max:]

    def distances(self, box_logits: torch.Tensor) -> torch.Tensor:
        """Expected (left, top, right, bottom) distance in grid cells of each side's distribution."""
        return (box_logits.softmax(-1) * self.proj.to(box_logits.dtype)).sum(-1)

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        box, cls = self.split_raw(raw)
        pts, strides = self.anchor_points(raw)
        d = self.distances(box)
        x1y1 = pts - d[..., :2]
        x2y2 = pts + d[..., 2:]
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1) * strides
        return torch.cat((xywh, cls.sigmoid()), -1)


_BLOCKS = {"C2f": C2f, "C3k2": C3k2, "C3": C3}


class DetectorV8(DetectorBase):
    output_layout = OUTPUT_LAYOUT

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = spec
        widths = WidthTable(spec["widths"])
        layers: list[nn.Module] = []
        ch: list[int] = []
        self.froms: list[int | list[int]] = []
        for i, la in enumerate(spec["layers"]):
            path, kind, f = f"layers.{i}", la["type"], la["from"]
            f_abs = [i - 1 if j < 0 else j for j in f] if isinstance(f, list) else (i - 1 if f < 0 else f)
            self.froms.append(f_abs)
            c_in = None if isinstance(f_abs, list) else (3 if f_abs < 0 else ch[f_abs])
            if kind == "Conv":
                m: nn.Module = Conv(c_in, widths(path, la["c"]), la["k"], la["s"], la.get("p"))
            elif kind in _BLOCKS:
                extra = {"c3k": la["c3k"]} if kind == "C3k2" else {}
                shortcut = la.get("shortcut", True)
                m = _BLOCKS[kind](path, c_in, la["c"], la["n"], shortcut, widths, la.get("e", 0.5), **extra)
            elif kind == "SPPF":
                m = SPPF(path, c_in, la["c"], widths, la.get("k", 5))
            elif kind == "C2PSA":
                m = C2PSA(path, c_in, la["c"], la["n"], widths)
            elif kind == "Upsample":
                m = nn.Upsample(scale_factor=2.0, mode="nearest")
            else:
                m = Concat()
            if kind == "Concat":
                ch.append(sum(ch[j] for j in f_abs))
            elif kind == "Upsample":
                ch.append(c_in)
            else:
                ch.append(m.out_channels)
            layers.append(m)
        self.layers = nn.ModuleList(layers)
        self.head_from = list(spec["head"]["from"])
        self.detect = DFLDetect(spec["num_classes"], [ch[j] for j in self.head_from], spec["strides"],
                                spec["reg_max"], bool(spec["head"].get("dw_cls")), widths)
        widths.check_all_used()
        # outputs a later layer (or the head) reads again: kept while running forward_features
        used = {j for f in self.froms for j in (f if isinstance(f, list) else [f])} | set(self.head_from)
        self._keep = sorted(used)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        for i, (m, f) in enumerate(zip(self.layers, self.froms)):
            if isinstance(f, list):
                x = m([saved[j] if j != i - 1 else x for j in f])
            else:
                x = m(x if f == i - 1 else saved[f])
            if i in self._keep:
                saved[i] = x
        return [saved[j] for j in self.head_from]

    def forward(self, x: torch.Tensor):
        return self.detect(self.forward_features(x))

    def prediction_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per level, the box and class branches' last hidden features side by side (the inputs of their final
        1x1 convs): the decoupled head's conv -> BN blocks are prunable, and the neck outputs alone would
        score masking them as free (the solver would cut them to the minimum)."""
        d = self.detect
        return [torch.cat((d.cv2[i][:-1](f), d.cv3[i][:-1](f)), 1) for i, f in enumerate(self.forward_features(x))]

