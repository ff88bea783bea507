"""The ratio solver's latency target (`prune.target=latency`): a latency table read on the solver's channel graph.

The table (`edgeprune bench --profile-layers`, or one measured on the spot on this host) gives each conv block's
time at a grid of widths; `GraphLatency` predicts the whole network for any kept channel sets the way
`jetson.layerprof.predict` predicts a pruned model (sum of per-conv lookups, scaled by the table's rest share), so the solver's
number is what `predict_model` says of the physically pruned model. `snap` moves each unit's kept count to the
fastest width on its latency staircase at or above the count its importance asks for (ties: the wider one).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from ..config import PruneConfig
from ..errors import BundleError, SparsityError
from ..prune.graph import ChannelGraph
from .graph import alive_classes, conv_channels


def solver_table(model: Any, prune: PruneConfig, imgsz: int,
                 log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], str]:
    """(table, where it came from) for prune.target=latency: `prune.latency_table`, checked against the input
    size, or, when that is empty, a table measured now on this host (ONNX Runtime CPU, one thread)."""
    from jetson.layerprof import key_mismatches, read_table

    if prune.latency_table:
        try:
            table = read_table(prune.latency_table)
        except BundleError as exc:
            raise SparsityError(f"prune.latency_table: {exc}") from None
        wrong = key_mismatches(table, input_shape=[int(table["key"]["batch"]), 3, imgsz, imgsz])
        if wrong:
            raise SparsityError(f"prune.latency_table {prune.latency_table}: measured for another input "
                                f"({wrong[0]}); profile a bundle exported at {imgsz} px")
        return table, prune.latency_table
    from ..export.layer_table import measure_table_ort

    if log:
        log("prune.target=latency without prune.latency_table: measuring a table on this host (ONNX Runtime CPU, "
            "1 thread, CPU time)")
    return measure_table_ort(model, imgsz, threads=1, min_channels=prune.min_channels, log=log), \
        "measured on the spot (onnxruntime CPU, 1 thread, CPU time)"


def alignment(table: dict[str, Any], round_to: int) -> int:
    """The width multiple the latency target keeps: lcm(prune.round_to, the table's device profile's channel
    alignment for its precision)."""
    from jetson.profiles import PROFILES, channel_alignment

    key = table["key"]
    profile = key.get("device_profile") if key.get("device_profile") in PROFILES else "host"
    return math.lcm(int(round_to), channel_alignment(profile, key.get("precision")))


class GraphLatency:
    """Predicted latency (ms) of the traced model for kept channel sets, from a latency table of its dense
    architecture."""

    def __init__(self, graph: ChannelGraph, table: dict[str, Any], where: str = "prune.latency_table"):
        if table.get("rest_ms") is None:
            raise SparsityError(f"{where}: the table has no rest_ms (the whole model was not timed); profile again")
        from jetson.layerprof import rest_share
        self.graph, self.rest_share = graph, rest_share(table)
        dense = conv_channels(graph)
        missing = sorted(set(table["layers"]) - set(dense))
        if missing:
            raise SparsityError(f"{where}: conv {missing[0]} of the table is not in this model (a table of another "
                                "architecture); profile the dense bundle of this model")
        self.entries = table["layers"]
        for path, e in self.entries.items():
            if (dense[path][0], dense[path][1]) != (e["cin"], e["cout"]):
                raise SparsityError(f"{where}: conv {path} has {dense[path][0]} -> {dense[path][1]} channels here but "
                                    f"{e['cin']} -> {e['cout']} in the table (profile the dense model, not a pruned "
                                    "one)")
        # channel classes each timed conv reads or writes: a unit's width changes only these convs
        self._classes = {}
        for path in self.entries:
            ids = [graph.depthwise.get(path), graph.producers.get(path), graph.consumers.get(path)]
            ids += list(graph.grouped.get(path, ()))
            self._classes[path] = set(np.unique(graph.root[np.concatenate([i for i in ids if i is not None])]).tolist())

        self._ms: dict[tuple[str, int, int], float] = {}

    def affected(self, classes: set[int]) -> list[str]:
        return [p for p, c in self._classes.items() if c & classes]

    def layers_ms(self, kept: Mapping[str, set[int]] | None = None, paths: list[str] | None = None,
                  alive: np.ndarray | None = None) -> float:
        from jetson.layerprof import layer_ms

        total = 0.0
        for p, (cin, cout, _) in conv_channels(self.graph, kept, list(self.entries) if paths is None else paths,
                                               alive).items():
            if (p, cin, cout) not in self._ms:     # the solver asks for the same widths many times
                self._ms[p, cin, cout] = layer_ms(self.entries[p], cin, cout)
            total += self._ms[p, cin, cout]
        return total

    def total(self, kept: Mapping[str, set[int]] | None = None) -> float:
        return self.layers_ms(kept) * (1.0 + self.rest_share)


def snap(units: list[Any], choice: dict[str, int], kept_of: Callable[[Any, int], set[int]], lat: GraphLatency,
         steps: Callable[[Any], list[int]]) -> dict[str, int]:
    """Per unit (in model order, the others at their current widths): among the widths `steps(unit)` at or above
    its chosen count, the one with the smallest predicted latency of the convs it touches; a wider one wins a
    tie, so a unit never ends on a width that is slower than a wider one."""
    g = lat.graph
    out = dict(choice)
    kept = {m: kept_of(u, out[u.uid]) for u in units for m in u.members}
    for u in units:
        classes = set()
        for m in u.members:
            classes |= set(g.root[g.bn_layouts[m]].tolist())
        paths = lat.affected(classes)
        if not paths:
            continue
        others = alive_classes(g, dict(kept, **{m: set() for m in u.members}))   # the unit keeping nothing
        best, best_ms = out[u.uid], None
        for c in [c for c in steps(u) if c >= out[u.uid]]:
            alive, idx = others.copy(), kept_of(u, c)
            idx = np.fromiter(idx, np.int64, len(idx))
            for m in u.members:
                alive[g.root[g.bn_layouts[m]][idx]] = True
            ms = lat.layers_ms(paths=paths, alive=alive)
            if best_ms is None or ms <= best_ms + 1e-9:
                best, best_ms = c, ms
        out[u.uid] = best
        kept.update({m: kept_of(u, best) for m in u.members})
    return out
