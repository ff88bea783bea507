"""Which BatchNorm layers the sparsity penalty acts on, and which of them are tied by residual adds."""
from __future__ import annotations


from torch import nn

from ..errors import SparsityError


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model behind DDP/DataParallel wrappers."""
    return getattr(model, "module", model)


def prunable_bns(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """Every BatchNorm2d by module path (the detector's head convs carry no BN, so they never appear)."""
    bns = {name: m for name, m in unwrap(model).named_modules() if isinstance(m, nn.BatchNorm2d)}
    if not bns:
        raise SparsityError(f"{type(unwrap(model)).__name__} has no BatchNorm2d layers: L1RR penalises BN scales "
                            "(gamma), so it needs a model with conv -> BN blocks")
    return bns


def residual_groups(model: nn.Module) -> dict[str, list[str]]:
    """BNs whose outputs meet in a residual add, by junction id (`<C3 path>.m`).

    In a C3 with shortcut bottlenecks, cv1's output and every bottleneck's cv2 output are summed into one
    running tensor, so their channels correspond one to one (the junction that residual reconstruction
    keeps consistent)."""
    groups: dict[str, list[str]] = {}
    for name, m in unwrap(model).named_modules():
        blocks = getattr(m, "m", None)
        if not (isinstance(blocks, nn.Sequential) and hasattr(m, "cv1") and len(blocks)):
            continue
        members = [f"{name}.m.{i}.cv2.bn" for i, b in enumerate(blocks) if getattr(b, "add", False)]
        if members:
            groups[f"{name}.m"] = [f"{name}.cv1.bn"] + members
    return groups


def slimming_excluded(model: nn.Module) -> set[str]:
    """BNs plain slimming leaves alone (midasklr/yolov5prune): C3.cv1.bn and each shortcut Bottleneck's
    cv1.bn and cv2.bn."""
    out: set[str] = set()
    for gid, members in residual_groups(model).items():
        out.update(members)
        out.update(p.replace(".cv2.bn", ".cv1.bn") for p in members[1:])
    return out
