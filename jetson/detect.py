"""`edgeprune detect`: run a bundle on an image, a folder of images or a video; write annotated images (or an
annotated video) and JSON lines of boxes. Python 3.6, numpy (+ Pillow for drawing, cv2 for video)."""
import json
import os

import numpy as np

from edgeprune.errors import DeviceError, EdgepruneError
from edgeprune.fsio import AtomicFile, atomic_write_bytes, atomic_write_text

from .imageio import IMAGE_EXTS, VIDEO_EXTS, decode_image, encode_image, list_images

_PALETTE = [(255, 56, 56), (56, 200, 255), (255, 178, 29), (72, 249, 10), (207, 56, 255), (0, 212, 187),
            (255, 112, 31), (132, 56, 255), (255, 55, 199), (146, 204, 23)]


def _cv2():
    try:
        import cv2
        return cv2
    except ImportError:
        raise DeviceError("video input needs OpenCV: on JetPack `sudo apt install python3-opencv`, elsewhere "
                          "`pip install opencv-python-headless`; or extract frames and pass the folder")


def annotate(rgb, dets):
    """A copy of `rgb` with labelled boxes (Pillow; OpenCV when Pillow is absent)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        cv2 = _cv2()
        out = np.ascontiguousarray(rgb.copy())
        for d in dets:
            x1, y1, x2, y2 = [int(round(v)) for v in d["box"]]
            color = _PALETTE[d["class_id"] % len(_PALETTE)]
            cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
            label = "{} {:.2f}".format(d["class_name"], d["score"])
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            lx, ly = label_origin(x1, y1, tw, th + base, out.shape[1], out.shape[0])
            cv2.putText(out, label, (lx, ly + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1)
        return out
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    width = max(1, int(round(max(rgb.shape[:2]) / 400.0)))
    for d in dets:
        color = _PALETTE[d["class_id"] % len(_PALETTE)]
        x1, y1, x2, y2 = d["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        label = "{} {:.2f}".format(d["class_name"], d["score"])
        try:                                            # Pillow >= 9.2; 8.x supports TrueType fonts only
            left, top, right, bottom = draw.textbbox((0, 0), label)
            tw, th = right - left + 2, bottom - top + 2
        except (AttributeError, ValueError):
            tw, th = 6 * len(label) + 2, 11             # the default bitmap font's cell
        lx, ly = label_origin(x1, y1, tw, th, im.size[0], im.size[1])
        draw.rectangle([lx, ly, lx + tw, ly + th], fill=color)
        draw.text((lx + 1, ly), label, fill=(0, 0, 0))
    return np.asarray(im)


def label_origin(x1, y1, tw, th, width, height):
    """Top-left corner of a tw x th label for a box whose top-left is (x1, y1): above the box, or inside its
    top edge when there is no room above; always inside the image."""
    ly = y1 - th if y1 - th >= 0 else y1
    lx = min(max(0, x1), max(0, width - tw))
    return int(round(lx)), int(round(min(max(0, ly), max(0, height - th))))


def _kind(source):
    if os.path.isdir(source):
        return "dir"
    ext = os.path.splitext(source)[1].lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in IMAGE_EXTS or os.path.isfile(source):
        return "image"
    raise DeviceError("--source {}: no such file or folder".format(source))


def _out_name(rel):
    stem = os.path.splitext(rel.replace(os.sep, "__"))[0]
    return stem + ".jpg"


def run_detect(detector, source, out=None, conf=None, iou=None, max_det=None, emit=None):
    """Detect on `source`; returns a summary dict. Each result is one JSON line: written to
    `out/detections.jsonl` (with annotated images) when `out` is set, and passed to `emit` (e.g. print)."""
    if not os.path.exists(source):
        raise DeviceError("--source {}: no such file or folder".format(source))
    kind = _kind(source)
    lines = []
    summary = {"source": source, "kind": kind, "images": 0, "failed": 0, "detections": 0, "out": out,
               "backend": detector.description, "errors": []}

    def record(rec):
        line = json.dumps(rec, sort_keys=True)
        lines.append(line)
        if emit is not None:
            emit(line)

    if kind == "video":
        _run_video(detector, source, out, conf, iou, max_det, record, summary)
    else:
        files = list_images(source) if kind == "dir" else [source]
        if kind == "dir" and not files:
            raise DeviceError("--source {}: no images ({}) in this folder".format(source, ", ".join(IMAGE_EXTS)))
        base = source if kind == "dir" else os.path.dirname(source)
        for path in _progress(files, "detect"):
            rel = os.path.relpath(path, base)
            try:
                img = decode_image(path)
            except EdgepruneError as exc:
                summary["failed"] += 1
                summary["errors"].append({"source": rel, "error": str(exc)})
                record({"source": rel, "error": str(exc)})
                continue
            dets = detector.detect(img, conf, iou, max_det)
            summary["images"] += 1
            summary["detections"] += len(dets)
            rec = {"source": rel, "width": int(img.shape[1]), "height": int(img.shape[0]), "detections": dets,
                   "timing_ms": _round(detector.last_timing)}
            if out:
                rec["annotated"] = _out_name(rel)
                atomic_write_bytes(os.path.join(out, rec["annotated"]), encode_image(annotate(img, dets), ".jpg"))
            record(rec)
    if out:
        atomic_write_text(os.path.join(out, "detections.jsonl"), "".join(line + "\n" for line in lines))
    return summary


def _run_video(detector, source, out, conf, iou, max_det, record, summary):
    cv2 = _cv2()
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise DeviceError("{}: OpenCV cannot open this video (codec missing?)".format(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, atomic, name = None, None, None
    frame_no = 0
    failure = None
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(bgr[..., ::-1])
            dets = detector.detect(rgb, conf, iou, max_det)
            summary["images"] += 1
            summary["detections"] += len(dets)
            record({"source": os.path.basename(source), "frame": frame_no, "width": int(rgb.shape[1]),
                    "height": int(rgb.shape[0]), "detections": dets, "timing_ms": _round(detector.last_timing)})
            if out:
                if writer is None:
                    name = os.path.splitext(os.path.basename(source))[0] + "_annotated.mp4"
                    atomic = AtomicFile(os.path.join(out, name), suffix=".mp4")
                    tmp = atomic.__enter__()
                    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (rgb.shape[1], rgb.shape[0]))
                writer.write(np.ascontiguousarray(annotate(rgb, dets)[..., ::-1]))
            frame_no += 1
    except BaseException as exc:
        failure = exc
        raise
    finally:
        cap.release()
        if writer is not None:
            writer.release()
            # a failed run discards the partial video instead of renaming it into place
            atomic.__exit__(type(failure) if failure else None, failure, None)
            summary["annotated_video"] = name
    if frame_no == 0:
        raise DeviceError("{}: no frames could be read".format(source))


def _round(timing):
    return dict((k, round(v, 3)) for k, v in timing.items())


def _progress(items, desc):
    try:
        from tqdm import tqdm
        return tqdm(items, desc=desc, unit="img", leave=False, disable=len(items) < 20)
    except ImportError:
        return items
