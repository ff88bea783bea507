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

from ..errors import ModelError
from .blocks import C2PSA, C3, SPPF, C2f, C3k2, Concat, Conv, WidthTable, fixed_width
from .spec import make_divisible
from .yolo import DetectorBase

OUTPUT_LAYOUT = "anchor_free_decoded"

# Published architectures, as (from, repeats, type, args) at width 1.0: args[0] is the output width.
# C2f args: [c, shortcut]; C3k2: [c, c3k, e]; C3: [c, shortcut]; SPPF: [c, k]; Conv: [c, k, s(, p)].
_YOLOV8 = [
    (-1, 1, "Conv", [64, 3, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 3, "C2f", [128, True]),
    (-1, 1, "Conv", [256, 3, 2]), (-1, 6, "C2f", [256, True]), (-1, 1, "Conv", [512, 3, 2]),
    (-1, 6, "C2f", [512, True]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 3, "C2f", [1024, True]),
    (-1, 1, "SPPF", [1024, 5]),                                                       # 9
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 6], 1, "Concat", [1]), (-1, 3, "C2f", [512]),
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 4], 1, "Concat", [1]), (-1, 3, "C2f", [256]),  # 15 P3
    (-1, 1, "Conv", [256, 3, 2]), ([-1, 12], 1, "Concat", [1]), (-1, 3, "C2f", [512]),  # 18 P4
    (-1, 1, "Conv", [512, 3, 2]), ([-1, 9], 1, "Concat", [1]), (-1, 3, "C2f", [1024]),  # 21 P5
]
_YOLO11 = [
    (-1, 1, "Conv", [64, 3, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 2, "C3k2", [256, False, 0.25]),
    (-1, 1, "Conv", [256, 3, 2]), (-1, 2, "C3k2", [512, False, 0.25]), (-1, 1, "Conv", [512, 3, 2]),
    (-1, 2, "C3k2", [512, True]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 2, "C3k2", [1024, True]),
    (-1, 1, "SPPF", [1024, 5]), (-1, 2, "C2PSA", [1024]),                            # 10
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 6], 1, "Concat", [1]), (-1, 2, "C3k2", [512, False]),
    (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 4], 1, "Concat", [1]), (-1, 2, "C3k2", [256, False]),  # 16
    (-1, 1, "Conv", [256, 3, 2]), ([-1, 13], 1, "Concat", [1]), (-1, 2, "C3k2", [512, False]),  # 19
    (-1, 1, "Conv", [512, 3, 2]), ([-1, 10], 1, "Concat", [1]), (-1, 2, "C3k2", [1024, True]),  # 22
]
# arch -> (layers, head inputs, {size: (depth, width, max_channels)})
ARCHS = {
    "yolov8": (_YOLOV8, [15, 18, 21], {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768)}),
    "yolo11": (_YOLO11, [16, 19, 22], {"n": (0.50, 0.25, 1024), "s": (0.50, 0.50, 1024), "m": (0.50, 1.00, 512)}),
}
LAYER_TYPES = ("Conv", "C2f", "C3k2", "C3", "SPPF", "C2PSA", "Upsample", "Concat")
STRIDES = [8, 16, 32]
REG_MAX = 16


def resolve_layers(rows: list[Any], depth: float, width: float, max_channels: float,
                   scale: str | None = None, source: str = "architecture") -> list[dict[str, Any]]:
    """(from, repeats, type, args) rows at width 1.0 -> the spec's resolved layer dicts. The scaling rules
    are the published ones: width = ceil8(min(c, max_channels) * width); repeats = max(round(n*depth), 1)
    when n > 1; C3k2 uses C3k inner blocks from size m up; a bare SPPF row has an activated cv1."""
    out: list[dict[str, Any]] = []
    ch: list[int] = []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise ModelError(f"{source}: layer {i} must be [from, repeats, module, args], got {row!r}")
        f, n, kind, args = row
        kind = str(kind).removeprefix("nn.")
        args = list(args or [])
        if kind not in LAYER_TYPES:
            raise ModelError(f"{source}: layer {i} is a {kind!r} block, which edgeprune does not know "
                             f"(known: {', '.join(LAYER_TYPES)})")
        n = max(round(n * depth), 1) if n > 1 else int(n)
        layer: dict[str, Any] = {"type": kind, "from": f}
        if kind == "Concat":
            c2 = sum(ch[j] for j in f)
        elif kind == "Upsample":
            if args[1:2] != [2] or (len(args) > 2 and args[2] != "nearest"):
                raise ModelError(f"{source}: layer {i}: only nearest 2x upsampling is supported, got {args}")
            c2 = ch[f]
        else:
            c2 = make_divisible(min(args[0], max_channels) * width, 8)
            layer["c"] = c2
            if kind == "Conv":
                layer.update(k=int(args[1]) if len(args) > 1 else 1, s=int(args[2]) if len(args) > 2 else 1)
                if len(args) > 3:
                    layer["p"] = int(args[3])
            elif kind == "SPPF":
                if len(args) > 2:
                    raise ModelError(f"{source}: layer {i}: SPPF with pooling count/shortcut arguments "
                                     f"(YOLO26 style) is not supported: {args}")
                layer["k"] = int(args[1]) if len(args) > 1 else 5
            elif kind == "C2f":
                layer.update(n=n, shortcut=bool(args[1]) if len(args) > 1 else False,
                             e=float(args[2]) if len(args) > 2 else 0.5)
            elif kind == "C3":
                layer.update(n=n, shortcut=bool(args[1]) if len(args) > 1 else True,
                             e=float(args[2]) if len(args) > 2 else 0.5)
            elif kind == "C3k2":
                c3k = bool(args[1]) if len(args) > 1 else False
                if len(args) > 3:
                    raise ModelError(f"{source}: layer {i}: C3k2 with attention/group arguments is not supported: {args}")
                layer.update(n=n, c3k=c3k or scale in ("m", "l", "x"), e=float(args[2]) if len(args) > 2 else 0.5)
            elif kind == "C2PSA":
                if c2 != ch[f]:
                    raise ModelError(f"{source}: layer {i}: C2PSA needs equal input and output widths")
                layer["n"] = n
        out.append(layer)
        ch.append(c2)
    return out


def new_spec_v8(num_classes: int, names: list[str] | None = None, size: str = "n",
                arch: str = "yolov8") -> dict[str, Any]:
    from .spec import validate_spec
    if arch not in ARCHS:
        raise ModelError(f"model.family: unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    rows, head_from, sizes = ARCHS[arch]
    if size not in sizes:
        raise ModelError(f"model.size: unknown size {size!r}; choose one of {sorted(sizes)}")
    depth, width, max_ch = sizes[size]
    layers = resolve_layers(rows, depth, width, max_ch, size)
    spec = {
        "family": "edgeprune-yolov8", "version": 1, "arch": arch, "size": size,
        "depth_multiple": depth, "width_multiple": width,
        "num_classes": int(num_classes),
        "names": list(names) if names else [f"class{i}" for i in range(num_classes)],
        "strides": list(STRIDES), "reg_max": REG_MAX,
        "layers": layers,
        # YOLO11 (any C3k2) uses depthwise convs in the class branch; YOLOv8/v5u plain 3x3 convs
        "head": {"from": head_from, "dw_cls": any(la["type"] == "C3k2" for la in layers)},
        "widths": {},
    }
    return validate_spec(spec)


def validate_v8(spec: dict[str, Any], source: str) -> None:
    """Family-specific checks (the common keys are checked by spec.validate_spec)."""
    reg_max = spec.get("reg_max")
    if not isinstance(reg_max, int) or isinstance(reg_max, bool) or reg_max < 2:
        raise ModelError(f"{source}: reg_max must be an integer > 1, got {spec.get('reg_max')!r}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ModelError(f"{source}: key 'layers' must be a non-empty list")
    for i, la in enumerate(layers):
        if not isinstance(la, dict) or la.get("type") not in LAYER_TYPES:
            raise ModelError(f"{source}: layers[{i}] must be an object with type one of {list(LAYER_TYPES)}")
        refs = la.get("from")
        refs = refs if isinstance(refs, list) else [refs]
        if not refs or not all(isinstance(r, int) and not isinstance(r, bool) and (-1 <= r < 0 or 0 <= r < i)
                               and (i > 0 or r == -1) for r in refs):
            raise ModelError(f"{source}: layers[{i}].from must name earlier layers, got {la.get('from')!r}")
        for key in ("c", "n", "k", "s", "p"):
            if key in la and (not isinstance(la[key], int) or isinstance(la[key], bool) or la[key] < 0):
                raise ModelError(f"{source}: layers[{i}].{key} must be a non-negative integer")
    head = spec.get("head")
    if (not isinstance(head, dict) or not isinstance(head.get("from"), list) or len(head["from"]) != 3
            or not all(isinstance(j, int) and 0 <= j < len(layers) for j in head["from"])):
        raise ModelError(f"{source}: head.from must list 3 layer indices (P3, P4, P5)")
    if spec["strides"] != STRIDES:
        raise ModelError(f"{source}: strides must be {STRIDES}")


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

