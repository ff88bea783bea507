"""Building blocks of both families (YOLOv5-style; YOLOv8/YOLO11-style: C2f, C3k2, C2PSA). Every Conv's
output width is resolved by its module path through a `WidthTable`, so one builder makes both dense and
pruned models."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ModelError


class WidthTable:
    """Resolves output widths: an override from the spec's `widths` or the dense default.
    Records every path it resolved so unknown keys in the spec can be reported."""

    def __init__(self, overrides: dict[str, int]):
        self.overrides = dict(overrides)
        self.used: set[str] = set()

    def __call__(self, path: str, default: int, allow_zero: bool = False) -> int:
        self.used.add(path)
        width = int(self.overrides.get(path, default))
        if width == 0 and not allow_zero:
            raise ModelError(f"spec widths[{path!r}] is 0: only the inner width of a residual bottleneck (its cv1) "
                             "may be 0 (a depth-pruned block)")
        return width

    def check_all_used(self) -> None:
        unknown = sorted(set(self.overrides) - self.used)
        if unknown:
            raise ModelError(f"spec widths name layers this architecture does not have: {unknown[:5]}"
                             " (a ratios/spec file for another architecture?)")


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU (Identity when `act` is False)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels


class Bottleneck(nn.Module):
    """k[0] x k[0] -> k[1] x k[1] (1x1 -> 3x3 in C3, 3x3 -> 3x3 in C2f), with a residual add when
    `shortcut` (the add is what residual reconstruction keeps consistent: its input and cv2's output must
    have the same channels).

    Depth pruning: a shortcut block whose inner width (cv1) is 0 has no branch left; what the branch still
    added (cv2 of a constant input: act(BN(0)) per channel) is the parameter `shift`, so the block is
    x + shift (prune/apply.py removes such a block; the spec says `widths[path.cv1] = 0`)."""

    def __init__(self, path: str, c_in: int, c_hidden: int, c_out: int, shortcut: bool, widths: WidthTable,
                 k: tuple[int, int] = (1, 3)):
        super().__init__()
        self.add = shortcut
        hidden = widths(f"{path}.cv1", c_hidden, allow_zero=shortcut)
        if hidden == 0:
            widths.used.add(f"{path}.cv2")   # a pruned spec lists it; the branch is gone
            self.cv1 = self.cv2 = None
            self.shift = nn.Parameter(torch.zeros(c_in))
            return
        self.cv1 = Conv(c_in, hidden, k[0], 1)
        out = widths(f"{path}.cv2", c_out)
        self.cv2 = Conv(hidden, out, k[1], 1)
        if shortcut and out != c_in:
            raise ModelError(f"{path}: residual add needs cv2 width ({out}) == input width ({c_in})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cv1 is None:
            return x + self.shift.view(1, -1, 1, 1)
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y

    def remove_branch(self, shift: torch.Tensor) -> None:
        """Depth pruning: drop cv1 and cv2; the block becomes x + shift (the branch's constant output)."""
        if not self.add:
            raise ModelError("only a residual bottleneck (shortcut) can lose its branch")
        self.cv1 = self.cv2 = None
        self.shift = nn.Parameter(shift.detach().clone())

    @property
    def removed(self) -> bool:
        return self.cv1 is None

    @property
    def out_channels(self) -> int:
        return self.shift.numel() if self.cv1 is None else self.cv2.out_channels


def removable_branches(model: nn.Module) -> dict[str, str]:
    """{cv1 BN path: block path} of every residual bottleneck that still has its branch: the BNs whose channels
    may all be pruned (depth pruning removes the block instead)."""
    return {f"{name}.cv1.bn": name for name, m in model.named_modules()
            if isinstance(m, Bottleneck) and m.add and not m.removed}


class C3(nn.Module):
    """CSP bottleneck with 3 convs: cv3(cat(m(cv1(x)), cv2(x)))."""

    def __init__(self, path: str, c_in: int, c_out: int, n: int, shortcut: bool, widths: WidthTable,
                 e: float = 0.5, k: tuple[int, int] = (1, 3)):
        super().__init__()
        c_ = int(c_out * e)
        w1 = widths(f"{path}.cv1", c_)
        self.cv1 = Conv(c_in, w1, 1, 1)
        w2 = widths(f"{path}.cv2", c_)
        self.cv2 = Conv(c_in, w2, 1, 1)
        blocks = []
        c_prev = w1
        for i in range(n):
            b = Bottleneck(f"{path}.m.{i}", c_prev, c_, c_prev if shortcut else c_, shortcut, widths, k)
            blocks.append(b)
            c_prev = b.out_channels
        self.m = nn.Sequential(*blocks)
        self.cv3 = Conv(c_prev + w2, widths(f"{path}.cv3", c_out), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))

    @property
    def out_channels(self) -> int:
        return self.cv3.out_channels


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools, concatenated."""

    def __init__(self, path: str, c_in: int, c_out: int, widths: WidthTable, k: int = 5):
        super().__init__()
        c_ = widths(f"{path}.cv1", c_in // 2)
        self.cv1 = Conv(c_in, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, widths(f"{path}.cv2", c_out), 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))

    @property
    def out_channels(self) -> int:
        return self.cv2.out_channels


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


def fixed_width(widths: WidthTable, path: str, width: int) -> int:
    """A Conv whose width the topology fixes (a depthwise conv, attention projections): a spec may list it
    (pruned specs list every Conv) but only with that width."""
    got = widths(path, width)
    if got != width:
        raise ModelError(f"{path}: width {got} given, but this layer's width is fixed at {width} by its input")
    return width


def _even(path: str, width: int) -> int:
    if width % 2:
        raise ModelError(f"{path}: width {width} must be even (its output is chunked in two halves)")
    return width


class C2f(nn.Module):
    """CSP with two convs and every bottleneck's output kept (YOLOv8): cv1 -> chunk(2) = [a, b];
    b runs through the bottlenecks one after another; cv2(cat([a, b, m0(b), m1(m0(b)), ...])).
    chunk() (not split with literal sizes) lets the pruner couple the halves and still prune them."""

    def __init__(self, path: str, c_in: int, c_out: int, n: int, shortcut: bool, widths: WidthTable,
                 e: float = 0.5):
        super().__init__()
        c = int(c_out * e)
        w1 = _even(f"{path}.cv1", widths(f"{path}.cv1", 2 * c))
        self.cv1 = Conv(c_in, w1, 1, 1)
        blocks = []
        c_prev = w1 // 2
        for i in range(n):
            blocks.append(self._inner(f"{path}.m.{i}", c_prev, c, shortcut, widths))
            c_prev = blocks[-1].out_channels
        self.m = nn.ModuleList(blocks)
        self.cv2 = Conv(w1 + sum(b.out_channels for b in blocks), widths(f"{path}.cv2", c_out), 1, 1)

    def _inner(self, path: str, c_in: int, c: int, shortcut: bool, widths: WidthTable) -> nn.Module:
        return Bottleneck(path, c_in, c, c_in if shortcut else c, shortcut, widths, (3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        ys = [a, b]
        for m in self.m:
            b = m(b)
            ys.append(b)
        return self.cv2(torch.cat(ys, 1))

    @property
    def out_channels(self) -> int:
        return self.cv2.out_channels


class C3k2(C2f):
    """C2f whose inner blocks are either bottlenecks with a c/2 hidden width or, with `c3k`, C3k blocks
    (a C3 with two 3x3 bottlenecks) (YOLO11)."""

    def __init__(self, path: str, c_in: int, c_out: int, n: int, shortcut: bool, widths: WidthTable,
                 e: float = 0.5, c3k: bool = False):
        self.c3k = c3k
        super().__init__(path, c_in, c_out, n, shortcut, widths, e)

    def _inner(self, path: str, c_in: int, c: int, shortcut: bool, widths: WidthTable) -> nn.Module:
        if self.c3k:
            return C3(path, c_in, c, 2, shortcut, widths, 0.5, (3, 3))
        return Bottleneck(path, c_in, c // 2, c_in if shortcut else c, shortcut, widths, (3, 3))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions (YOLO11's PSA). The head layout (qkv's output, the
    depthwise positional conv on v) keeps the dense width `dim`: the pruner cannot follow the reshapes into
    heads and freezes them. qkv's input and proj's output are the block's residual stream, `c_in` wide,
    which may be pruned."""

    def __init__(self, path: str, c_in: int, dim: int, num_heads: int, widths: WidthTable,
                 attn_ratio: float = 0.5):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ModelError(f"{path}: {dim} channels do not split into {num_heads} attention heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        h = dim + 2 * self.key_dim * num_heads
        self.qkv = Conv(c_in, fixed_width(widths, f"{path}.qkv", h), 1, act=False)
        self.proj = Conv(dim, fixed_width(widths, f"{path}.proj", c_in), 1, act=False)
        self.pe = Conv(dim, fixed_width(widths, f"{path}.pe", dim), 3, 1, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the channel count comes from the head layout, not from x (x may be pruned)
        b, _, h, w = x.size()
        n, c = h * w, self.num_heads * self.head_dim
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, n).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        y = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(y)


class PSABlock(nn.Module):
    """x + attention(x), then x + ffn(x) (ffn = 1x1 to 2*dim, 1x1 back without activation)."""

    def __init__(self, path: str, c_in: int, dim: int, widths: WidthTable, attn_ratio: float = 0.5):
        super().__init__()
        self.attn = Attention(f"{path}.attn", c_in, dim, max(dim // 64, 1), widths, attn_ratio)
        hidden = widths(f"{path}.ffn.0", 2 * dim)
        self.ffn = nn.Sequential(Conv(c_in, hidden, 1),
                                 Conv(hidden, fixed_width(widths, f"{path}.ffn.1", c_in), 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """cv1 -> chunk(2) = [a, b]; b through n PSA blocks; cv2(cat([a, b])) (YOLO11). Input and output widths
    are equal in the published models; the attention's head layout stays unpruned (see Attention)."""

    def __init__(self, path: str, c_in: int, c_out: int, n: int, widths: WidthTable, e: float = 0.5):
        super().__init__()
        c = int(c_out * e)      # c_out: the dense width (== dense input width), fixes the attention heads
        w1 = _even(f"{path}.cv1", widths(f"{path}.cv1", 2 * c))
        self.cv1 = Conv(c_in, w1, 1, 1)
        self.m = nn.Sequential(*(PSABlock(f"{path}.m.{i}", w1 // 2, c, widths) for i in range(n)))
        self.cv2 = Conv(w1, widths(f"{path}.cv2", c_out), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat([a, self.m(b)], 1))

    @property
    def out_channels(self) -> int:
        return self.cv2.out_channels


class DetectorBase(nn.Module):
    """What the detectors of every family share: `spec`, its class names and the BN / head-bias init."""
    spec: dict[str, Any]
    detect: nn.Module

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03
        self.detect.init_biases()

    @property
    def num_classes(self) -> int:
        return self.spec["num_classes"]

    def conv_widths(self) -> dict[str, int]:
        """Output width of every Conv block by module path (the keys of spec['widths']); a depth-pruned
        bottleneck's cv1 is listed with width 0."""
        out = {name: m.out_channels for name, m in self.named_modules() if isinstance(m, Conv)}
        out.update({f"{name}.cv1": 0 for name, m in self.named_modules() if isinstance(m, Bottleneck) and m.removed})
        return out

    @property
    def names(self) -> list[str]:
        return self.spec["names"]

    def prediction_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per level, the features the head's final 1x1 prediction convs read: what the ratio solver's attention
        deviation scores, so that every prunable BN (the head's too, where it has some) changes it. Here the
        neck outputs: this head is those 1x1 convs alone."""
        return self.forward_features(x)
