"""A latency table measured on the spot with ONNX Runtime: the model is exported to a temporary bundle and
profiled as `edgeprune bench --profile-layers` profiles one. Here, not in prune/latency.py, because it exports
(prune/ would import export/, which imports prune.latency for the layer geometry: an import cycle)."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..models.spec import with_widths
from .bundle import write_bundle
from .onnx_export import export_onnx


def measure_table_ort(model: nn.Module, imgsz: int, threads: int = 1, iterations: int = 10, min_channels: int = 8,
                      clock: str = "cpu", statistic: str = "median",
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A latency table of `model` (an edgeprune detector) measured on the spot on this host with ONNX Runtime
    CPU: the model is exported to a temporary bundle and profiled exactly as `edgeprune bench --profile-layers`
    profiles one (jetson.layerprof.profile_bundle). clock 'cpu' (one thread): on a machine running other jobs
    the wall clock of the whole model absorbs their load into rest_ms (a quick compress at load 9 measured a
    7.9 ms rest beside 2.6 ms of conv blocks, and no budget below 0.83 of dense could be met)."""
    import tempfile

    from jetson.layerprof import OrtLayerTimer, profile_bundle
    from jetson.runtime import load_detector

    if next(model.parameters()).device.type != "cpu":   # the solver's model may sit on a GPU
        import copy
        model = copy.deepcopy(model).cpu()
    exp = export_onnx(model, imgsz)  # simplified, as the deployed bundle is
    with tempfile.TemporaryDirectory(prefix="edgeprune-table-") as folder:
        write_bundle(folder, with_widths(model.spec, model.conv_widths()), exp, exp.model)
        det = load_detector(folder, backend="onnxruntime", threads=threads)
        try:
            return profile_bundle(det, OrtLayerTimer(threads=threads, clock=clock), "host", min_channels=min_channels,
                                  iterations=iterations, warmup=2, log=log, statistic=statistic)
        finally:
            det.close()
