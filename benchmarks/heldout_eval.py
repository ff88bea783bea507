"""Evaluate compare_pruners.py results on held-out images, with paired-bootstrap intervals (issue 10).

compare_pruners.py reports mAP on the validation split, and its settings (the zero-share offset, say) were
chosen on that same split. This script re-evaluates every final model of one or more result folders on images
that no setting was chosen on: N new synthetic scenes drawn with the next seed (`render_scene` seeds each scene
by (seed, split, index), so they share no scene with train or val), or the dataset's `test` split with --data
runs. For each model it gives the held-out mAP50 and the difference to the dense model (and to the control, where
a folder trained one) with a 95 % paired-bootstrap interval: the images are resampled B times, every model is
scored on the same resamples, and the 2.5/97.5 percentiles of the per-resample differences bound the part of
a difference that the choice of images explains. It says nothing of seed-to-seed training noise.

Every folder must come from the same dense checkpoint (same sha256); they may differ in config (e.g. one with
--set sparse.target=0.6). Detections are cached per model file and held-out set under OUT/dets/.

example:
  python benchmarks/heldout_eval.py --run /tmp/cmp2 --run /tmp/cmp5:zs0.55 --out runs/heldout \
      --pair l1rr@65:zs0.55,tp_groupnorm@65 --bootstrap 200
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from edgeprune.cliconfig import DATA_ROOT_HELP  # noqa: E402
from edgeprune.data.synth import cache_dir  # noqa: E402
from edgeprune.errors import UsageError, run_script  # noqa: E402
from edgeprune.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file  # noqa: E402
from edgeprune.metrics.coco import coco_map, resampled_map50  # noqa: E402

HOLDOUT_SEED_OFFSET = 1      # held-out scenes: the run's data.seed + 1


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="FOLDER[:NOTE]",
                    help="a compare_pruners.py --out folder; NOTE tells its arms apart from another folder's")
    ap.add_argument("--out", required=True, help="output folder: heldout.json, heldout.md, dets/ (cache)")
    ap.add_argument("--holdout", type=int, default=500, help="held-out synthetic scenes (synthetic runs)")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the held-out images")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    ap.add_argument("--pair", action="append", default=[], metavar="A,B",
                    help="also report model A minus model B (labels as in the table, e.g. l1rr@65:zs0.55)")
    ap.add_argument("--models", metavar="A,B,...",
                    help="only these models (and dense, control): the bootstrap costs B mAP evaluations a model")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the bootstrap")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for inference")
    ap.add_argument("--synth-root", default=str(cache_dir()), help=DATA_ROOT_HELP)
    args = ap.parse_args(argv)
    if args.holdout < 1 or args.bootstrap < 0 or args.jobs < 1:
        ap.error("--holdout and --jobs must be >= 1, --bootstrap >= 0")
    for p in args.pair:
        if len(p.split(",")) != 2:
            ap.error(f"--pair {p!r}: give two labels separated by a comma")
    return args


def read_run(spec: str) -> dict[str, Any]:
    folder, _, note = spec.partition(":")
    path = Path(folder)
    try:
        results = json.loads((path / "results.json").read_text())
        settings = json.loads((path / "settings.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--run {folder}: not a finished compare_pruners.py folder ({exc})") from None
    return {"folder": path, "note": note, "results": results, "settings": settings}


def models_of(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every final model of the runs, labelled; the dense model (and the control) once."""
    from edgeprune.models.io import model_from_checkpoint
    from edgeprune.prune.io import load_pruned

    for what, key in (("dense checkpoints", lambda r: r["results"]["dense"]["sha256"]),
                      ("data sets", lambda r: r["settings"]["dataset"]),
                      ("input sizes", lambda r: r["settings"]["config"]["model"]["imgsz"])):
        if len({key(r) for r in runs}) != 1:
            raise UsageError(f"--run folders differ in their {what}; paired comparisons need one")
    first = runs[0]["results"]["dense"]
    models = [{"label": "dense", "load": lambda p=first["checkpoint"]: model_from_checkpoint(p),
               "file": Path(first["checkpoint"]), "row": first}]
    control = next((r for r in runs if r["results"].get("control")), None)
    if control:
        ckpt = control["folder"] / "control" / "train" / "last.pt"
        models.append({"label": "control", "load": lambda p=ckpt: model_from_checkpoint(p), "file": ckpt,
                       "row": control["results"]["control"]})
    for run in runs:
        for row in run["results"]["arms"]:
            label = f"{row['arm']}@{round(100 * row['target']):02d}" + (f":{run['note']}" if run["note"] else "")
            if any(m["label"] == label for m in models):
                raise UsageError(f"two folders hold {label}; give them notes (--run FOLDER:NOTE)")
            mdir = Path(row["model_dir"])
            models.append({"label": label, "load": lambda p=mdir: load_pruned(p).model,
                           "file": mdir / "weights.pt", "row": row})
    return models


def heldout_samples(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[list, list[str], str]:
    """(samples, class names, a name of the set): new synthetic scenes, or the dataset's test split."""
    from edgeprune.data.dataset import load_dataset
    from edgeprune.data.synth import ensure_synthetic

    s = runs[0]["settings"]
    data = s["config"]["data"]
    if data["source"] == "synthetic":
        seed = data["seed"] + HOLDOUT_SEED_OFFSET
        path = ensure_synthetic(Path(args.synth_root), 0, args.holdout, data["synth_size"], seed, progress=False,
                                style=data.get("synth_style", "aerial"))
        ds = load_dataset(path, "yolo")
        return ds.splits["val"], ds.names, path.name
    ds = load_dataset(s["dataset"], data.get("format", "auto"), data.get("skip_bad", False))
    test = ds.splits.get("test")
    if not test:
        raise UsageError(f"{s['dataset']}: no test split to hold out; add one (YOLO data.yaml `test:`)")
    return test, ds.names, f"{Path(s['dataset']).name}:test"


def detections(model: dict[str, Any], samples: list, imgsz: int, cache: Path) -> tuple[list, list, Path]:
    """The model's detections on the held-out images, the images' (h, w) and the cache file: detections are
    cached by the model file's sha256 and the image set."""
    from edgeprune.metrics import predict

    path = cache / f"{sha256_file(model['file'])[:16]}.npz"
    if not path.is_file():
        dets, shapes = predict(model["load"](), [s.image for s in samples], imgsz)
        counts = np.asarray([len(d[1]) for d in dets], np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, counts=counts, boxes=np.concatenate([d[0] for d in dets]).reshape(-1, 4),
                            scores=np.concatenate([d[1] for d in dets]),
                            classes=np.concatenate([d[2] for d in dets]), shapes=np.asarray(shapes, np.int64))
        atomic_write_bytes(path, buf.getvalue())
    with np.load(path) as z:       # each z[key] decompresses the whole array again: read every key once
        counts, boxes, scores, classes, shapes = (z[k] for k in ("counts", "boxes", "scores", "classes", "shapes"))
    ends = np.cumsum(counts)
    return ([(boxes[a:b], scores[a:b], classes[a:b]) for a, b in zip(ends - counts, ends)],
            [tuple(int(v) for v in hw) for hw in shapes], path)


def _interval(diff: np.ndarray) -> list[float] | None:
    return [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))] if len(diff) else None


def compare(label_a: str, label_b: str, scores: dict[str, dict[str, Any]], boot: dict[str, np.ndarray]) -> dict:
    diff = boot[label_a] - boot[label_b]
    return {"a": label_a, "b": label_b, "delta_map50": scores[label_a]["map50"] - scores[label_b]["map50"],
            "ci95": _interval(diff), "share_a_better": float((diff > 0).mean()) if len(diff) else None}


def markdown(doc: dict[str, Any]) -> str:
    def ci(c: dict[str, Any] | None) -> str:
        if not c:
            return "–"
        lo_hi = f" [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]" if c["ci95"] else ""
        return f"{100 * c['delta_map50']:+.1f}{lo_hi}"

    lines = [f"Held-out set: {doc['heldout']['name']} ({doc['heldout']['images']} images); "
             f"{doc['bootstrap']['resamples']} paired bootstrap resamples, 95 % intervals in points.", "",
             "| model | FLOPs −% | val mAP50 | held-out mAP50 | Δ vs dense [95 % CI] | Δ vs control [95 % CI] | "
             "held-out mAP50-95 | held-out AP_small |", "|---|---|---|---|---|---|---|---|"]
    for m in doc["models"]:
        red = m.get("flops_reduction")
        lines.append(f"| {m['label']} | {'–' if red is None else f'{100 * red:.1f}'} | {m['val_map50']:.3f} | "
                     f"{m['map50']:.3f} | {ci(m.get('vs_dense'))} | {ci(m.get('vs_control'))} | {m['map']:.3f} | "
                     f"{m['ap_small']:.3f} |")
    if doc["pairs"]:
        lines += ["", "| A − B | Δ mAP50 [95 % CI] | share of resamples where A is better |", "|---|---|---|"]
        for p in doc["pairs"]:
            share = "–" if p["share_a_better"] is None else f"{100 * p['share_a_better']:.1f} %"
            lines.append(f"| {p['a']} − {p['b']} | {ci(p)} | {share} |")
    return "\n".join(lines) + "\n"


def _bootstrap_one(job: tuple) -> np.ndarray:
    gts, dets, names, shapes, samples = job
    return resampled_map50(gts, dets, names, shapes, samples)


def bootstrap(gts: list, dets: dict[str, list], names: list[str], shapes: list, resamples: int, seed: int,
              jobs: int, caches: dict[str, Path], progress: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Per model, its mAP50 on the same `resamples` bootstrap draws of the images (the draws depend only on the
    image count, `resamples` and `seed`, so each model's vector is cached beside its detections)."""
    samples = np.random.default_rng(seed).integers(0, len(gts), size=(resamples, len(gts)))
    files = {k: caches[k].with_name(f"{caches[k].stem}-boot{resamples}-seed{seed}.npy") for k in dets}
    out = {k: np.load(f) for k, f in files.items() if f.is_file()}
    todo = [k for k in dets if k not in out]
    work = [(gts, dets[k], names, shapes, samples) for k in todo]
    with concurrent.futures.ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        for k, vec in zip(todo, pool.map(_bootstrap_one, work) if pool else map(_bootstrap_one, work)):
            buf = io.BytesIO()
            np.save(buf, vec)
            atomic_write_bytes(files[k], buf.getvalue())
            out[k] = vec
            progress(k)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [read_run(r) for r in args.run]
    models = models_of(runs)
    labels = {m["label"] for m in models}
    wanted = args.models.split(",") if args.models else []
    for opt, names in [("--models", wanted)] + [("--pair " + p, p.split(",")) for p in args.pair]:
        missing = [x for x in names if x not in labels]
        if missing:
            raise UsageError(f"{opt}: no model {missing[0]!r}; known: {', '.join(sorted(labels))}")
    if wanted:
        keep = {"dense", "control", *wanted, *(x for p in args.pair for x in p.split(","))}
        models = [m for m in models if m["label"] in keep]
        labels = {m["label"] for m in models}
    samples, names, set_name = heldout_samples(runs, args)
    imgsz = runs[0]["settings"]["config"]["model"]["imgsz"]
    out = Path(args.out)
    cache = out / "dets" / set_name.replace(":", "_")
    gts = [(np.asarray(s.boxes, np.float32).reshape(-1, 4), np.asarray(s.classes).reshape(-1)) for s in samples]
    dets, scores, caches = {}, {}, {}
    for m in models:
        dets[m["label"]], shapes, caches[m["label"]] = detections(m, samples, imgsz, cache)
        scores[m["label"]] = coco_map(gts, dets[m["label"]], names, shapes)
        log(f"{m['label']}: held-out mAP50 {scores[m['label']]['map50']:.3f} (val {m['row']['map50']:.3f})")
    t0 = time.time()
    boot = bootstrap(gts, dets, names, shapes, args.bootstrap, args.seed, args.jobs, caches,
                     lambda k: log(f"bootstrap {k}: {args.bootstrap} resamples done")) if args.bootstrap else \
        {k: np.empty(0) for k in dets}          # point estimates only: no intervals
    rows = []
    for m in models:
        k = m["label"]
        row = {"label": k, "val_map50": m["row"]["map50"], "flops_reduction": m["row"].get("flops_reduction"),
               **{key: scores[k][key] for key in ("map50", "map", "ap_small")}}
        if k != "dense":
            row["vs_dense"] = compare(k, "dense", scores, boot)
        if "control" in labels and k not in ("dense", "control"):
            row["vs_control"] = compare(k, "control", scores, boot)
        rows.append(row)
    doc = {"version": 1, "runs": [str(r["folder"]) + (f":{r['note']}" if r["note"] else "") for r in runs],
           "heldout": {"name": set_name, "images": len(samples)},
           "bootstrap": {"resamples": args.bootstrap, "seed": args.seed, "seconds": round(time.time() - t0, 1)},
           "models": rows, "pairs": [compare(*p.split(","), scores, boot) for p in args.pair],
           "command": "python benchmarks/heldout_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    atomic_write_json(out / "heldout.json", doc)
    atomic_write_text(out / "heldout.md", markdown(doc))
    log(f"wrote {out / 'heldout.json'}, {out / 'heldout.md'}")
    return 0


if __name__ == "__main__":
    run_script(main)
