"""`edgeprune export` / `edgeprune verify` as functions: model -> verified, parity-checked deploy bundle."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ExportConfig, ModelConfig
from ..data.samples import read_image
from ..errors import BundleError, ExportError
from ..models.spec import validate_spec
from . import ort_run
from .bundle import read_bundle, write_bundle
from .nms_plugin import append_efficient_nms
from .onnx_export import export_onnx, graph_summary, load_onnx
from .parity import load_images, match_detections, run_parity, synthetic_images
from .source import DECODED_LAYOUTS, detection_head, load_source
from .verify import conv_flops, verify_graph


def _val_images(dataset: Any, limit: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Images + truth from a Dataset's val split (Sample: image path, boxes xyxy in pixels, classes)."""
    images, truth = [], []
    for sample in dataset.splits["val"][:limit]:
        images.append(read_image(sample.image))
        truth.append((np.asarray(sample.boxes, np.float32).reshape(-1, 4), np.asarray(sample.classes, np.int64)))
    return images, truth


def export_bundle(source: str | Path, out: str | Path, export: ExportConfig | None = None, dataset: Any = None, *,
                  metrics: dict[str, Any] | None = None, imgsz: int | None = None, int8: bool = False,
                  calib: str | Path | None = None, images: str | Path | None = None, conf: float = 0.25,
                  iou: float = 0.45, max_det: int = 300, model_factory: str | None = None,
                  weights: str | Path | None = None, names: Any = None, output_layout: str | None = None,
                  strides: list[int] | None = None) -> dict[str, Any]:
    """Model folder/checkpoint -> verified, parity-checked bundle. `export` (the config's export section, the one
    home of its defaults: opset, dynamic batch, onnxsim, NMS plugin, parity settings; the CLI builds it with
    config_from_args) and `imgsz` (default: the source's, else ModelConfig's); `dataset` (a Dataset) supplies
    val images with truth for the parity check (then mAP through ORT must match mAP through torch); `metrics`
    overrides the source's metrics. `model_factory` (+ `weights`, or a `source` folder of model.json) exports a
    factory-built detector; `names` / `output_layout` / `strides` declare its head (export.source.detection_head)."""
    ec = export if export is not None else ExportConfig()
    opset, dynamic_batch, simplify, nms_plugin = ec.opset, ec.dynamic_batch, ec.simplify, ec.nms_plugin
    parity_images, parity_atol, parity_min_match = ec.parity_images, ec.parity_atol, ec.parity_min_match
    if int8 and calib is None:
        raise ExportError("--int8 needs --calib DIR (a folder of .npy calibration batches; see `edgeprune calib build`)")
    src = load_source(source, model_factory, weights)
    size = imgsz or src.imgsz or ModelConfig.imgsz
    head = detection_head(src, size, names, output_layout, strides)
    model, spec, layout, nc = src.model, src.spec, head["output_layout"], len(head["names"])
    exp = export_onnx(model, size, opset=opset, dynamic_batch=dynamic_batch, do_simplify=simplify,
                      stride=max(head["strides"], default=1), atol=parity_atol)
    verify_report = verify_graph(exp.model, spec, exp.conv_nodes, src.recombination)
    truth = None
    if images:
        imgs, image_source = load_images(images, parity_images), str(images)
    elif dataset is not None and dataset.splits.get("val"):
        (imgs, truth), image_source = _val_images(dataset, parity_images), "dataset val split"
    else:
        imgs, image_source = synthetic_images(parity_images, size), "synthetic (no images given)"
    parity = run_parity(model, exp.model, imgs, size, truth=truth, atol=parity_atol, min_match=parity_min_match,
                        layout=layout)
    parity["image_source"] = image_source
    reports: dict[str, dict[str, Any]] = {"verify": verify_report, "parity": parity}
    int8_graph = None
    if int8:
        from .quantize import head_nodes, quantize_int8

        int8_graph, info = quantize_int8(exp.model, calib, float_nodes=head_nodes(exp.conv_nodes, exp.model))
        info.update(int8_fidelity(exp.model, int8_graph, imgs, size, layout=layout))
        reports["int8"] = info
    graph = exp.model
    nms = "none"
    if nms_plugin:
        anchor_free = layout == "anchor_free_decoded"
        graph = append_efficient_nms(graph, nc, conf, iou, max_det, anchor_free)
        int8_graph = (append_efficient_nms(int8_graph, nc, conf, iou, max_det, anchor_free)
                      if int8_graph else None)
        nms = "efficient_nms"
    known = {**src.metrics, **(metrics or {})}
    bundle_metrics = {k: float(known[k]) for k in ("map50", "map") if isinstance(known.get(k), (int, float))}
    bundle_metrics["params"] = int(sum(p.numel() for p in model.parameters()))
    bundle_metrics["flops"] = conv_flops(exp.model) // exp.input_shape[0]
    manifest = write_bundle(out, spec, exp, graph, nms=nms, conf=conf, iou=iou, max_det=max_det,
                            metrics=bundle_metrics, recombination=src.recombination, reports=reports,
                            int8_graph=int8_graph, calib_dir=calib if int8 else None)
    parity_summary = {k: parity[k] for k in ("max_abs_diff", "max_abs_diff_at", "detection_match",
                                             "detection_agreement", "near_ties", "images", "image_source")}
    parity_summary.update({k: parity[k] for k in ("map_torch", "map_ort") if k in parity})
    return {"bundle": str(out), "manifest": manifest, "graph": graph_summary(graph),
            "verify": {"status": "passed", **verify_report["checked"]}, "parity": parity_summary,
            "int8": reports.get("int8")}


def int8_fidelity(fp32, int8, images: list[np.ndarray], imgsz: int, conf: float = 0.25, iou: float = 0.45,
                  layout: str = "yolov5_decoded") -> dict[str, Any]:
    """INT8 vs FP32 through ORT on the same images: output drift, detection agreement and CPU latency."""
    from jetson.postprocess import postprocess
    from jetson.preprocess import preprocess

    s32, s8 = ort_run.session(fp32), ort_run.session(int8)
    d32, d8, diffs = [], [], []
    for img in images:
        x, _ = preprocess(img, imgsz)
        a, b = ort_run.run(s32, x), ort_run.run(s8, x)
        diffs.append(float(np.abs(a[..., 4:] - b[..., 4:]).max()))
        d32.append(postprocess(a, conf, iou, layout=layout)[0])
        d8.append(postprocess(b, conf, iou, layout=layout)[0])
    x, _ = preprocess(images[0], imgsz)
    return {"max_abs_diff_scores": max(diffs), "detection_match_iou50": match_detections(d32, d8, 0.5, 0.1),
            "latency_ms_fp32": ort_latency_ms(s32, x), "latency_ms_int8": ort_latency_ms(s8, x)}


def ort_latency_ms(sess, x: np.ndarray, warmup: int = 3, iters: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        ort_run.run(sess, x)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        ort_run.run(sess, x)
        times.append((time.perf_counter() - t) * 1000.0)
    return {"mean": float(np.mean(times)), "p50": float(np.percentile(times, 50)), "min": float(np.min(times))}


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """Re-check a bundle: manifest + sha256, graphsurgeon pass against its arch spec/map, ORT smoke run."""
    manifest = read_bundle(path)
    root = Path(manifest["_root"])
    extra = manifest["extra_files"]
    graph = load_onnx(root / manifest["model"]["file"])
    spec = conv_nodes = rec = None
    described = "arch" if "arch" in extra else "model" if "model" in extra else None
    if described and "onnx_map" in extra:
        try:
            spec = json.loads((root / extra[described]).read_text())
            if described == "arch":
                spec = validate_spec(spec, str(root / extra["arch"]))
            elif not isinstance(spec.get("factory"), str) or not isinstance(spec.get("modules"), dict):
                raise ValueError("model.json lacks 'factory' or 'modules'")
            conv_nodes = json.loads((root / extra["onnx_map"]).read_text())["conv_nodes"]
            rec = json.loads((root / extra["recombination"]).read_text()) if "recombination" in extra else None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{root}: {extra[described]} / onnx_map.json / recombination.json unreadable "
                              f"({exc})") from None
    report = verify_graph(graph, spec, conv_nodes, rec)
    smoke: dict[str, Any] = {"skipped": "EfficientNMS_TRT runs in TensorRT only"}
    if manifest["model"]["nms"] == "none":
        shape = [max(int(d), 1) for d in manifest["model"]["input_shape"]]
        out = ort_run.run(ort_run.session(graph), np.random.default_rng(0).random(shape, dtype=np.float32))
        cols = DECODED_LAYOUTS[manifest["model"]["output_layout"]] + len(manifest["classes"])
        if out.ndim != 3 or out.shape[2] != cols or not np.isfinite(out).all():
            raise BundleError(f"{root}: ORT smoke run gave output {list(out.shape)} (finite: {bool(np.isfinite(out).all())}), "
                              f"expected [B, N, {cols}] ({manifest['model']['output_layout']})")
        smoke = {"output_shape": list(out.shape)}
    return {"bundle": str(root), "sha256": "ok", "verify": report["checked"], "smoke": smoke,
            "model": manifest["model"]["file"], "nms": manifest["model"]["nms"]}
