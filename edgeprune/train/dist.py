"""Process-group plumbing for torchrun (DDP): who am I, join the group with a bounded wait, wait for rank 0.

torchrun exports WORLD_SIZE, RANK and LOCAL_RANK (and MASTER_ADDR/MASTER_PORT) to every worker; without them
everything here is a no-op for one process. `compress` joins once for the whole pipeline (edgeprune/pipeline.py);
`fit` joins itself when it is run directly under torchrun (`torchrun -m edgeprune train`).
"""
from __future__ import annotations

import datetime
import os

import torch

from ..errors import ConfigError, DistributedError

# Collective timeout of the "wait for rank 0" group: the other ranks sit in a barrier while rank 0 alone
# evaluates, prunes and exports, which takes minutes on a large validation set. A crashed rank 0 does not
# leave them waiting this long: torchrun stops every worker of a job when one of them fails.
STAGE_WAIT_S = 6 * 3600

_wait_group = None


def dist_info() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) from torchrun's environment; (1, 0, 0) in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return dist_info()[1] == 0


def check_global_batch(batch: int, accumulate: int, world_size: int) -> None:
    """train.batch is the global batch: it must split evenly into world_size x accumulate micro-batches."""
    if accumulate < 1:
        raise ConfigError(f"config key train.accumulate: must be >= 1, got {accumulate}")
    parts = world_size * accumulate
    if batch % parts:
        raise ConfigError(f"config key train.batch: the global batch {batch} must be divisible by world size "
                          f"{world_size} (torchrun --nproc-per-node x --nnodes) x train.accumulate {accumulate}; "
                          f"use e.g. train.batch={max(batch // parts, 1) * parts}")


def init_process_group(timeout_s: float, device_type: str = "cpu") -> None:
    """Join the default process group (nccl on CUDA, gloo on CPU) unless already joined; an endpoint that
    does not answer within `timeout_s` raises DistributedError naming it instead of hanging."""
    import torch.distributed as dist

    world, rank, _ = dist_info()
    if world <= 1 or dist.is_initialized():
        return
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, TimeoutError, ValueError) as exc:  # DistNetworkError/DistStoreError subclass RuntimeError
        raise DistributedError(
            f"rank {rank}/{world} could not join the process group at {where} within "
            f"train.dist_timeout_s={timeout_s:g} s ({type(exc).__name__}); check the "
            "rendezvous endpoint (MASTER_ADDR/MASTER_PORT or --rdzv-endpoint) and that every node started") from None


def wait_for_main() -> None:
    """Barrier on a gloo group with a long timeout (STAGE_WAIT_S): the other ranks wait while rank 0 runs
    the single-process work between training stages. No-op outside a process group."""
    global _wait_group
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=STAGE_WAIT_S))
    dist.barrier(group=_wait_group)


def shutdown() -> None:
    """Leave the process group (and forget the wait group, which belongs to it)."""
    global _wait_group
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = None


def default_device() -> str:
    return f"cuda:{dist_info()[2]}" if torch.cuda.is_available() else "cpu"
