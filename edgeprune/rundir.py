"""A `compress` run directory: stage markers keyed by the config sections each stage depends on (stagedefs.py).

runs/<name>/stages/<stage>.done is a JSON marker written last (atomically) when a stage finished: its config key
and outputs. A stage is done when its marker's key equals the hash of its sections in the current config.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from .config import Config
from .errors import EdgepruneError
from .fsio import atomic_write_json, atomic_write_text
from .stagedefs import LATENCY_KEYS, SOLVER_KEYS, STAGES, stage_sections


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
        sections = stage_sections(stage)
        if "sparse" in sections:
            sections += SOLVER_KEYS + (LATENCY_KEYS if self.cfg.prune.target == "latency" else ())
        return self.cfg.section_hash(*sections)

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
    current = key_file.is_file() and key_file.read_text().strip() == run.key(stage)
    if current:
        return d   # also what the other ranks of a torchrun job see: rank 0 prepared it before they came
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(key_file, run.key(stage) + "\n")
    return d


