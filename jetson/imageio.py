"""Image decoding/encoding for the device side: Pillow if installed, else OpenCV. Python 3.6, numpy only.

`decode_image` always returns an HxWx3 uint8 RGB array (grey, RGBA, palette and 16-bit images are
converted), so pre-processing sees one format whatever the file was.
"""
import io
import os

import numpy as np

from edgeprune.errors import DeviceError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
MAX_PIXELS = 200 * 1000 * 1000  # refuse decompression bombs (a 14k x 14k aerial tile is fine)


def _pil():
    try:
        from PIL import Image
        return Image
    except ImportError:
        return None


def _cv2():
    try:
        import cv2
        return cv2
    except ImportError:
        return None


def decoder_name():
    if _pil() is not None:
        return "Pillow"
    if _cv2() is not None:
        return "OpenCV"
    return None


def _to_rgb_uint8(arr, name):
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DeviceError("{}: decoded to an unsupported array shape {}".format(name, arr.shape))
    arr = arr[..., :3]
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def decode_image(src, name=None):
    """bytes / bytearray / memoryview / path -> HxWx3 uint8 RGB. DeviceError naming the image on failure."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        name = name or "image bytes ({} B)".format(len(data))
    else:
        path = str(src)
        name = name or path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (IOError, OSError) as exc:
            raise DeviceError("{}: cannot read image: {}".format(name, exc.strerror or exc))
    if not data:
        raise DeviceError("{}: empty file, not an image".format(name))
    Image = _pil()
    if Image is not None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise DeviceError("{}: {}x{} pixels is over the {} pixel limit".format(name, im.size[0], im.size[1],
                                                                                         MAX_PIXELS))
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im)
                    arr = (arr.astype(np.float64) / max(float(arr.max()), 1.0) * 255.0).astype(np.uint8)
                    return _to_rgb_uint8(arr, name)
                return _to_rgb_uint8(np.asarray(im.convert("RGB")), name)
        except DeviceError:
            raise
        except Exception as exc:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
            raise DeviceError("{}: cannot decode image ({}: {}); is it a JPEG/PNG/BMP/TIFF?"
                              .format(name, type(exc).__name__, exc))
    cv2 = _cv2()
    if cv2 is not None:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise DeviceError("{}: cannot decode image (OpenCV imdecode failed); is it a JPEG/PNG/BMP/TIFF?".format(name))
        if arr.ndim == 3:
            arr = arr[..., [2, 1, 0, 3][:arr.shape[2]]]  # BGR(A) -> RGB(A)
        return _to_rgb_uint8(arr, name)
    raise DeviceError("no image decoder: install Pillow (pip install Pillow) or OpenCV (python3-opencv on JetPack)")


def encode_image(rgb, ext=".jpg", quality=90):
    """HxWx3 uint8 RGB -> encoded bytes (JPEG or PNG by extension)."""
    ext = ext.lower()
    Image = _pil()
    if Image is not None:
        buf = io.BytesIO()
        fmt = "PNG" if ext == ".png" else "JPEG"
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format=fmt, quality=quality)
        return buf.getvalue()
    cv2 = _cv2()
    if cv2 is not None:
        ok, enc = cv2.imencode(".png" if ext == ".png" else ".jpg", np.ascontiguousarray(rgb[..., ::-1]))
        if ok:
            return enc.tobytes()
    raise DeviceError("no image encoder: install Pillow (pip install Pillow) or OpenCV")


def list_images(folder):
    """Sorted image files directly inside `folder` and its subfolders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(str(folder)):
        dirnames.sort()
        for fn in sorted(filenames):
            if os.path.splitext(fn)[1].lower() in IMAGE_EXTS:
                found.append(os.path.join(dirpath, fn))
    return found


def image_size(path):
    """(width, height) from the header when Pillow is there (cheap), else by decoding."""
    Image = _pil()
    if Image is not None:
        try:
            with Image.open(str(path)) as im:
                return im.size
        except Exception as exc:
            raise DeviceError("{}: cannot read image header ({})".format(path, exc))
    arr = decode_image(path)
    return arr.shape[1], arr.shape[0]
