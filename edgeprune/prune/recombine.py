"""Residual reconstruction: one retained channel set per group of coupled channels.

Each BN that directly follows a conv ("owner BN") votes per output channel (keep or not, with an
importance). A channel class (graph.py) collects the votes of every producer tied to it: one per
producer of a residual add, two for the halves of a chunk. Groups are the BNs connected by shared
classes; in a group the `rule` turns votes into one decision per class:

- union: keep a class if any vote keeps it (TAO's `union`, a max over the members' scores);
- intersection: keep it only if every vote keeps it (TAO's `intersection`, a min);
- topk: sum the votes' importances per class and keep the k best, k = mean of the members' keep counts.

Then `min_channels` and `round_to` raise the group's kept count, adding back the most important dropped
classes. Output channel recombination (every producer re-indexed onto the retained set) and input
channel recombination (every consumer gathers exactly those columns) both follow from slicing by
class in apply.py; the junctions are recorded in the recombination map for the ONNX verifier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import PruneError
from .graph import ChannelGraph, partial_producers

RULES = ("union", "intersection", "topk")


@dataclass
class Plan:
    graph: ChannelGraph
    kept_class: np.ndarray        # indexed by class (root id): keep this class
    groups: list[dict[str, Any]]
    rule: str

    def kept(self, ids: np.ndarray) -> np.ndarray:
        return self.kept_class[self.graph.root[ids]]


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def normalize_keep(graph: ChannelGraph, keep: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`keep` maps gate keys (owner-BN paths; a BN-less producer's own path) to a bool mask or a list of
    kept indices -> {key: bool mask}."""
    if not isinstance(keep, Mapping):
        raise PruneError(f"keep must map BatchNorm paths to masks or index lists, got {type(keep).__name__}")
    unknown = sorted(k for k in keep if k not in graph.bn_layouts and k not in graph.gates)
    if unknown:
        sample = sorted(graph.owner_bn)[:3]
        raise PruneError(f"keep names layers this model does not have: {unknown[:5]} (this model's BN "
                         f"paths look like {sample}); are the ratios for another architecture?")
    out: dict[str, np.ndarray] = {}
    for bn, value in keep.items():
        if bn not in graph.gates:
            raise PruneError(f"keep[{bn!r}]: this BatchNorm does not directly follow a prunable conv (it sits after "
                             "a concat, add or depthwise conv); its channels follow the producers' decisions, "
                             "so drop it from keep")
        n = len(graph.gates[bn].ids)
        arr = _as_array(value)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise PruneError(f"keep[{bn!r}]: mask has {arr.size} entries but the layer has {n} channels "
                                 "(ratios for another architecture or width?)")
            out[bn] = arr.copy()
            continue
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise PruneError(f"keep[{bn!r}]: expected a bool mask or a list of int indices, got dtype {arr.dtype}")
        idx = arr.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise PruneError(f"keep[{bn!r}]: index {int(idx.max() if idx.max() >= n else idx.min())} is out of "
                             f"range for a layer with {n} channels (ratios for another architecture?)")
        if len(set(idx.tolist())) != idx.size:
            raise PruneError(f"keep[{bn!r}]: index list has duplicates")
        mask = np.zeros(n, bool)
        mask[idx] = True
        out[bn] = mask
    return out


def default_importance(graph: ChannelGraph) -> dict[str, np.ndarray]:
    """Per gate: |gamma| of a BN (the network-slimming score); for a producer without BN the L2 norm of
    its weight rows."""
    out = {}
    for key, gate in graph.gates.items():
        w = graph.tensor(gate.scale).detach().float()
        score = w.abs() if gate.kind == "bn" else w.reshape(w.shape[0], -1).norm(dim=1)
        out[key] = score.cpu().numpy().astype(np.float64)
    return out


def _check_importance(graph: ChannelGraph, importance: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = default_importance(graph)
    for bn, value in importance.items():
        if bn not in graph.gates:
            raise PruneError(f"importance[{bn!r}]: not a BatchNorm that follows a prunable conv in this model")
        arr = _as_array(value).astype(np.float64).reshape(-1)
        if arr.size != len(graph.gates[bn].ids):
            raise PruneError(f"importance[{bn!r}]: {arr.size} scores for {len(graph.gates[bn].ids)} channels")
        out[bn] = arr
    return out


def keep_per_gate(graph: ChannelGraph, ratio: float) -> dict[str, np.ndarray]:
    """One uniform ratio for any model, BN or not: each voting gate keeps the best (1 - ratio) share of
    its channel classes. A class is scored by the importance of every gate over it (each gate's scores
    divided by their mean), so gates tied by a residual add or a grouped conv agree on what to keep."""
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"ratio must lie in [0, 1), got {ratio}")
    scores = default_importance(graph)
    voters = voting_gates(graph)
    total = np.zeros(len(graph.root))
    for key in voters:
        s = scores[key]
        np.add.at(total, graph.root[graph.gates[key].ids], s / max(float(s.mean()), 1e-12))
    keep = {}
    for key in voters:
        cls = graph.root[graph.gates[key].ids]
        uniq = np.unique(cls)
        best = uniq[np.argsort(-total[uniq], kind="stable")[:max(1, len(uniq) - int(ratio * len(uniq)))]]
        keep[key] = np.isin(cls, best)
    return keep


def voting_gates(graph: ChannelGraph) -> list[str]:
    """Gates whose keep votes count: every BN gate, and a weight gate only where no BN gate covers its
    classes (an SE block's expand conv is tied to the BN-gated channels it multiplies; the BN decides)."""
    bn_classes = set()
    for gate in graph.gates.values():
        if gate.kind == "bn":
            bn_classes.update(graph.root[gate.ids].tolist())
    return sorted(k for k, gate in graph.gates.items()
                  if gate.kind == "bn" or not bn_classes & set(graph.root[gate.ids].tolist()))


def round_count(n: int, total: int, round_to: int, min_channels: int) -> int:
    """Kept count after min_channels and rounding up to a multiple of round_to (capped at total)."""
    target = max(n, min(min_channels, total), 1)
    if round_to > 1:
        target = int(math.ceil(target / round_to) * round_to)
    return min(target, total)


def decide(graph: ChannelGraph, keep: Mapping[str, Any], importance: Mapping[str, Any] | None = None,
           rule: str = "union", round_to: int = 8, min_channels: int = 8,
           removable: frozenset[str] | set[str] = frozenset()) -> Plan:
    """`removable`: gates (a residual branch's inner BN) that may lose every channel when `keep` removes them all
    (depth pruning, apply.py); every other layer keeps at least min_channels."""
    if rule not in RULES:
        raise PruneError(f"rule {rule!r} is not one of {list(RULES)}")
    if round_to < 1 or min_channels < 0:
        raise PruneError(f"round_to must be >= 1 and min_channels >= 0 (got {round_to}, {min_channels})")
    masks = normalize_keep(graph, keep)
    scores = _check_importance(graph, importance or {})
    n_ids = len(graph.root)
    bns = voting_gates(graph)
    bn_index = {b: i for i, b in enumerate(bns)}
    gate_ids = {b: graph.gates[b].ids for b in bns}

    # classes that reach the input, an output or a frozen op stay whole
    locked_class = np.zeros(n_ids, bool)
    locked_class[graph.root[graph.fixed]] = True

    cls, who, vote, imp = [], [], [], []
    for b in bns:
        ids = gate_ids[b]
        cls.append(graph.root[ids])
        who.append(np.full(len(ids), bn_index[b]))
        vote.append(masks.get(b, np.ones(len(ids), bool)))
        imp.append(scores[b])
    cls_a = np.concatenate(cls) if cls else np.zeros(0, np.int64)
    who_a = np.concatenate(who) if who else np.zeros(0, np.int64)
    vote_a = np.concatenate(vote).astype(np.int64) if vote else np.zeros(0, np.int64)
    imp_a = np.concatenate(imp) if imp else np.zeros(0)

    n_votes = np.zeros(n_ids, np.int64)
    n_keep = np.zeros(n_ids, np.int64)
    imp_sum = np.zeros(n_ids)
    np.add.at(n_votes, cls_a, 1)
    np.add.at(n_keep, cls_a, vote_a)
    np.add.at(imp_sum, cls_a, imp_a)

    # groups: BNs connected through shared classes
    parent = list(range(len(bns)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_bn: dict[int, int] = {}
    for c, w in zip(cls_a.tolist(), who_a.tolist()):
        if c in first_bn:
            ra, rb = find(first_bn[c]), find(w)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        else:
            first_bn[c] = w
    members: dict[int, list[str]] = {}
    for b in bns:
        members.setdefault(find(bn_index[b]), []).append(b)
    junction_of = {}
    for j in graph.junctions:
        for c in set(j.classes.tolist()):
            junction_of[c] = j.id

    kept_class = np.ones(n_ids, bool)
    groups, group_classes = [], []
    for gid, (g, group_bns) in enumerate(sorted(members.items())):
        classes = np.array(sorted({c for b in group_bns for c in graph.root[gate_ids[b]].tolist()}), dtype=np.int64)
        classes = classes[~locked_class[classes]]
        group_classes.append(classes)
        total = len(classes)
        record = {"id": gid, "bns": group_bns, "channels": total, "kept": total,
                  "junction": next((junction_of[c] for c in classes.tolist() if c in junction_of), None)}
        groups.append(record)
        if total == 0:
            continue
        if rule == "union":
            keep_c = n_keep[classes] > 0
        elif rule == "intersection":
            keep_c = n_keep[classes] == n_votes[classes]
        else:
            k = int(round(n_keep[classes].sum() / n_votes[classes].sum() * total))
            keep_c = np.zeros(total, bool)
            keep_c[np.argsort(-imp_sum[classes], kind="stable")[:k]] = True
        if not keep_c.any() and set(group_bns) <= set(removable):
            kept_class[classes] = False     # a residual branch pruned to nothing: apply.py removes the block
            continue
        # round_to / min_channels count channels; a class of a grouped conv holds a whole group of them
        per = max(1, max(len(gate_ids[b]) for b in group_bns) // total)
        target = -(-round_count(int(keep_c.sum()) * per, total * per, round_to, min_channels) // per)
        if target > keep_c.sum():
            dropped = np.flatnonzero(~keep_c)
            best = dropped[np.argsort(-imp_sum[classes[dropped]], kind="stable")]
            keep_c[best[:target - int(keep_c.sum())]] = True
        kept_class[classes[~keep_c]] = False
    # a group that spans concat segments (an add over a concat) can starve one of its layers: every
    # layer keeps at least min(min_channels, width) too, again adding back the most important classes
    for b in bns:
        free = np.unique(graph.root[gate_ids[b]])
        free = free[~locked_class[free]]
        if b in removable and not kept_class[free].any():
            continue
        per = max(1, len(gate_ids[b]) // max(len(free), 1))
        need = min(-(-max(min_channels, 1) // per), len(free)) - int(kept_class[free].sum())
        if need > 0:
            dropped = free[~kept_class[free]]
            kept_class[dropped[np.argsort(-imp_sum[dropped], kind="stable")[:need]]] = True
    for record, classes in zip(groups, group_classes):
        record["kept"] = int(kept_class[classes].sum())
    return Plan(graph=graph, kept_class=kept_class, groups=groups, rule=rule)


def recombination_map(plan: Plan, gone: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The CONTRACTS.md `recombination.json`: per junction its producers, consumers and kept positions.
    `partial_producers`: producers only some of whose output channels are the junction's (e.g. the value part
    of an attention's qkv conv, added to its positional branch): they emit more than the junction keeps.
    `gone`: module path prefixes that no longer exist (depth-pruned blocks), left out of the lists."""
    g = plan.graph
    junctions = []

    def alive(paths: list[str]) -> list[str]:
        return [p for p in paths if not any(p.startswith(x) for x in gone)]

    for j in g.junctions:
        kept = plan.kept_class[j.classes]
        partial = partial_producers(g, j)
        junctions.append({"id": j.id, "producers": alive(j.producers), "consumers": alive(j.consumers),
                          "channels_before": int(len(j.classes)), "kept": np.flatnonzero(kept).tolist(),
                          **({"partial_producers": partial} if partial else {})})
    return {"version": 1, "rule": plan.rule, "junctions": junctions}
