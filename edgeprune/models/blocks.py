"""Building blocks of the YOLOv5-style family. Every Conv's output width is resolved by its module
path through a `WidthTable`, so one builder makes both dense and pruned models."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError


class WidthTable:
    """Resolves output widths: an override from the spec's `widths` or the dense default.
    Records every path it resolved so unknown keys in the spec can be reported."""

    def __init__(self, overrides: dict[str, int]):
        self.overrides = dict(overrides)
        self.used: set[str] = set()

    def __call__(self, path: str, default: int) -> int:
        self.used.add(path)
        return int(self.overrides.get(path, default))

    def check_all_used(self) -> None:
        unknown = sorted(set(self.overrides) - self.used)
        if unknown:
            raise ModelError(f"spec widths name layers this architecture does not have: {unknown[:5]}"
                             " (a ratios/spec file for another architecture?)")


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels


class Bottleneck(nn.Module):
    """1x1 -> 3x3, with a residual add when `shortcut` (the add is what residual reconstruction keeps
    consistent: its input and cv2's output must have the same channels)."""

    def __init__(self, path: str, c_in: int, c_hidden: int, c_out: int, shortcut: bool, widths: WidthTable):
        super().__init__()
        hidden = widths(f"{path}.cv1", c_hidden)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        out = widths(f"{path}.cv2", c_out)
        self.cv2 = Conv(hidden, out, 3, 1)
        self.add = shortcut
        if shortcut and out != c_in:
            raise ModelError(f"{path}: residual add needs cv2 width ({out}) == input width ({c_in})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with 3 convs: cv3(cat(m(cv1(x)), cv2(x)))."""

    def __init__(self, path: str, c_in: int, c_out: int, n: int, shortcut: bool, widths: WidthTable):
        super().__init__()
        c_ = c_out // 2
        w1 = widths(f"{path}.cv1", c_)
        self.cv1 = Conv(c_in, w1, 1, 1)
        w2 = widths(f"{path}.cv2", c_)
        self.cv2 = Conv(c_in, w2, 1, 1)
        blocks = []
        c_prev = w1
        for i in range(n):
            b = Bottleneck(f"{path}.m.{i}", c_prev, c_, c_prev if shortcut else c_, shortcut, widths)
            blocks.append(b)
            c_prev = b.cv2.out_channels
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
