"""The deploy bundle: model.onnx + manifest.json (docs/CONTRACTS.md) + serving configs + reports.

The manifest is written last, so a folder with a manifest is a complete bundle. Every path in it is relative
and stays inside the bundle; `read_bundle` re-checks that and the sha256 of every model file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from .. import __version__
from ..errors import BundleError
from ..models.spec import output_layout
from ..fsio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from .deploy_configs import deepstream_config, triton_config
from .onnx_export import INPUT_NAME, OUTPUT_NAME, ExportResult, save_onnx
from .nms_plugin import NMS_OUTPUTS

SCHEMA_VERSION = 1
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def description_file(spec: dict[str, Any]) -> tuple[str, str, str]:
    """(extra_files key, file name, output layout) of the model description a bundle carries: an edgeprune
    arch spec (arch.json), or a factory-built model's model.json (edgeprune.prune.anymodel: the factory and
    its modules' widths, plus the detection head export.source.detection_head declared)."""
    if "factory" in spec:
        return "model", "model.json", spec["output_layout"]
    return "arch", "arch.json", output_layout(spec)


def recombination_summary(recombination: dict[str, Any] | None) -> dict[str, Any]:
    if not recombination:
        return {"rule": None, "junctions": 0, "channels_removed": 0}
    junctions = recombination.get("junctions", [])
    removed = sum(int(j.get("channels_before", len(j.get("kept", [])))) - len(j.get("kept", [])) for j in junctions)
    return {"rule": recombination.get("rule"), "junctions": len(junctions), "channels_removed": int(removed)}


def build_manifest(spec: dict[str, Any], export: ExportResult, model_sha: str, *, nms: str = "none",
                   conf: float = 0.25, iou: float = 0.45, max_det: int = 300, metrics: dict[str, Any] | None = None,
                   recombination: dict[str, Any] | None = None, extra_files: dict[str, str] | None = None,
                   extra_sha256: dict[str, str] | None = None) -> dict[str, Any]:
    h, w = export.input_shape[2:]
    # -1 marks the symbolic batch (the device loader's convention).
    input_shape = [-1 if export.dynamic_batch else export.input_shape[0], 3, h, w]
    return {
        "schema_version": SCHEMA_VERSION,
        "producer": {"name": "edgeprune", "version": __version__},
        "model": {"file": MODEL_FILE, "sha256": model_sha, "opset": export.opset, "input_name": INPUT_NAME,
                  "input_shape": input_shape, "dynamic_batch": export.dynamic_batch,
                  "output_names": list(NMS_OUTPUTS) if nms == "efficient_nms" else [OUTPUT_NAME],
                  "output_layout": "efficient_nms" if nms == "efficient_nms" else description_file(spec)[2],
                  "nms": nms},
        "classes": list(spec["names"]),
        "preprocess": {"size": [h, w], "pad_value": 114, "color": "RGB", "scale": 1.0 / 255.0,
                       "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "layout": "NCHW"},
        "postprocess": {"conf_threshold": conf, "iou_threshold": iou, "max_detections": max_det,
                        "class_agnostic": False},
        "strides": list(spec["strides"]), "anchors": [list(a) for a in spec.get("anchors", [])],
        "metrics": {"map50": None, "map": None, "params": 0, "flops": 0, **(metrics or {})},
        "recombination": recombination_summary(recombination),
        "extra_files": dict(extra_files or {}),
        "extra_sha256": dict(extra_sha256 or {}),
    }


def _copy_calib(calib_dir: Path, dest: Path) -> None:
    """Copy the calibration batches (and their manifest) so the device can build TensorRT INT8 engines."""
    for src in sorted(calib_dir.iterdir()):
        if src.is_file() and (src.suffix == ".npy" or src.name == "manifest.json"):
            atomic_write_bytes(dest / src.name, src.read_bytes())


def write_bundle(out_dir: str | Path, spec: dict[str, Any], export: ExportResult, graph: onnx.ModelProto, *,
                 nms: str = "none", conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                 metrics: dict[str, Any] | None = None, recombination: dict[str, Any] | None = None,
                 reports: dict[str, dict[str, Any]] | None = None, int8_graph: onnx.ModelProto | None = None,
                 calib_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the bundle folder; returns the manifest. `graph` is what goes to model.onnx (with or without NMS);
    `spec` is the model's description (`description_file`)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another --out")
    stale = out / "manifest.json"
    if stale.exists():
        stale.unlink()  # the bundle is incomplete until the new manifest lands
    save_onnx(graph, out / MODEL_FILE)
    key, name, _ = description_file(spec)
    extra: dict[str, str] = {key: name, "onnx_map": "onnx_map.json"}
    atomic_write_json(out / name, spec)
    atomic_write_json(out / "onnx_map.json", {"version": 1, "conv_nodes": export.conv_nodes})
    if export.layers is not None:
        atomic_write_json(out / "layers.json", export.layers)
        extra["layers"] = "layers.json"
    if recombination:
        atomic_write_json(out / "recombination.json", recombination)
        extra["recombination"] = "recombination.json"
    for name, report in (reports or {}).items():
        atomic_write_json(out / "reports" / f"{name}.json", report)
        extra[f"{name}_report"] = f"reports/{name}.json"
    shas: dict[str, str] = {}
    if int8_graph is not None:
        save_onnx(int8_graph, out / INT8_FILE)
        extra["int8_model"] = INT8_FILE
        shas[INT8_FILE] = sha256_file(out / INT8_FILE)
    if calib_dir is not None:
        _copy_calib(Path(calib_dir), out / "calib")
        if (out / "calib" / "manifest.json").is_file():
            extra["calib"] = "calib/manifest.json"
    atomic_write_text(out / "labels.txt", "\n".join(spec["names"]) + "\n")
    extra.update({"labels": "labels.txt", "triton_config": "config.pbtxt", "deepstream_config": "deepstream_nvinfer.txt"})
    manifest = build_manifest(spec, export, sha256_file(out / MODEL_FILE), nms=nms, conf=conf, iou=iou,
                              max_det=max_det, metrics=metrics, recombination=recombination, extra_files=extra,
                              extra_sha256=shas)
    atomic_write_text(out / "config.pbtxt", triton_config(manifest))
    atomic_write_text(out / "deepstream_nvinfer.txt",
                      deepstream_config(manifest, "int8" if int8_graph is not None else "fp16"))
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _inside(root: Path, rel: Any, key: str) -> Path:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise BundleError(f"{root / 'manifest.json'}: {key} must be a relative path, got {rel!r}")
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"{root / 'manifest.json'}: {key} = {rel!r} points outside the bundle")
    return path


def read_bundle(path: str | Path) -> dict[str, Any]:
    """Load and validate a bundle's manifest; checks schema, paths and sha256 of model files."""
    root = Path(path)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise BundleError(f"{mpath}: no manifest; is {root} a bundle written by `edgeprune export`?")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc}); re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        got = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise BundleError(f"{mpath}: schema_version {got!r} is not supported (this edgeprune reads {SCHEMA_VERSION})")
    for key in ("model", "classes", "preprocess", "postprocess", "strides", "anchors", "extra_files"):
        if key not in manifest:
            raise BundleError(f"{mpath}: key {key!r} is missing")
    model = manifest["model"]
    mfile = _inside(root, model.get("file"), "model.file")
    if not mfile.is_file():
        raise BundleError(f"{mfile}: the bundle's model file is missing")
    if sha256_file(mfile) != model.get("sha256"):
        raise BundleError(f"{mfile}: sha256 does not match manifest.json (file changed or corrupted); re-export")
    for key, rel in manifest["extra_files"].items():
        if not _inside(root, rel, f"extra_files.{key}").is_file():
            raise BundleError(f"{root / rel}: listed in manifest extra_files.{key} but missing")
    for rel, sha in manifest.get("extra_sha256", {}).items():
        if sha256_file(_inside(root, rel, f"extra_sha256[{rel}]")) != sha:
            raise BundleError(f"{root / rel}: sha256 does not match manifest.json; re-export")
    manifest["_root"] = str(root)
    return manifest

