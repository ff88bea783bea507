"""Pruned-model artefacts for our detector: arch spec (JSON) + state_dict, never a pickled model.

A pruned folder holds `arch.json` (the dense spec with `widths`), `weights.pt` (state_dict only,
loaded with weights_only=True), `recombination.json` (CONTRACTS.md) and `prune_table.json` (+ .txt; its
`imgsz` key is the input side the model was pruned and trained at, which `edgeprune export` defaults to).
`keep_from_ratios` reads the sparsity stage's `ratios.json` and checks it belongs to the model.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import ModelError, PruneError
from ..fsio import AtomicFile, atomic_write_json, atomic_write_text, read_json
from ..models.blocks import removable_branches
from ..models.io import first_line
from ..models.spec import load_spec, save_spec, spec_sha, with_widths
from ..models.yolo import Detector, build_model

FILES = ("arch.json", "weights.pt", "recombination.json", "prune_table.json")


def spec_from_pruned(model: Detector, dense_spec: dict[str, Any]) -> dict[str, Any]:
    """The spec that rebuilds `model`: the dense topology with every Conv block's width."""
    return with_widths(dense_spec, model.conv_widths())


class Pruned(NamedTuple):
    model: Detector
    recombination_map: dict[str, Any]


def save_pruned(out_dir: str | Path, model: Any, spec: dict[str, Any] | None = None,
                recombination_map: dict[str, Any] | None = None, table: list[dict[str, Any]] | None = None,
                stats: dict[str, Any] | None = None, imgsz: int | None = None) -> Path:
    """Write the pruned folder (`imgsz`: the input side to record)."""
    if spec is None or recombination_map is None or table is None:
        raise PruneError("save_pruned needs the spec, the recombination map and the table")
    out = Path(out_dir)
    save_spec(spec, out / "arch.json")
    with AtomicFile(out / "weights.pt", suffix=".pt") as tmp:
        torch.save(model.state_dict(), tmp)
    atomic_write_json(out / "recombination.json", recombination_map)
    doc: dict[str, Any] = {"layers": table, "stats": stats or {}}
    if imgsz is not None:
        doc["imgsz"] = int(imgsz)
    atomic_write_json(out / "prune_table.json", doc)
    atomic_write_text(out / "prune_table.txt", format_table(table, stats) + "\n")
    plot_widths(table, out / "prune_widths.png")
    return out


def format_table(table: list[dict[str, Any]], stats: dict[str, Any] | None = None) -> str:
    width = max([len(r["layer"]) for r in table] + [5])
    lines = [f"{'layer':<{width}}  {'before':>6} -> {'after':<6} {'kept':>6}  note"]
    for r in table:
        note = "fixed" if r["fixed"] else (f"junction {r['junction']}" if r["junction"] else "")
        share = r["after"] / r["before"] if r["before"] else 1.0
        lines.append(f"{r['layer']:<{width}}  {r['before']:>6} -> {r['after']:<6} {share:>6.1%}  {note}")
    if stats:
        lines.append(f"params {stats['params_before']:,} -> {stats['params_after']:,} "
                     f"({stats['params_after'] / max(stats['params_before'], 1):.1%}), "
                     f"FLOPs {stats['flops_before']:,} -> {stats['flops_after']:,} "
                     f"({stats['flops_after'] / max(stats['flops_before'], 1):.1%}); residual-junction channels "
                     f"removed {stats['junction_channels_removed']}/{stats['junction_channels_before']}; rule {stats['rule']}")
    return "\n".join(lines)


def short_layer_name(name: str) -> str:
    """`layers.6.m.0.cv1.conv` -> `6.m.0.cv1`: what tells layers apart, for plot labels."""
    for prefix in ("layers.", "model."):
        name = name[len(prefix):] if name.startswith(prefix) else name
    for suffix in (".conv", ".bn"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    return name


def plot_widths(table: list[dict[str, Any]], path: str | Path) -> None:
    """Horizontal bars of every layer's width before/after (one readable label per row, network order top
    to bottom, the width written at each bar's end), junction producers highlighted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if not r.get("fixed")]
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.19 * len(rows) + 1.0)))
    ys = list(range(len(rows)))
    ax.barh(ys, [r["before"] for r in rows], color="#d0d0d0", label="before")
    ax.barh(ys, [r["after"] for r in rows], color=["#d62728" if r.get("junction") else "#1f77b4" for r in rows],
            label="after (red: residual-junction producer)")
    for y, r in zip(ys, rows):
        ax.text(r["before"], y, f" {r['after']}/{r['before']}", va="center", fontsize=6)
    ax.set_yticks(ys)
    ax.set_yticklabels([short_layer_name(r["layer"]) for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max([r["before"] for r in rows] + [1]) * 1.15)
    ax.set_xlabel("output channels")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with AtomicFile(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def load_pruned(path: str | Path) -> Pruned:
    """Rebuild a pruned detector from its folder -> (model, recombination map)."""
    path = Path(path)
    try:
        spec = load_spec(path / "arch.json")
        model = build_model(spec)
    except ModelError as exc:
        raise PruneError(f"{path}: {exc}") from None
    weights = path / "weights.pt"
    if not weights.is_file():
        raise PruneError(f"{weights}: not found; a pruned folder holds {', '.join(FILES)} (re-run edgeprune prune)")
    if weights.stat().st_size == 0:
        raise PruneError(f"{weights}: empty file (0 bytes), not a state_dict; re-run edgeprune prune")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise PruneError(f"{weights}: truncated or corrupt ({first_line(exc)}); re-run edgeprune prune") from None
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(weights):  # torch.save always writes a zip archive
            raise PruneError(f"{weights}: truncated or corrupt (not a torch.save archive); re-run edgeprune prune") from None
        raise PruneError(f"{weights}: not a plain state_dict, the safe loader refused it "
                         f"({first_line(exc)[:120]}); re-save it with save_pruned") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise PruneError(f"{weights}: does not fit {path / 'arch.json'}: {first_line(exc)}") from None
    rec_path = path / "recombination.json"
    rec = read_json(rec_path, PruneError) if rec_path.is_file() else {"version": 1, "junctions": []}
    return Pruned(model, rec)


def save_pruned_model(out_dir: str | Path, model: Detector, pruned_dir: str | Path) -> Path:
    """Save a fine-tuned pruned model next to the recombination map and table of the folder it came from."""
    src = Path(pruned_dir)
    rec = load_pruned(src).recombination_map
    table_path = src / "prune_table.json"
    doc = read_json(table_path, PruneError) if table_path.is_file() else {"layers": [], "stats": {}}
    return save_pruned(out_dir, model, model.spec, rec, doc.get("layers", []), doc.get("stats", {}),
                       imgsz=doc.get("imgsz") if isinstance(doc.get("imgsz"), int) else None)


def pruned_imgsz(path: str | Path) -> int | None:
    """The input side a pruned folder recorded in prune_table.json, or None (older folders)."""
    table_path = Path(path) / "prune_table.json"
    try:
        size = json.loads(table_path.read_text()).get("imgsz") if table_path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise PruneError(f"{table_path}: not a valid prune table ({exc})") from None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def read_ratios(path: str | Path) -> Any:
    return read_json(path, PruneError, "ratios file not found (run `edgeprune sparse` first)")


def keep_from_ratios(doc: Any, model: Detector, source: str = "ratios.json") -> dict[str, list[int]]:
    """ratios.json (CONTRACTS.md) -> {bn_path: kept indices}, checked against `model`."""
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("layers"), dict):
        raise PruneError(f"{source}: not a version-1 ratios file (expected keys version=1, spec_sha, layers)")
    spec = getattr(model, "spec", None)
    if doc.get("spec_sha") is not None and spec is not None and doc["spec_sha"] != spec_sha(spec):
        raise PruneError(f"{source}: spec_sha {str(doc['spec_sha'])[:12]}... does not match the checkpoint's "
                         f"architecture {spec_sha(spec)[:12]}... (ratios for another architecture); re-run the "
                         "sparse stage on this checkpoint")
    mods = dict(model.named_modules())
    branches = removable_branches(model)
    keep: dict[str, list[int]] = {}
    for bn, entry in doc["layers"].items():
        if bn not in mods or not isinstance(mods[bn], torch.nn.BatchNorm2d):
            raise PruneError(f"{source}: layers[{bn!r}] is not a BatchNorm of this model (ratios for another "
                             "architecture?)")
        n = mods[bn].num_features
        if not isinstance(entry, dict) or not isinstance(entry.get("keep_idx"), list):
            raise PruneError(f"{source}: layers[{bn!r}] needs a keep_idx list")
        if entry.get("channels") != n:
            raise PruneError(f"{source}: layers[{bn!r}] says {entry.get('channels')} channels, the model has {n} "
                             "(ratios for another architecture or an already pruned model?)")
        idx = entry["keep_idx"]
        if any(not isinstance(i, int) or isinstance(i, bool) for i in idx):
            raise PruneError(f"{source}: layers[{bn!r}].keep_idx must hold integers")
        if (not idx and bn not in branches) or any(not 0 <= i < n for i in idx) or len(set(idx)) != len(idx):
            raise PruneError(f"{source}: layers[{bn!r}].keep_idx must be distinct indices in 0..{n - 1}, "
                             "at least one (none only for a residual bottleneck's cv1: a removed block) "
                             "(channels/keep_idx do not fit this model)")
        if "keep" in entry and entry["keep"] != len(idx):
            raise PruneError(f"{source}: layers[{bn!r}]: keep={entry['keep']} but keep_idx has {len(idx)} entries")
        keep[bn] = idx
    return keep


def keep_from_threshold(model: torch.nn.Module, bns: list[str], threshold: float) -> dict[str, Any]:
    """Network-slimming masks: keep channels whose |gamma| exceeds `threshold`."""
    mods = dict(model.named_modules())
    return {bn: mods[bn].weight.detach().abs() > threshold for bn in bns}
