"""The `compress` pipeline: resumable stages in one run directory.

runs/<name>/
  config.yaml            the resolved config of the last invocation
  stages/<stage>.done    JSON marker written last (atomically) when a stage finished: its config key + outputs
  data/ dense/ sparse/ prune/ finetune/ bundle/   each stage's artefacts
  report.md + *.png      the human summary

A stage is skipped when its marker's key equals the hash of every config section it depends on (its own
and all upstream ones: stagedefs.py; markers and keys: rundir.py); otherwise it runs, and every downstream marker is removed first. Training stages
checkpoint every epoch and resume from their own `last.pt`, so a killed run loses at most one epoch.

Under torchrun (`compress --nproc-per-node N`, which relaunches itself with torchrun) every rank walks the same
stage list: the training stages (dense, sparse, finetune) run on all ranks (DDP), every other stage and all
writing outside the trainer run on rank 0 while the others wait at a barrier; the run directory must therefore
be on storage every node sees.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .config import Config, config_from_args, dump_config
from .errors import DistributedError, StorageError, UsageError
from .fsio import atomic_write_text
from .rundir import RunDir, stale_stage_dir
from .stagedefs import BY_NAME, STAGES, stage_weights


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def build_config(args: Any) -> Config:
    model = getattr(args, "model", None)
    cfg = config_from_args(args, {"model": {"weights": str(Path(model).resolve())}} if model else None)
    cfg.name = args.name or (cfg.name if args.config else cfg.preset)
    return cfg


def run_pipeline(cfg: Config, runs_dir: str | Path = "runs", until: str | None = None, restart: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    from .train.resources import passive_wait
    passive_wait()        # before torch loads its OpenMP runtime (see train/resources.py)
    from . import stages  # heavy imports (torch) only when the pipeline actually runs
    from .train.dist import dist_info, init_process_group, shutdown, wait_for_main

    world, rank, _ = dist_info()
    if world > 1:
        import torch
        init_process_group(cfg.train.dist_timeout_s, "cuda" if torch.cuda.is_available() else "cpu")
    main = rank == 0
    root = Path(runs_dir) / cfg.name
    run = RunDir(root, cfg, log if main else (lambda msg: None))
    if main:
        try:
            (root / "stages").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the run directory {root}: {exc.strerror}") from None
        atomic_write_text(root / "config.yaml", dump_config(cfg))
        if restart:
            run.invalidate_from(STAGES[0])
    wait_for_main()
    if not (root / "config.yaml").is_file():
        raise DistributedError(f"rank {rank}/{world} cannot see {root}/config.yaml that rank 0 wrote: under torchrun "
                               "--runs-dir (and EDGEPRUNE_CACHE for the synthetic set) must be on storage every node sees")
    last = until or STAGES[-1]
    summary: dict[str, Any] = {"run_dir": str(root), "stages": {}}
    todo = STAGES[: STAGES.index(last) + 1]
    weights, ran_w, ran_s = stage_weights(cfg), 0.0, 0.0    # ETA from the stages run in this invocation
    for k, stage in enumerate(todo, 1):
        where = f"stage {k} of {len(todo)}"
        if run.is_done(stage):
            run.log(f"[compress] stage {stage}: already finished in {root} (resuming after it)")
            summary["stages"][stage] = {"status": "cached", **run.outputs(stage)}
            continue
        t0 = time.time()
        if main:
            run.invalidate_from(stage)
            run.log(f"[compress] stage {stage}: running" + (f" on {world} processes" if world > 1 and
                                                            BY_NAME[stage].trains else "") + f" ({where})")
            if world > 1 and BY_NAME[stage].trains:
                stale_stage_dir(run, stage)     # emptied by rank 0 alone, before any rank resumes from it
        wait_for_main()
        outputs = None
        if main or BY_NAME[stage].trains:
            outputs = getattr(stages, BY_NAME[stage].body)(run)
        if main:
            run.finish(stage, outputs, time.time() - t0)
            ran_w, ran_s = ran_w + weights[stage], ran_s + time.time() - t0
            left = sum(weights[s] for s in todo[k:])
            eta = f", ETA ~{_minutes(ran_s / ran_w * left)} for the rest" if ran_w >= 1 and left else ""
            run.log(f"[compress] stage {stage}: finished in {time.time() - t0:.1f} s ({where}{eta})")
            summary["stages"][stage] = {"status": "ran", **outputs}
        wait_for_main()                         # the marker is on disk before any rank looks at the next stage
    if world > 1:
        shutdown()
    return summary


def torchrun_command(args: Any, cfg: Config) -> list[str]:
    """The torchrun command line that reruns this `compress` on --nproc-per-node processes per node (and,
    with --nnodes > 1, joins the other nodes at --rdzv-endpoint within train.dist_timeout_s)."""
    from .train.dist import check_global_batch

    if args.nproc_per_node < 1 or args.nnodes < 1:
        raise UsageError("--nproc-per-node and --nnodes must be >= 1")
    check_global_batch(cfg.train.batch, cfg.train.accumulate, args.nproc_per_node * args.nnodes)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.nproc_per_node}"]
    if args.nnodes > 1:
        if not args.rdzv_endpoint:
            raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every node (the first "
                             "node's address and a free port)")
        cmd += [f"--nnodes={args.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv_endpoint}",
                f"--rdzv-id={args.rdzv_id or cfg.name}",
                f"--rdzv-conf=join_timeout={max(1, int(cfg.train.dist_timeout_s))}"]
    else:
        cmd += ["--standalone"]
    cmd += ["-m", "edgeprune", "compress", "--runs-dir", str(args.runs_dir), "--name", cfg.name]
    for flag, value in (("--preset", args.preset), ("--config", args.config), ("--data", args.data),
                        ("--model", getattr(args, "model", None)), ("--until", args.until)):
        if value:
            cmd += [flag, str(value)]
    for item in args.set:
        cmd += ["--set", item]
    cmd += [f for f, on in (("--restart", args.restart), ("--json", args.json)) if on]
    return cmd


def resolve_nproc(args: Any, cfg: Config) -> int:
    """--nproc-per-node as a number ("auto": train/resources.py:resolve_procs)."""
    if args.nproc_per_node != "auto":
        return args.nproc_per_node
    from .train.resources import passive_wait, resolve_procs
    passive_wait()        # torch is loaded to count GPUs; a single process goes on to train with it
    import torch
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return resolve_procs("auto", cfg.train.batch, cfg.train.accumulate, gpus)


def run_from_args(args: Any) -> int:
    cfg = build_config(args)
    launcher = "LOCAL_RANK" not in os.environ          # not (yet) a torchrun rank
    if launcher:
        auto = args.nproc_per_node == "auto"
        args.nproc_per_node = resolve_nproc(args, cfg)
        if auto and args.nproc_per_node > 1:
            print(f"[compress] --nproc-per-node auto: {args.nproc_per_node} training processes (free cores or GPUs, "
                  f"train.batch {cfg.train.batch}); --nproc-per-node 1 keeps one", file=sys.stderr, flush=True)
    if launcher and (args.nproc_per_node > 1 or args.nnodes > 1):
        cmd = torchrun_command(args, cfg)
        print("[compress] " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        proc = subprocess.Popen(cmd)
        # a SIGTERM sent to this launcher alone (a scheduler's kill) must reach torchrun, which stops the workers
        signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
        code = proc.wait()
        if code != 0:
            where = (f"; a RendezvousTimeoutError above means the {args.nnodes} nodes did not all reach "
                     f"{args.rdzv_endpoint} within train.dist_timeout_s={cfg.train.dist_timeout_s:g} s"
                     if args.nnodes > 1 else "")
            raise DistributedError(f"torchrun exited with status {code} (the workers' errors are above){where}; "
                                   "rerun the same command to resume after the last finished epoch")
        return 0
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    summary = run_pipeline(cfg, args.runs_dir, args.until, args.restart, log)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"[compress] done: {summary['run_dir']}/report.md" if "report" in summary["stages"] else
              f"[compress] stopped after {list(summary['stages'])[-1]}: {summary['run_dir']}")
    return 0
