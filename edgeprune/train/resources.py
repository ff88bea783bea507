"""How many CPU threads and data-loader workers a training process uses (`train.threads`, `train.workers`).

Why a policy: torch's OpenMP threads busy-wait at every parallel region's barrier. On a machine whose cores are
taken by other jobs, two such threads spin against each other and the run collapses: the quick preset went from
18 s to 12-15 min at load 5-8 on 2 cores (docs/DESIGN facts), and a dense step measured 0.84 img/s with 2
threads against 7.5 img/s with 1 thread at load ~7 (BENCHMARKS.md, "Training speed").

"auto" (the default) therefore counts the cores this process may use (CPU affinity, physical cores only:
hyper-thread siblings add little to convolutions) minus the ones *other* processes keep busy, at least 1; the data-loader workers take their share out of that, so the main process's
threads plus its workers never ask for more cores than are free. OMP_NUM_THREADS, when set, wins over "auto".
The choice is made when a training run starts and logged with it ("threads" in log.csv): the same thread
count reproduces the same numbers, so pin `train.threads` (or OMP_NUM_THREADS) to compare runs exactly.

This module imports no torch: `passive_wait()` must run before torch (and its OpenMP runtime) is loaded.
"""
from __future__ import annotations

import glob
import multiprocessing
import os
import sys
import time
from typing import Union

Count = Union[int, str]      # an int, or "auto"


def usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # not on Linux
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | None = None) -> int:
    """Cores among `cpus` counting hyper-thread siblings once (falls back to the CPU count without sysfs)."""
    cpus = usable_cpus() if cpus is None else cpus
    seen = set()
    for c in cpus:
        paths = glob.glob(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list")
        try:
            with open(paths[0]) as f:
                seen.add(f.read().strip())
        except (IndexError, OSError):
            seen.add(str(c))
    return max(1, len(seen))


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
    total = sum(fields[:8])                                         # guest time is already inside user
    return total - idle, total


def _own_ticks() -> int | None:
    """utime + stime of this process (all its threads), in clock ticks."""
    try:
        with open("/proc/self/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()               # the name may hold spaces
    except (OSError, IndexError):
        return None
    return int(rest[11]) + int(rest[12])


def others_busy(busy: int, total: int, own: int, cpus: int) -> float:
    """CPUs kept busy by other processes over a sample: busy ticks minus this process's, as a share of all
    ticks, times the CPU count (ticks of /proc/stat and /proc/self/stat are both USER_HZ)."""
    if total <= 0:
        return 0.0
    return max(0.0, (busy - own) / total * cpus)


def others_load(window: float = 1.0) -> float:
    """CPUs other processes use now, sampled over `window` seconds; the 1-minute load average off Linux.

    Why not the load average alone: it counts this process too. Between two `compress` stages (one
    process) it still holds the previous stage's own threads, so a quiet 2-core machine read as half busy
    and every stage after the first ran on one thread (the default run took 19 min instead of ~12).
    """
    t0, o0 = _cpu_ticks(), _own_ticks()
    if t0 is None or o0 is None:
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    time.sleep(window)
    t1, o1 = _cpu_ticks(), _own_ticks()
    if t1 is None or o1 is None:
        return 0.0
    cpus = os.cpu_count() or 1
    return others_busy(t1[0] - t0[0], t1[1] - t0[1], o1 - o0, cpus)


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not kept busy by others: cores - round(others' load), clamped to [1, cores]."""
    cores = physical_cores() if cores is None else cores
    if load is None:
        load = others_load()
    return max(1, min(cores, cores - int(round(load))))


def workers_can_start() -> bool:
    """False where a DataLoader cannot fork workers: inside a daemon process (e.g. a worker itself) or
    without a writable /dev/shm on Linux (torch passes batches through shared memory)."""
    if multiprocessing.current_process().daemon:
        return False
    if os.name == "posix" and os.path.isdir("/dev") and not os.access("/dev/shm", os.W_OK):
        return False
    return True


def resolve_workers(value: Count, device_type: str, cores: int | None = None) -> int:
    """train.workers: an int is taken as is; "auto" = 0 where workers cannot start; on CUDA every core but
    one, at most 8 (the GPU waits on decoding and augmentation); on CPU the compute needs the cores, so
    1 worker per 4 cores, at most 4 (0 below 4 cores: a worker would only take a core from the compute)."""
    if value != "auto":
        return int(value)
    if not workers_can_start():
        return 0
    cores = len(usable_cpus()) if cores is None else cores
    if device_type == "cuda":
        return max(0, min(8, cores - 1))
    return min(4, cores // 4)


def resolve_threads(value: Count, workers: int, cores: int | None = None, load: float | None = None,
                    local_procs: int | None = None) -> int:
    """train.threads: an int is taken as is; "auto" = OMP_NUM_THREADS when set, else this process's share of
    the free physical cores (torchrun starts LOCAL_WORLD_SIZE of them per machine) minus its data workers,
    at least 1."""
    if value != "auto":
        return int(value)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if local_procs is None:
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, free_cores(cores, load) // max(1, local_procs) - workers)


# "auto" does not split the global batch below this many images a rank: a CUDA rank's BatchNorm (train.sync_bn auto)
# normalises by its own micro-batch, and on a CPU smaller shares spend more of each step in the collectives
MIN_RANK_BATCH = 8


def resolve_procs(value: Count, batch: int, accumulate: int = 1, gpus: int = 0, cores: int | None = None,
                  load: float | None = None) -> int:
    """compress --nproc-per-node: an int is taken as is; "auto" = one process per GPU, or on a Linux CPU one per
    free physical core (gloo), in both cases the most that split train.batch evenly into micro-batches of at
    least MIN_RANK_BATCH images (train.accumulate counted), at least 1.

    Why processes and not threads on a CPU: this detector's convolutions scale poorly over OpenMP threads. The
    default run took 19.0 min on one thread and 20.1 min on two on a quiet 2-core machine, and 12.2 min as two
    one-thread DDP processes (BENCHMARKS.md §0e)."""
    if value != "auto":
        return int(value)
    cap = batch // (max(1, accumulate) * MIN_RANK_BATCH)      # the most processes the batch allows
    if cap < 2:
        return 1                                             # (then no need to sample the load)
    if gpus > 0:
        most = gpus
    elif sys.platform.startswith("linux"):
        most = free_cores(cores, load)
    else:
        return 1
    for n in range(min(most, cap), 1, -1):
        if batch % (n * accumulate) == 0:
            return n
    return 1


def passive_wait() -> None:
    """Let idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE) unless the user chose a
    policy. Only effective before torch is imported; harmless after. At load ~7 on 2 cores it took a
    2-thread dense step from 0.84 to 4.3 img/s (BENCHMARKS.md, "Training speed")."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


__all__ = ["free_cores", "others_busy", "others_load", "passive_wait", "physical_cores", "resolve_procs", "resolve_threads", "resolve_workers",
           "usable_cpus", "workers_can_start"]
