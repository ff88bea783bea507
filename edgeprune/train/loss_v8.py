"""Detection loss of the anchor-free YOLOv8-style family, written from the papers.

- Assignment: task-aligned (TOOD, Feng et al. 2021). For every ground-truth box, the cells whose centre
  lies inside it are candidates; their alignment t = s^alpha * u^beta (s: predicted probability of the
  box's class, u: IoU of the predicted box with it); the `topk` candidates by t are positives. A cell
  claimed by several boxes goes to the one it overlaps most. The class target of a positive is t
  normalised per box so that its best cell gets that box's best IoU (a soft, quality-aware label).
- Class loss: BCE against those soft targets on every cell, summed and divided by the targets' sum.
- Box loss: 1 - CIoU (Zheng et al. 2020) on positives, weighted by their soft target.
- DFL (distribution focal loss, GFL, Li et al. 2020): each side's distance in grid cells is a
  distribution over 0..reg_max-1; cross-entropy against the two integer bins around the target distance,
  weighted by linear interpolation, weighted like the box loss.
Gains (box 7.5, cls 0.5, dfl 1.5) are the common YOLOv8 defaults; the total is multiplied by the batch
size, as the YOLOv5-style loss does, so the same optimizer settings apply.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .loss import bbox_ciou


def box_iou_pairs(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of xyxy boxes broadcast against each other (..., 4) x (..., 4) -> (...)."""
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + eps)


def _xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    return torch.cat(((b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]), -1)


class TaskAlignedAssigner:
    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9):
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, scores: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, gt_cls: torch.Tensor,
                 gt_boxes: torch.Tensor, gt_mask: torch.Tensor):
        """scores [B,N,nc] probabilities, boxes [B,N,4] xyxy px, centres [N,2] px, gt_cls [B,G] long,
        gt_boxes [B,G,4] xyxy px, gt_mask [B,G] bool (padding off).
        Returns fg [B,N] bool, target boxes [B,N,4], target scores [B,N,nc]."""
        b, n, nc = scores.shape
        g = gt_boxes.shape[1]
        lt = centres[None, None] - gt_boxes[..., None, :2]
        rb = gt_boxes[..., None, 2:] - centres[None, None]
        inside = torch.cat((lt, rb), -1).amin(-1) > self.eps                     # [B,G,N]
        inside &= gt_mask[..., None]
        iou = box_iou_pairs(gt_boxes[:, :, None, :], boxes[:, None, :, :]) * inside  # [B,G,N]
        s = scores.transpose(1, 2).gather(1, gt_cls[..., None].expand(b, g, n))   # [B,G,N]
        align = s.pow(self.alpha) * iou.pow(self.beta) * inside
        k = min(self.topk, n)
        top = align.topk(k, dim=-1).indices                                       # [B,G,k]
        pos = torch.zeros_like(inside).scatter_(-1, top, True) & inside
        # a cell claimed by several boxes keeps the box it overlaps most
        multi = pos.sum(1, keepdim=True) > 1                                      # [B,1,N]
        best = F.one_hot(iou.argmax(1), g).transpose(1, 2).bool()                # [B,G,N]
        pos = torch.where(multi, best & pos.any(1, keepdim=True), pos)
        fg = pos.any(1)                                                           # [B,N]
        idx = pos.float().argmax(1)                                               # [B,N] gt per cell
        t_boxes = gt_boxes.gather(1, idx[..., None].expand(b, n, 4))
        t_cls = gt_cls.gather(1, idx)
        align = align * pos
        # early in training align is ~1e-9 (iou^6): divide only where the box has a positive alignment
        amax = align.amax(-1, keepdim=True)
        norm = align * (iou * pos).amax(-1, keepdim=True) / torch.where(amax > 0, amax, torch.ones_like(amax))
        weight = norm.amax(1) * fg                                                # [B,N]
        t_scores = F.one_hot(t_cls, nc).float() * weight[..., None]
        return fg, t_boxes, t_scores


class V8DetectionLoss(nn.Module):
    """Callable as `loss(raw_maps, targets)` -> (total scaled by batch size, {"box", "cls", "dfl"} detached 0-d
    tensors, read by the caller when it chooses). Host reads left in a step: the padded target count (`_pad`)
    and `fg.any()` before gathering the positives.

    raw_maps: the model's train-mode output, 3 tensors [B, 4*reg_max + nc, H, W].
    targets: [M, 6] = (image index in batch, class, cx, cy, w, h) normalised to the input side.
    """

    def __init__(self, model: nn.Module, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5,
                 topk: int = 10, alpha: float = 0.5, beta: float = 6.0):
        super().__init__()
        self.det = model.detect
        self.nc, self.reg_max = self.det.nc, self.det.reg_max
        self.gains = (box, cls, dfl)
        self.assigner = TaskAlignedAssigner(topk, alpha, beta)

    def forward(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        det = self.det
        dev = raw[0].device
        bs = raw[0].shape[0]
        box_logits, cls_logits = det.split_raw([r.float() for r in raw])         # [B,N,4,R], [B,N,nc]
        pts, strides = det.anchor_points(raw)                                     # grid units, [N,1]
        dist = det.distances(box_logits)                                          # [B,N,4] cells
        pred = torch.cat((pts - dist[..., :2], pts + dist[..., 2:]), -1) * strides  # xyxy px
        size = torch.tensor([raw[0].shape[3], raw[0].shape[2]], device=dev, dtype=torch.float32) * det.stride[0]
        gt_cls, gt_boxes, gt_mask = self._pad(targets.to(dev, torch.float32), bs, size)
        fg, t_boxes, t_scores = self.assigner(cls_logits.detach().sigmoid(), pred.detach(), pts * strides,
                                              gt_cls, gt_boxes, gt_mask)
        norm = t_scores.sum().clamp(min=1.0)
        lcls = F.binary_cross_entropy_with_logits(cls_logits, t_scores, reduction="sum") / norm
        lbox = torch.zeros((), device=dev)
        ldfl = torch.zeros((), device=dev)
        if fg.any():
            w = t_scores.sum(-1)[fg]                                              # [P]
            ciou = bbox_ciou(_xyxy_to_cxcywh(pred[fg]), _xyxy_to_cxcywh(t_boxes[fg]))
            lbox = ((1.0 - ciou) * w).sum() / norm
            s = strides.expand(bs, -1, -1)[fg]                                    # [P,1]
            p = pts[None].expand(bs, -1, -1)[fg]
            t = torch.cat((p - t_boxes[fg][:, :2] / s, t_boxes[fg][:, 2:] / s - p), -1)
            ldfl = (self._dfl(box_logits[fg], t.clamp(0, self.reg_max - 1 - 0.01)) * w).sum() / norm
        lbox, lcls, ldfl = lbox * self.gains[0], lcls * self.gains[1], ldfl * self.gains[2]
        total = (lbox + lcls + ldfl) * bs
        return total, {"box": lbox.detach(), "cls": lcls.detach(), "dfl": ldfl.detach()}

    @staticmethod
    def _dfl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits [P,4,R], target distances [P,4] in [0, R-1) -> per-positive loss [P]."""
        left = target.long()
        wl = left + 1 - target
        ce_l = F.cross_entropy(logits.flatten(0, 1), left.flatten(), reduction="none").view(left.shape)
        ce_r = F.cross_entropy(logits.flatten(0, 1), (left + 1).flatten(), reduction="none").view(left.shape)
        return (ce_l * wl + ce_r * (1 - wl)).mean(-1)

    def _pad(self, targets: torch.Tensor, bs: int, size: torch.Tensor):
        """[M,6] normalised cxcywh -> per image padded class ids [B,G], xyxy px boxes [B,G,4], mask [B,G]."""
        dev = targets.device
        img = targets[:, 0].long()
        counts = torch.bincount(img, minlength=bs) if targets.shape[0] else torch.zeros(bs, dtype=torch.long, device=dev)
        g = max(int(counts.max()) if bs else 0, 1)
        cls = torch.zeros(bs, g, dtype=torch.long, device=dev)
        boxes = torch.zeros(bs, g, 4, device=dev)
        mask = torch.zeros(bs, g, dtype=torch.bool, device=dev)
        if targets.shape[0]:
            order = torch.argsort(img, stable=True)
            img, t = img[order], targets[order]
            slot = torch.arange(t.shape[0], device=dev) - (torch.cumsum(counts, 0) - counts)[img]
            xy, wh = t[:, 2:4] * size, t[:, 4:6] * size
            cls[img, slot] = t[:, 1].long()
            boxes[img, slot] = torch.cat((xy - wh / 2, xy + wh / 2), 1)
            mask[img, slot] = True
        return cls, boxes, mask
