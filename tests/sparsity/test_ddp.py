"""Self-adaptive lambdas stay identical across DDP ranks (real gloo process group, 2 processes)."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from edgeprune.config import make_config
from edgeprune.sparsity.regularizer import L1RRRegularizer


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        # the last conv keeps BN 3 off the model's output (output channels are fixed: not penalised)
        net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8),
                            nn.Conv2d(8, 4, 1))
        reg = L1RRRegularizer(net, make_config("quick").sparse, 10)
        reg.observe_importance({"1": torch.full((8,), 1.0 + rank), "3": torch.full((8,), 10.0 * (rank + 1))})
        out[rank] = dict(reg.importance)
    finally:
        dist.destroy_process_group()


def test_importance_is_averaged_over_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
        res = dict(out)
    assert res[0] == res[1] == {"1": 1.5, "3": 15.0}
