"""`load_detector`: a bundle + a backend -> an object that turns RGB images into boxes. Python 3.6, no torch.

Pre- and post-processing come from the manifest through jetson.preprocess / jetson.postprocess, the one
implementation the host evaluation uses too. See docs/CONTRACTS.md ("Device runtime") for the interface.
"""
import time

import numpy as np

from edgeprune.errors import DeviceError

from . import postprocess as post
from .backends import resolve_backend
from .bundle import extra_file, load_bundle, model_file, public_manifest
from .preprocess import preprocess_from_manifest
from .profiles import PRECISIONS, get_profile


def _ms(t0):
    return (time.perf_counter() - t0) * 1000.0


class Detector(object):
    """Runs one bundle on one backend. Not thread-safe: give each worker thread its own (a CUDA context is
    bound to the thread that created it)."""

    def __init__(self, manifest, backend, profile):
        self.manifest = manifest
        self.backend = backend
        self.profile = profile
        self.device = profile.name
        self.backend_name = backend.name
        self.description = backend.description
        self.precision = backend.precision
        self.classes = list(manifest["classes"])
        self.input_shape = list(manifest["model"]["input_shape"])
        self.last_timing = {}

    # -- the three phases, public so bench can time them separately --------------------------------
    def preprocess(self, image):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DeviceError("detect() needs an HxWx3 uint8 RGB array (jetson.imageio.decode_image makes one), got {}"
                              .format(_describe(image)))
        return preprocess_from_manifest(image, self.manifest)

    def infer(self, batch):
        """Raw outputs for a float32 NCHW batch of any size: split (and padded) to a fixed-batch model's batch,
        or split to a dynamic TensorRT engine's profile maximum."""
        batch = np.asarray(batch, dtype=np.float32)
        exp = self.input_shape
        if batch.ndim != 4 or list(batch.shape[1:]) != exp[1:]:
            raise DeviceError("infer(): input {} does not match the bundle's input_shape {}".format(batch.shape, exp))
        fixed, top = self.backend.batch, self.backend.max_batch
        step = fixed or top
        if step is None or batch.shape[0] == fixed or (fixed is None and batch.shape[0] <= top):
            return self.backend.infer(batch)
        chunks = []
        for i in range(0, batch.shape[0], step):
            part = batch[i:i + step]
            n = part.shape[0]
            if fixed and n < fixed:  # pad the last chunk with copies of its last image, drop those rows after
                part = np.concatenate([part, np.repeat(part[-1:], fixed - n, axis=0)])
            chunks.append([o[:n] for o in self.backend.infer(part)])
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    def postprocess(self, outputs, metas, conf=None, iou=None, max_det=None):
        p = self.manifest["postprocess"]
        conf = p["conf_threshold"] if conf is None else float(conf)
        iou = p["iou_threshold"] if iou is None else float(iou)
        max_det = p["max_detections"] if max_det is None else int(max_det)
        if self.manifest["model"]["output_layout"] == "efficient_nms":
            per_image = post.from_efficient_nms(outputs, conf, max_det)
        else:
            per_image = post.postprocess(outputs[0], conf, iou, max_det, p.get("class_agnostic", False),
                                         layout=self.manifest["model"]["output_layout"])
        results = []
        for (boxes, scores, cls), meta in zip(per_image, metas):
            boxes = post.scale_boxes(boxes, meta)
            results.append([self._det(b, s, c) for b, s, c in zip(boxes, scores, cls)])
        return results

    def _det(self, box, score, cls):
        cid = int(cls)
        name = self.classes[cid] if 0 <= cid < len(self.classes) else str(cid)
        return {"box": [round(float(v), 2) for v in box], "score": round(float(score), 5), "class_id": cid,
                "class_name": name}

    # -- the public calls -----------------------------------------------------------------------------
    def detect(self, image, conf=None, iou=None, max_det=None):
        """HxWx3 uint8 RGB -> [{"box": [x1, y1, x2, y2] (source pixels), "score", "class_id", "class_name"}]."""
        return self.detect_batch([image], conf, iou, max_det)[0]

    def detect_batch(self, images, conf=None, iou=None, max_det=None):
        """Several images in one inference call (micro-batching); one detection list per image."""
        t0 = time.perf_counter()
        tensors, metas = [], []
        for img in images:
            x, meta = self.preprocess(img)
            tensors.append(x)
            metas.append(meta)
        t1 = time.perf_counter()
        outputs = self.infer(np.concatenate(tensors))
        t2 = time.perf_counter()
        dets = self.postprocess(outputs, metas, conf, iou, max_det)
        t3 = time.perf_counter()
        self.last_timing = {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
                            "total": (t3 - t0) * 1e3}
        if self.backend.last_split:
            self.last_timing.update(self.backend.last_split)
        return dets

    def info(self):
        return {"backend": self.backend_name, "description": self.description, "device": self.device,
                "precision": self.precision, "input_shape": self.input_shape,
                "bundle": self.manifest["_root"], "model_sha256": self.manifest["model"]["sha256"]}

    def public_manifest(self):
        return public_manifest(self.manifest)

    def close(self):
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _describe(x):
    if isinstance(x, np.ndarray):
        return "array {} {}".format(x.shape, x.dtype)
    return type(x).__name__


def load_detector(bundle, backend="auto", device="host", precision="fp32", threads=None, cache_dir=None,
                  workspace_mb=None, dla_core=None, log=None):
    """Open a bundle (path or a manifest from load_bundle) on a backend.

    backend: auto | tensorrt | onnxruntime ('auto' = TensorRT when importable). device: a profile name
    (jetson.profiles); with onnxruntime it only selects defaults, nothing is built for it. precision:
    fp32 | fp16 | int8 (TensorRT builds/caches an engine; onnxruntime runs fp32 or the bundle's QDQ int8 model).
    """
    manifest = bundle if isinstance(bundle, dict) and "_root" in bundle else load_bundle(bundle)
    if precision not in PRECISIONS:
        raise DeviceError("precision {!r}: choose one of {}".format(precision, ", ".join(PRECISIONS)))
    profile = get_profile(device)
    name = resolve_backend(backend)
    if name == "onnxruntime":
        from .backends.ort import OrtBackend, ort_precision
        has_int8 = extra_file(manifest, "int8_model", required=False) is not None
        prec = ort_precision(precision, has_int8)
        path = extra_file(manifest, "int8_model") if prec == "int8" else model_file(manifest)
        impl = OrtBackend(path, device=profile.name, precision=prec, threads=threads,
                          output_names=manifest["model"]["output_names"])
    else:
        from .engine import get_engine
        from .backends.trt import open_trt_backend
        plan_path, prec = get_engine(manifest, profile, precision, cache_dir=cache_dir, workspace_mb=workspace_mb,
                                     dla_core=dla_core, log=log)
        impl = open_trt_backend(plan_path, device=profile.name, precision=prec,
                                output_names=manifest["model"]["output_names"], dla_core=dla_core)
    return Detector(manifest, impl, profile)
