"""The one image I/O module of the project (device and host): extensions, listing, decoding, encoding.
Pillow if installed, else OpenCV; Python 3.6, numpy only. The host (data/, export/, metrics/, the synthetic
generator) reads images through `edgeprune.data.samples.read_image`, a thin DataError wrapper of `decode_image`,
so training, evaluation and the device decode an image the same way.

`decode_image` always returns an HxWx3 uint8 RGB array (grey, RGBA, palette and 16-bit images are
converted), so pre-processing sees one format whatever the file was.

`probe_image` sizes encoded bytes from their headers alone, before any pixel is decoded, so a server can
refuse a decompression bomb (a small file that decodes to gigabytes) and budget the memory of a decode.
"""
import io
import os
import re
import struct
import zlib

import numpy as np

from edgeprune.errors import DeviceError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
MAX_PIXELS = 200 * 1000 * 1000  # refuse decompression bombs; Pillow's MAX_IMAGE_PIXELS (~89 MP) applies too
MAX_JPEG_SEGMENTS = 10000  # real JPEGs have tens of marker segments; bounds the header walk's CPU


class ImageTooLarge(DeviceError):
    """The header announces more pixels than allowed: refused before decoding (HTTP 413 in the server)."""


def pixel_limit(max_pixels=MAX_PIXELS):
    """`max_pixels`, lowered to Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS) when set."""
    Image = _pil()
    pil_limit = getattr(Image, "MAX_IMAGE_PIXELS", None) if Image is not None else None
    return min(int(max_pixels), int(pil_limit)) if pil_limit else int(max_pixels)


def _png_size(data):
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# A marker: 0xFF then a code that is not a stuffed zero, a restart marker (RST0-7) or a fill byte. Searching for
# it skips junk between segments (decoders resync the same way) and the entropy-coded data after each SOS.
_JPEG_MARKER = re.compile(b"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_sizes(data):
    """(width, height) of every frame header (SOFn) in a JPEG, walking its marker segments up to EOI."""
    if data[:2] != b"\xff\xd8":
        return None
    sizes, i = [], 2
    for _ in range(MAX_JPEG_SEGMENTS):
        m = _JPEG_MARKER.search(data, i)
        if m is None:
            return sizes
        i, marker = m.start(), data[m.start() + 1]
        if marker == 0xD9:  # EOI
            return sizes
        if marker in (0x01, 0xD8) or i + 4 > len(data):  # no length field (TEM, SOI) / cut off
            i += 2
            continue
        if marker in _JPEG_SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            sizes.append((width, height))
        i += 2 + max(struct.unpack(">H", data[i + 2:i + 4])[0], 2)
    raise DeviceError("JPEG header has more than {} marker segments; not a plausible image".format(
        MAX_JPEG_SEGMENTS))


def _webp_size(data):
    """Canvas size of a WebP (VP8X, lossy VP8 or lossless VP8L). Parsed here because Pillow's WebP opener
    hands the file to libwebp's animation decoder, which allocates the whole canvas at open."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return (1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little"))
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


# Bytes per pixel Pillow holds for a mode once loaded (multi-band modes are stored 4 bytes a pixel).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def decode_cost(width, height, mode="RGB"):
    """Peak bytes `decode_image` holds for a width x height image: the loaded image in its mode, the RGB
    conversion (4 B/px in Pillow) and the numpy copy (3 B/px)."""
    return int(width) * int(height) * (_MODE_BYTES.get(mode, 4) + 4 + 3)


def _refuse_if_over(width, height, limit, name):
    if width * height > limit:
        raise ImageTooLarge("{}: {}x{} pixels is over the {} pixel limit (read from the header, not decoded)"
                            .format(name, width, height, limit))


def _own_sizes(data, limit, name):
    """Sizes read by the parsers above (empty for other formats), each checked against `limit`."""
    png = _png_size(data)
    own = [png] if png is not None else _jpeg_sizes(data)
    if own is None:
        webp = _webp_size(data)
        own = [webp] if webp is not None else []
    for width, height in own:
        _refuse_if_over(width, height, limit, name)
    return own


def probe_image(data, max_pixels=MAX_PIXELS, name=None):
    """Encoded image bytes -> (width, height, decode_cost bytes), from headers only: no pixel is decoded.
    PNG, JPEG (every SOF marker) and WebP headers are read here; any other format through Pillow's lazy open
    (it reads the header; pixels load later). ImageTooLarge when over `pixel_limit(max_pixels)`; DeviceError
    when the size cannot be read (then the image is not decoded either)."""
    data = bytes(data)
    name = name or "image bytes ({} B)".format(len(data))
    limit = pixel_limit(max_pixels)
    own = _own_sizes(data, limit, name)
    Image = _pil()
    if Image is None:
        if not own:
            raise DeviceError("{}: cannot read its size without Pillow (only PNG, JPEG and WebP headers are read "
                              "here); install Pillow or send a PNG/JPEG".format(name))
        width, height = max(own, key=lambda wh: wh[0] * wh[1])
        return width, height, decode_cost(width, height)
    if own and data[:4] == b"RIFF":  # WebP: sized above, never opened before the decode (see _webp_size)
        width, height = own[0]
        return width, height, decode_cost(width, height, "RGBA")
    try:
        with Image.open(io.BytesIO(data)) as im:
            (width, height), mode = im.size, im.mode
    except Exception as exc:  # UnidentifiedImageError, DecompressionBombError, SyntaxError, struct.error, ...
        if type(exc).__name__ == "DecompressionBombError":
            raise ImageTooLarge("{}: {}".format(name, exc))
        raise DeviceError("{}: cannot decode image ({}: {}); is it a JPEG/PNG/BMP/TIFF/WebP?"
                          .format(name, type(exc).__name__, exc))
    width, height = max(own + [(width, height)], key=lambda wh: wh[0] * wh[1])
    _refuse_if_over(width, height, limit, name)
    return width, height, decode_cost(width, height, mode)


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


def decode_image(src, name=None, max_pixels=MAX_PIXELS):
    """bytes / bytearray / memoryview / path -> HxWx3 uint8 RGB. DeviceError naming the image on failure;
    ImageTooLarge (before any pixel is decoded) when over `pixel_limit(max_pixels)`."""
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
        probe_image(data, max_pixels, name)  # sized from the header before a pixel is decoded
        try:
            with Image.open(io.BytesIO(data)) as im:
                _refuse_if_over(im.size[0], im.size[1], pixel_limit(max_pixels), name)
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
        _own_sizes(data, pixel_limit(max_pixels), name)  # OpenCV has no header-only read: PNG/JPEG/WebP checked here
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise DeviceError("{}: cannot decode image (OpenCV imdecode failed); is it a JPEG/PNG/BMP/TIFF?".format(name))
        _refuse_if_over(arr.shape[1], arr.shape[0], pixel_limit(max_pixels), name)
        if arr.ndim == 3:
            arr = arr[..., [2, 1, 0, 3][:arr.shape[2]]]  # BGR(A) -> RGB(A)
        return _to_rgb_uint8(arr, name)
    raise DeviceError("no image decoder: install Pillow (pip install Pillow) or OpenCV (python3-opencv on JetPack)")


def encode_png(rgb):
    """HxWx3 uint8 RGB -> PNG bytes, numpy + zlib only: the "sub" filter on every row, zlib level 1, one IDAT.

    Byte-for-byte the same whatever Pillow/zlib-wrapper version is installed (the synthetic data set's cache
    relies on it), ~4 ms for a noisy 320 px image where Pillow's adaptive filters take ~15 ms, and it needs
    neither Pillow nor OpenCV. Any PNG decoder reads it.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DeviceError("encode_png needs an HxWx3 uint8 RGB array, got shape {}".format(rgb.shape))
    h, w = rgb.shape[:2]
    rows = rgb.reshape(h, w * 3)
    raw = np.empty((h, w * 3 + 1), np.uint8)
    raw[:, 0] = 1  # filter type 1 = sub: each byte minus the same channel of the pixel to its left
    raw[:, 1:4] = rows[:, :3]
    raw[:, 4:] = rows[:, 3:] - rows[:, :-3]  # uint8 arithmetic wraps modulo 256, as PNG specifies

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
            + chunk(b"IEND", b""))


def encode_image(rgb, ext=".jpg", quality=90):
    """HxWx3 uint8 RGB -> encoded bytes: PNG (`encode_png`) for ".png", else JPEG (Pillow, or OpenCV)."""
    if ext.lower() == ".png":
        return encode_png(rgb)
    Image = _pil()
    if Image is not None:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    cv2 = _cv2()
    if cv2 is not None:
        ok, enc = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]))
        if ok:
            return enc.tobytes()
    raise DeviceError("no JPEG encoder: install Pillow (pip install Pillow) or OpenCV")


def list_images(folder):
    """Image files (IMAGE_EXTS, any case) in `folder` and its subfolders, as paths sorted part by part (the
    order of sorted pathlib Paths: `a/b/c.png` before `a/z.png`). Symlinked folders are not followed."""
    found = []
    for dirpath, _, filenames in os.walk(str(folder)):
        for fn in filenames:
            path = os.path.join(dirpath, fn)
            if os.path.splitext(fn)[1].lower() in IMAGE_EXTS and os.path.isfile(path):
                found.append(path)
    return sorted(found, key=lambda p: p.split(os.sep))


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
