"""The width / kept-ratio / gamma plots: one readable label per layer, zeroed channels drawn apart."""
import numpy as np
from PIL import Image

from edgeprune.prune.io import plot_widths, short_layer_name
from edgeprune.sparsity.hook import HIST_EDGES, gamma_histogram
from edgeprune.sparsity.plots import plot_gamma_hist, plot_kept

LAYERS = [f"layers.{i}.m.0.cv1.conv" for i in range(60)]


def test_short_layer_names():
    assert short_layer_name("layers.6.m.0.cv1.conv") == "6.m.0.cv1"
    assert short_layer_name("layers.23.cv3.bn") == "23.cv3"
    assert short_layer_name("detect.m.0") == "detect.m.0"


def test_width_and_kept_plots_grow_downwards_with_the_layers(tmp_path):
    table = [{"layer": n, "before": 64, "after": 16 + 8 * (i % 3), "junction": i % 5 == 0} for i, n in enumerate(LAYERS)]
    plot_widths(table, tmp_path / "w.png")
    ratios = {"mode": "l1rr", "flops_reduction": 0.8,
              "layers": {n.replace(".conv", ".bn"): {"channels": 64, "keep_idx": list(range(16))} for n in LAYERS}}
    plot_kept(ratios, tmp_path / "k.png")
    for name in ("w.png", "k.png"):
        with Image.open(tmp_path / name) as im:
            w, h = im.size
        assert h > 1.5 * w, name          # one horizontal row per layer, labels horizontal and legible


def test_zeroed_gammas_are_counted_apart(tmp_path):
    gam = np.r_[np.zeros(30), np.full(10, 0.5)].astype(np.float32)
    import torch
    hist = gamma_histogram(torch.from_numpy(gam))
    assert hist[0] == 30 and sum(hist) == 40       # exact zeros land in the first bin (clipped to 1e-5)
    log = {"hist_edges_log10": HIST_EDGES.tolist(), "zero_threshold": 0.01,
           "epochs": [{"epoch": -1, "hist": gamma_histogram(torch.ones(40))}, {"epoch": 0, "hist": hist}]}
    plot_gamma_hist(log, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
