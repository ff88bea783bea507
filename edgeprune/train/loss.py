"""YOLOv5-style detection loss, written from the published formulation.

Per head level (strides 8/16/32):
- target assignment: a ground-truth box matches every anchor whose w/h ratio (either way) is < `anchor_t`,
  in its own grid cell and in the two neighbouring cells nearest to its centre (x and y), which triples
  the positives and suits the xy parametrisation below;
- box: xy = 2*sigmoid(t) - 0.5 + grid (cell units, range -0.5..1.5), wh = (2*sigmoid(t))^2 * anchor;
  loss = mean(1 - CIoU);
- objectness: BCE against the (detached, clamped) IoU of the matched prediction, 0 elsewhere, weighted per
  level by `balance` = [4, 1, 0.4] (small objects on P3 weigh most);
- class: BCE against one-hot targets on positives.
Gains are rescaled as YOLOv5 does: box by 3/nl, cls by nc/80 * 3/nl, obj by (imgsz/640)^2 * 3/nl; the
total is multiplied by the batch size.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# (dx, dy) offsets of the own cell and the four neighbours, in units of the 0.5-cell bias below.
_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)


def bbox_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired (N,4) cx,cy,w,h boxes: IoU - rho^2/c^2 - alpha*v (Zheng et al., 2020)."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(1)
    wa, ha = a[:, 2], a[:, 3] + eps
    wb, hb = b[:, 2], b[:, 3] + eps
    union = wa * ha + wb * hb - inter + eps
    iou = inter / union
    enclose = torch.max(a2, b2) - torch.min(a1, b1)
    c2 = enclose.pow(2).sum(1) + eps                      # squared diagonal of the enclosing box
    rho2 = (a[:, :2] - b[:, :2]).pow(2).sum(1)            # squared centre distance
    v = (4 / math.pi ** 2) * (torch.atan(wb / hb) - torch.atan(wa / ha)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class DetectionLoss(nn.Module):
    """Callable as `loss(raw_maps, targets)` -> (total scaled by batch size, {"box","obj","cls"} detached
    0-d tensors on the loss's device: reading them is the caller's choice, so a training step never waits for
    the device).

    raw_maps: the model's train-mode output, 3 tensors [B, na*(5+nc), H, W].
    targets: [M, 6] = (image index in batch, class, cx, cy, w, h) normalised to the input side.
    """

    def __init__(self, model: nn.Module, imgsz: int, box: float = 0.05, obj: float = 1.0, cls: float = 0.5,
                 anchor_t: float = 4.0, balance: tuple[float, ...] = (4.0, 1.0, 0.4)):
        super().__init__()
        det = model.detect
        self.nc, self.na, self.nl = det.nc, det.na, det.nl
        self.balance = list(balance)
        self.anchor_t = anchor_t
        scale = 3.0 / self.nl
        self.box_gain = box * scale
        self.cls_gain = cls * self.nc / 80.0 * scale
        self.obj_gain = obj * (imgsz / 640.0) ** 2 * scale
        # anchors in grid units of each level
        self.register_buffer("anchors", det.anchors.detach().clone() / det.stride.detach().view(-1, 1, 1))
        self.register_buffer("offsets", _OFFSETS.clone(), persistent=False)

    def forward(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dev = raw[0].device
        targets = targets.to(dev, torch.float32)
        bs = raw[0].shape[0]
        lbox = torch.zeros((), device=dev)
        lobj = torch.zeros((), device=dev)
        lcls = torch.zeros((), device=dev)
        for i, r in enumerate(raw):
            _, _, ny, nx = r.shape
            p = r.view(bs, self.na, 5 + self.nc, ny, nx).permute(0, 1, 3, 4, 2).float()
            tobj = torch.zeros(p.shape[:4], device=dev)
            anchors = self.anchors[i].to(dev)
            b, a, gj, gi, tbox, tcls, valid = self._assign(targets, anchors, nx, ny)
            # Fixed-size candidate lists with a validity mask: no data-dependent shapes, so no host sync.
            n = valid.sum().clamp(min=1)
            ps = p[b, a, gj, gi]
            pxy = ps[:, :2].sigmoid() * 2 - 0.5
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[a]
            iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox)
            lbox = lbox + torch.where(valid, 1.0 - iou, 0.0).sum() / n
            # Several targets can land on one (anchor, cell): keep the best IoU deterministically; invalid
            # candidates contribute 0, which never beats the zero-initialised map.
            flat = ((b * self.na + a) * ny + gj) * nx + gi
            src = torch.where(valid, iou.detach().clamp(0), 0.0).to(tobj.dtype)
            tobj.view(-1).scatter_reduce_(0, flat, src, reduce="amax")
            if self.nc > 1:
                t = F.one_hot(tcls, self.nc).to(ps.dtype)
                bce = F.binary_cross_entropy_with_logits(ps[:, 5:], t, reduction="none")
                lcls = lcls + torch.where(valid[:, None], bce, 0.0).sum() / (n * self.nc)
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * self.balance[i]
        lbox = lbox * self.box_gain
        lobj = lobj * self.obj_gain
        lcls = lcls * self.cls_gain
        total = (lbox + lobj + lcls) * bs
        return total, {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}

    def _assign(self, targets: torch.Tensor, anchors: torch.Tensor, nx: int, ny: int):
        """Match targets to (image, anchor, cell) on one level.

        Every (offset k of 5, anchor, target) triple is a candidate, in that (k, anchor, target) order; returns
        flat [5*na*M] image / anchor / row / column indices, cell-relative box targets [5*na*M, 4], classes and
        `valid` (the anchor's shape matches and the neighbour cell is used). Indices of invalid candidates
        are clamped into the grid so they can be gathered and then ignored."""
        dev = targets.device
        na, m = anchors.shape[0], targets.shape[0]
        txywh = targets[:, 2:6].clone()                                  # grid units (python scalars: no copy)
        txywh[:, 0::2] *= nx
        txywh[:, 1::2] *= ny
        # shape match: max over (w, h) of max(r, 1/r) < anchor_t, for every (anchor, target) pair
        r = txywh[None, :, 2:4] / anchors[:, None, :]                    # [na, M, 2]
        ok = torch.max(r, 1.0 / r).max(2).values < self.anchor_t         # [na, M]
        gxy = txywh[:, :2]
        gxy_inv = torch.stack((nx - gxy[:, 0], ny - gxy[:, 1]), 1)
        g = 0.5
        left_up = (gxy % 1 < g) & (gxy > 1)                              # neighbour at -x / -y
        right_down = (gxy_inv % 1 < g) & (gxy_inv > 1)                   # neighbour at +x / +y
        use = torch.stack((torch.ones_like(left_up[:, 0]), left_up[:, 0], left_up[:, 1],
                           right_down[:, 0], right_down[:, 1]))          # [5, M]
        valid = (use[:, None, :] & ok[None]).reshape(-1)                 # [5*na*M]
        off = self.offsets.to(dev) * g
        gxy_sel = gxy[None].expand(5, m, 2)                              # [5, M, 2]
        gij = (gxy_sel - off[:, None, :]).long()
        gi = gij[..., 0].clamp(0, nx - 1)
        gj = gij[..., 1].clamp(0, ny - 1)
        cell = torch.stack((gi, gj), -1).to(gxy.dtype)
        tbox = torch.cat((gxy_sel - cell, txywh[None, :, 2:4].expand(5, m, 2)), -1)   # [5, M, 4]

        def per_anchor(x: torch.Tensor) -> torch.Tensor:                 # [5, M, ...] -> [5*na*M, ...]
            return x[:, None].expand(5, na, *x.shape[1:]).reshape(5 * na * m, *x.shape[2:])

        a = torch.arange(na, device=dev)[None, :, None].expand(5, na, m).reshape(-1)
        b = per_anchor(targets[:, 0].long()[None].expand(5, m))
        tcls = per_anchor(targets[:, 1].long()[None].expand(5, m))
        return b, a, per_anchor(gj), per_anchor(gi), per_anchor(tbox), tcls, valid
