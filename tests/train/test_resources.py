"""Thread and worker counts (train/resources.py) and the trainer's persistent loader."""

import os
import time

import pytest
import torch

from edgeprune.config import TrainConfig
from edgeprune.data import load_dataset
from edgeprune.data.synth import ensure_synthetic
from edgeprune.train import resources
from edgeprune.train.resources import free_cores, resolve_procs, resolve_threads, resolve_workers
from edgeprune.train.trainer import Trainer, new_model


def test_free_cores_subtract_the_load_and_keep_one():
    assert free_cores(8, 0.2) == 8
    assert free_cores(8, 2.6) == 5
    assert free_cores(2, 7.0) == 1              # a busy 2-core machine: one thread, never zero
    assert free_cores(4, -1.0) == 4             # never more than the cores


def test_others_load_leaves_out_this_process():
    # 2 CPUs, a 1 s sample of 200 ticks: 150 busy of which this process 100 -> others keep 0.5 CPU busy
    assert resources.others_busy(150, 200, 100, 2) == pytest.approx(0.5)
    assert resources.others_busy(100, 200, 100, 2) == 0.0          # only this process ran: a free machine
    assert resources.others_busy(90, 200, 100, 2) == 0.0           # tick skew never goes negative
    # the real counters: CPU this process burns shows in its own ticks and in the machine's busy ticks
    if resources._own_ticks() is None:
        pytest.skip("no /proc (not Linux)")
    hz = os.sysconf("SC_CLK_TCK")
    t0, o0 = resources._cpu_ticks(), resources._own_ticks()
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    t1, o1 = resources._cpu_ticks(), resources._own_ticks()
    assert o1 - o0 >= 0.2 * hz
    assert t1[0] - t0[0] >= o1 - o0 - 2
    assert 0.0 <= resources.others_load(0.2) <= (os.cpu_count() or 1)


def test_threads_auto_share_free_cores_with_workers_and_ranks(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads("auto", 0, cores=2, load=0.0) == 2
    assert resolve_threads("auto", 0, cores=2, load=5.0) == 1
    assert resolve_threads("auto", 2, cores=16, load=1.0) == 13
    assert resolve_threads("auto", 1, cores=16, load=0.0, local_procs=4) == 3
    assert resolve_threads(3, 0, cores=2, load=9.0) == 3            # an explicit count is kept
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert resolve_threads("auto", 0, cores=2, load=0.0) == 5       # the user's OMP_NUM_THREADS wins


def test_workers_auto_by_device_and_where_they_cannot_start(monkeypatch):
    assert resolve_workers("auto", "cpu", cores=2) == 0
    assert resolve_workers("auto", "cpu", cores=16) == 4
    assert resolve_workers("auto", "cuda", cores=16) == 8
    assert resolve_workers("auto", "cuda", cores=1) == 0
    assert resolve_workers(3, "cpu", cores=2) == 3
    monkeypatch.setattr(resources, "workers_can_start", lambda: False)
    assert resolve_workers("auto", "cuda", cores=16) == 0


def test_procs_auto_one_per_gpu_or_free_core_with_8_images_each():
    assert resolve_procs("auto", 16, cores=2, load=0.0) == 2          # the default batch on a quiet 2-core host
    assert resolve_procs("auto", 16, cores=2, load=1.4) == 1          # one core taken by another job
    assert resolve_procs("auto", 16, cores=16, load=0.0) == 2         # not below 8 images a rank
    assert resolve_procs("auto", 64, cores=16, load=4.0) == 8         # 12 free: 8 is the most that splits 64 by 8+
    assert resolve_procs("auto", 48, cores=16, load=0.0) == 6
    assert resolve_procs("auto", 16, accumulate=2, cores=2, load=0.0) == 1    # 2 x 2 micro-batches of 4: too few
    assert resolve_procs("auto", 64, gpus=4, cores=1, load=0.0) == 4  # GPUs, not cores, when there are GPUs
    assert resolve_procs("auto", 8, cores=8, load=0.0) == 1
    assert resolve_procs(3, 16, cores=2, load=9.0) == 3               # an explicit count is kept


def test_config_accepts_auto_or_counts():
    from edgeprune.config import make_config
    from edgeprune.errors import ConfigError

    assert make_config("quick").train.workers == "auto"
    assert make_config("quick", {"train": {"workers": 2, "threads": 1}}).train.threads == 1
    for bad in ({"workers": -1}, {"threads": 0}, {"threads": "many"}, {"workers": True}):
        with pytest.raises(ConfigError, match="train\\."):
            make_config("quick", {"train": bad})


def test_persistent_workers_give_the_in_process_batches(tmp_path):
    """Two epochs through 2 persistent workers: the same images and targets as loading in the process,
    and a different augmentation in each epoch (the epoch travels with the sampler's indices)."""
    data = load_dataset(ensure_synthetic(tmp_path / "s", 6, 1, 128, seed=3, progress=False))
    model, _ = new_model(data, "n", 128, seed=0, autoanchor=False)
    batches = {}
    for workers in (0, 2):
        cfg = TrainConfig(epochs=2, batch=3, workers=workers, threads=1, mosaic=0.5, hsv=0.5)
        t = Trainer(model, data, cfg, tmp_path / f"w{workers}", imgsz=128, progress=False)
        batches[workers] = [[(x.clone(), y.clone()) for x, y, _ in t._loader(e)] for e in (0, 1)]
        if workers:
            assert t._loader(0)._iterator is not None          # the workers outlived the epoch
    for e in (0, 1):
        for (xa, ya), (xb, yb) in zip(batches[0][e], batches[2][e]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(batches[0][0][0][0], batches[0][1][0][0])


def test_train_cache_setting_changes_no_batch(tmp_path):
    """train.cache=ram keeps the letterboxed images (filled during the first epoch), off never does, and both
    give the trainer the same batches in every epoch; an unknown value is a ConfigError naming the key."""
    from edgeprune.config import make_config
    from edgeprune.errors import ConfigError

    data = load_dataset(ensure_synthetic(tmp_path / "s", 5, 1, 128, seed=4, progress=False))
    model, _ = new_model(data, "n", 128, seed=0, autoanchor=False)
    batches = {}
    for cache in ("ram", "off"):
        cfg = TrainConfig(batch=2, workers=0, threads=1, cache=cache, mosaic=0.5, hsv=0.5)
        t = Trainer(model, data, cfg, tmp_path / cache, imgsz=128, progress=False)
        batches[cache] = [[(x, y) for x, y, _ in t._loader(e)] for e in (0, 1)]
        assert (t.dataset._filled is not None) == (cache == "ram")
        if cache == "ram":
            assert bool(t.dataset._filled.all())
    for e in (0, 1):
        for (xa, ya), (xb, yb) in zip(batches["ram"][e], batches["off"][e], strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ConfigError, match="train.cache"):
        make_config("quick", {"train": {"cache": "disk"}})


def test_shared_cache_is_filled_by_workers_and_changes_no_item(tmp_path):
    """Workers load every image once into the shared cache (the main process sees it filled), and cached
    items equal uncached ones."""
    from edgeprune.data.torchdata import DetectionDataset, collate

    data = load_dataset(ensure_synthetic(tmp_path / "s", 6, 1, 128, seed=3, progress=False))
    samples = data.splits["train"]
    shared = DetectionDataset(samples, 128, augment=True, seed=1, cache=True, shared=True)
    plain = DetectionDataset(samples, 128, augment=True, seed=1, cache=False)
    loader = torch.utils.data.DataLoader(shared, 3, num_workers=2, collate_fn=collate)
    for _ in loader:
        pass
    assert bool(shared._filled.all())
    for epoch in (0, 1):
        for i in range(len(samples)):
            a, b = shared[(epoch, i)], plain[(epoch, i)]
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    canvas = shared.load(0)[0]
    assert not canvas.flags.writeable          # augmentation can never write into the cache
