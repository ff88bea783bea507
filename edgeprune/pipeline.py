"""The `compress` pipeline: resumable stages in one run directory.

runs/<name>/
  config.yaml            the resolved config of the last invocation
  stages/<stage>.done    JSON marker written last (atomically) when a stage finished: its config key + outputs
  data/ dense/ sparse/ prune/ finetune/ bundle/   each stage's artefacts
  report.md + *.png      the human summary

A stage is skipped when its marker's key equals the hash of every config section it depends on (its own
and all upstream ones); otherwise it runs, and every downstream marker is removed first. Training stages
checkpoint every epoch and resume from their own `last.pt`, so a killed run loses at most one epoch.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .config import Config, dump_config, load_config, make_config, parse_set
from .errors import EdgepruneError, StorageError
from .fsio import atomic_write_json, atomic_write_text
from .pipeline_cli import STAGES

# Config sections each stage reads (cumulative: a stage also depends on everything upstream).
OWN_SECTIONS = {
    "data": ("data",),
    "dense": ("model", "train"),
    "sparse": ("sparse",),
    "prune": ("prune",),
    "finetune": ("finetune",),
    "export": ("export",),
    "report": (),
}


def stage_sections(stage: str) -> tuple[str, ...]:
    out: list[str] = []
    for s in STAGES[: STAGES.index(stage) + 1]:
        out.extend(OWN_SECTIONS[s])
    return tuple(out)


class RunDir:
    def __init__(self, root: Path, cfg: Config, log: Callable[[str], None] = print):
        self.root = Path(root)
        self.cfg = cfg
        self.log = log

    def dir(self, stage: str) -> Path:
        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def marker_path(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.done"

    def key(self, stage: str) -> str:
        return self.cfg.section_hash(*stage_sections(stage))

    def marker(self, stage: str) -> dict[str, Any] | None:
        path = self.marker_path(stage)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # an unreadable marker means "not finished": the stage reruns
        return data if isinstance(data, dict) else None

    def is_done(self, stage: str) -> bool:
        m = self.marker(stage)
        return bool(m) and m.get("key") == self.key(stage)

    def outputs(self, stage: str) -> dict[str, Any]:
        m = self.marker(stage)
        if not m:
            raise EdgepruneError(f"{self.marker_path(stage)}: stage {stage!r} has not finished; run compress again")
        return m.get("outputs", {})

    def invalidate_from(self, stage: str) -> None:
        for s in STAGES[STAGES.index(stage):]:
            self.marker_path(s).unlink(missing_ok=True)

    def finish(self, stage: str, outputs: dict[str, Any], seconds: float) -> None:
        atomic_write_json(self.marker_path(stage), {
            "stage": stage, "key": self.key(stage), "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "outputs": outputs,
        })


def stale_stage_dir(run: RunDir, stage: str, folder: str | None = None) -> Path:
    """The stage's folder (`folder`, default the stage name); emptied first when it holds work from another
    config (a different key), so a resumed training never continues from a checkpoint of other settings."""
    d = run.root / (folder or stage)
    key_file = d / ".key"
    if d.exists() and (not key_file.is_file() or key_file.read_text().strip() != run.key(stage)):
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(key_file, run.key(stage) + "\n")
    return d


def build_config(args: Any) -> Config:
    overrides = parse_set(args.set)
    if args.data:
        overrides.setdefault("data", {})["source"] = args.data
    if args.config:
        cfg = load_config(args.config, overrides)
        if args.preset and args.preset != cfg.preset:
            raise EdgepruneError(f"--preset {args.preset} conflicts with preset {cfg.preset!r} in {args.config}")
    else:
        cfg = make_config(args.preset or "default", overrides)
    cfg.name = args.name or (cfg.name if args.config else cfg.preset)
    return cfg


def run_pipeline(cfg: Config, runs_dir: str | Path = "runs", until: str | None = None, restart: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    from . import stages  # heavy imports (torch) only when the pipeline actually runs

    root = Path(runs_dir) / cfg.name
    run = RunDir(root, cfg, log)
    try:
        (root / "stages").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the run directory {root}: {exc.strerror}") from None
    atomic_write_text(root / "config.yaml", dump_config(cfg))
    if restart:
        run.invalidate_from(STAGES[0])
    last = until or STAGES[-1]
    summary: dict[str, Any] = {"run_dir": str(root), "stages": {}}
    for stage in STAGES[: STAGES.index(last) + 1]:
        if run.is_done(stage):
            log(f"[compress] stage {stage}: already finished in {root} (resuming after it)")
            summary["stages"][stage] = {"status": "cached", **run.outputs(stage)}
            continue
        run.invalidate_from(stage)
        log(f"[compress] stage {stage}: running")
        t0 = time.time()
        outputs = getattr(stages, f"stage_{stage}")(run)
        run.finish(stage, outputs, time.time() - t0)
        log(f"[compress] stage {stage}: finished in {time.time() - t0:.1f} s")
        summary["stages"][stage] = {"status": "ran", **outputs}
    return summary


def run_from_args(args: Any) -> int:
    cfg = build_config(args)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    summary = run_pipeline(cfg, args.runs_dir, args.until, args.restart, log)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"[compress] done: {summary['run_dir']}/report.md" if "report" in summary["stages"] else
              f"[compress] stopped after {list(summary['stages'])[-1]}: {summary['run_dir']}")
    return 0
