"""DDP with 2 gloo processes on CPU (torch.distributed.run): each rank trains on its own half of every global
batch (the shards are logged and checked disjoint), the ranks' weights stay identical although they see
different images, and on identical images 2 ranks give the same weights as one process with the same global
batch; with train.sync_bn auto (BatchNorm over the global batch, train/global_bn.py) that holds on distinct
images too, and with sync_bn false each rank keeps its own BN statistics."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.config import TrainConfig
from edgeprune.errors import ConfigError

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _images(tmp_path, n=8, distinct=False):
    """n labelled images: copies of one (default) or each its own (distinct=True). Identical samples make a
    2-rank split of a global batch equivalent to one process whatever BatchNorm does (it couples the images
    of a micro-batch); they check gradient averaging and the world-size loss scale, steps per epoch, the
    lr/warm-up schedule, EMA and accumulation. Distinct images check that the ranks train on different data
    and that global-batch BatchNorm makes them one process's batch again."""
    rng = np.random.default_rng(0)
    boxes = [[8, 10, 24, 30], [36, 30, 60, 50]]
    img = rng.integers(60, 120, (64, 64, 3)).astype(np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = (200, 60, 60)
    items = []
    for i in range(n):
        if distinct:    # its own ground, box places and colour
            x, y = int(rng.integers(2, 21)), int(rng.integers(2, 26))
            boxes = [[x, y, x + 16, y + 20], [x + 28, y + 20, x + 34 + i, y + 36]]
            img = rng.integers(60, 120, (64, 64, 3)).astype(np.uint8)
            for x1, y1, x2, y2 in boxes:
                img[y1:y2, x1:x2] = rng.integers(120, 255, 3)
        path = tmp_path / (f"d{i}.png" if distinct else f"{i}.png")
        Image.fromarray(img).save(path)
        items.append({"image": str(path), "boxes": boxes, "classes": [0, 1]})
    index = tmp_path / ("distinct.json" if distinct else "index.json")
    index.write_text(json.dumps(items))
    return index


def _run(index, out, runs, nproc=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable]
    if nproc:
        cmd += ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", "29517"]
    cmd += [str(WORKER), str(index), str(out), *runs]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = {}
    for run in runs:
        d = Path(out) / run.split(":")[0]
        res[d.name] = {p.name: torch.load(p, weights_only=True) for p in sorted(d.glob("rank*.pt"))}
        res[d.name].update({p.name: json.loads(p.read_text()) for p in sorted(d.glob("reads*.json"))})
    return res


def _disjoint_shards(reads, n, epochs=2):
    """Per epoch, rank 0 and rank 1 loaded disjoint halves of the n training samples."""
    r0, r1 = reads["reads0.json"], reads["reads1.json"]
    assert len(r0) == len(r1) == epochs * n // 2, (r0, r1)
    for e in range(epochs):
        a, b = set(r0[e * n // 2:(e + 1) * n // 2]), set(r1[e * n // 2:(e + 1) * n // 2])
        assert not a & b and a | b == set(range(n)), (e, sorted(a), sorted(b))


@pytest.mark.slow
def test_ddp_two_ranks_match_single_process(tmp_path):
    index = _images(tmp_path)
    mixed = _images(tmp_path, distinct=True)
    both = _run(index, tmp_path, ["two:1:4:false", f"mixed:1:4:auto:{mixed}", f"local:1:4:false:{mixed}"], nproc=2)
    ddp = both["two"]
    # one process: the same global batch 4; 2 accumulated micro-batches of 2; a control with batch 2
    one = _run(index, tmp_path, ["one:1:4:false", "acc:2:4:false", "b2:1:2:false", f"mixed1:1:4:false:{mixed}"])
    single = one["one"]["rank0.pt"]
    assert set(ddp) == {"rank0.pt", "rank1.pt", "reads0.json", "reads1.json"}
    _disjoint_shards(ddp, 8)
    assert sorted(one["one"]["reads0.json"]) == sorted(list(range(8)) * 2)    # one process reads everything
    for k in ddp["rank0.pt"]:
        assert torch.equal(ddp["rank0.pt"][k], ddp["rank1.pt"][k]), k      # ranks stay bit-identical
    # 4 SGD steps of the same global batch: the weights differ only by fp32 summation order
    assert _max_diff(single, ddp["rank0.pt"], "param") < 1e-4
    assert _max_diff(single, ddp["rank0.pt"], "running_mean") < 1e-4
    # running_var differs by design with per-rank BN (sync_bn false): each rank's n/(n-1) correction uses its own n
    assert _max_diff(single, ddp["rank0.pt"], "running_var") < 2e-2
    assert (tmp_path / "two" / "last.pt").exists()
    # gradient accumulation keeps the global batch: 2 micro-batches of 2 == 1 batch of 4 (BN running
    # statistics are updated per micro-batch, so only the learnt parameters are compared)
    assert _max_diff(single, one["acc"]["rank0.pt"], "param") < 1e-4
    # the comparison can fail: a global batch of 2 moves the weights far beyond the tolerance
    assert _max_diff(single, one["b2"]["rank0.pt"], "param") > 1e-3

    # distinct images: each rank trains on its own shard; BatchNorm over the global batch (sync_bn auto on CPU)
    # makes the two ranks one process with the global batch, BN statistics included. The tolerance is wider
    # than above because the two sides now run different fp32 BatchNorm code (train/global_bn.py's against
    # ATen's kernel; equal to 1e-13 in float64): one forward/backward of this model differs by ~6e-5
    # relative, 4 steps by ~4e-4 on the weights. Seen: global 4.1e-4 / 2.1e-3 / 3.3e-3 (weights, running
    # means, variances) against per-rank 3.6e-3 / 2.2e-2 / 3.7e-2
    mixed, alone = both["mixed"], one["mixed1"]["rank0.pt"]
    _disjoint_shards(mixed, 8)
    for k in mixed["rank0.pt"]:
        assert torch.equal(mixed["rank0.pt"][k], mixed["rank1.pt"][k]), k
    global_diff = {w: _max_diff(alone, mixed["rank0.pt"], w) for w in ("param", "running_mean", "running_var")}
    # per-rank BatchNorm (sync_bn false): the averaged gradients keep the learnt parameters identical across
    # ranks, but each rank's running statistics are its own images', and the model is not the one process's
    a, b = both["local"]["rank0.pt"], both["local"]["rank1.pt"]
    assert all(torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point() and "running" not in k)
    assert _max_diff(a, b, "running_mean") > 1e-3
    local_diff = {w: _max_diff(alone, a, w) for w in ("param", "running_mean", "running_var")}
    assert global_diff["param"] < 1e-3
    for w in global_diff:
        assert global_diff[w] < local_diff[w] / 4, (w, global_diff, local_diff)


def _max_diff(a, b, which):
    keys = [k for k in a if a[k].is_floating_point()]
    keys = [k for k in keys if (which in k if which != "param" else "running" not in k)]
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in keys)


def test_world_size_must_divide_batch(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model
    from edgeprune.train.trainer import Trainer

    monkeypatch.setenv("WORLD_SIZE", "3")
    data = SimpleNamespace(names=["a"], splits={"train": [object()]})
    with pytest.raises(ConfigError, match="train.batch.*world size 3"):
        Trainer(build_model(new_spec(1)), data, TrainConfig(batch=16), tmp_path)


def test_sync_bn_setting_is_checked():
    from edgeprune.config import make_config

    assert make_config("default").train.sync_bn == "auto"
    with pytest.raises(ConfigError, match="train.sync_bn"):
        make_config("default", {"train": {"sync_bn": "yes"}})


def test_unreachable_rendezvous_is_a_clear_error_within_the_timeout(tmp_path):
    """Rank 1 of 2 whose master never comes up: a DistributedError naming the endpoint, not a 30-minute hang."""
    import socket
    import time

    with socket.socket() as s:            # a free port on loopback with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    index = _images(tmp_path, n=4)
    code = (
        "import json, sys\nfrom pathlib import Path\nfrom types import SimpleNamespace\nimport numpy as np\n"
        "from edgeprune.config import TrainConfig\nfrom edgeprune.errors import DistributedError\n"
        "from edgeprune.train.trainer import fit, new_model\n"
        "items = json.loads(Path(sys.argv[1]).read_text())\n"
        "s = [SimpleNamespace(image=Path(i['image']), boxes=np.asarray(i['boxes'], np.float32), "
        "classes=np.asarray(i['classes'])) for i in items]\n"
        "data = SimpleNamespace(names=['a', 'b'], splits={'train': s, 'val': s[:1]})\n"
        "model, _ = new_model(data, 'n', 64, autoanchor=False)\n"
        "try:\n    fit(model, data, TrainConfig(epochs=1, batch=2, dist_timeout_s=3), sys.argv[2], imgsz=64, progress=False)\n"
        "except DistributedError as exc:\n    print(exc)\n    sys.exit(7)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", WORLD_SIZE="2", RANK="1", LOCAL_RANK="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code, str(index), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr[-2000:]
    assert f"127.0.0.1:{port}" in proc.stdout and "dist_timeout_s" in proc.stdout
    assert time.time() - t0 < 60


def test_global_bn_swaps_the_class_in_place_and_traces_like_batchnorm():
    """The sparsity hook traces the model the trainer has wrapped: a GlobalBatchNorm2d must be the same gate."""
    from torch import nn

    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model
    from edgeprune.sparsity.bnscan import prunable_bns
    from edgeprune.sparsity.graph import trace_channels
    from edgeprune.train.global_bn import GlobalBatchNorm2d, plain_bn, use_global_bn

    model = build_model(new_spec(2)).train()
    bns = prunable_bns(model, trace_channels(model))
    x = torch.rand(2, 3, 64, 64)
    before = model(x)
    assert use_global_bn(model) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(type(m) is GlobalBatchNorm2d for m in bns.values())           # the same objects, new class
    assert list(prunable_bns(model, trace_channels(model))) == list(bns)
    torch.testing.assert_close(model(x), before)    # no process group: BatchNorm2d's own forward
    plain_bn(model)
    assert all(type(m) is nn.BatchNorm2d for m in bns.values())
