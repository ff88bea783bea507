import io

import numpy as np
import pytest

from edgeprune.errors import DeviceError
from jetson.imageio import decode_image, encode_image, encode_png, list_images

pytestmark = pytest.mark.py36
Image = pytest.importorskip("PIL.Image")


def _png(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_png_bytes_and_path_is_rgb_uint8(tmp_path):
    arr = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    data = _png(arr)
    out = decode_image(data)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    assert np.array_equal(out, arr)
    p = tmp_path / "a.png"
    p.write_bytes(data)
    assert np.array_equal(decode_image(str(p)), arr)


def test_grey_and_rgba_become_rgb():
    grey = np.full((4, 4), 77, np.uint8)
    assert decode_image(_png(grey)).shape == (4, 4, 3)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    out = decode_image(_png(rgba, "RGBA"))
    assert out.shape == (4, 4, 3) and out[0, 0, 0] == 200


def test_jpeg_roundtrip_close():
    arr = np.full((16, 16, 3), (10, 120, 240), np.uint8)
    out = decode_image(encode_image(arr, ".jpg"))
    assert np.abs(out.astype(int) - arr).max() < 8


@pytest.mark.parametrize("data", [b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, b""])
def test_undecodable_bytes_raise_device_error(data):
    with pytest.raises(DeviceError, match="image"):
        decode_image(data, name="upload.jpg")


def test_missing_and_truncated_files_are_named(tmp_path):
    with pytest.raises(DeviceError, match="missing.png"):
        decode_image(str(tmp_path / "missing.png"))
    p = tmp_path / "cut.png"
    p.write_bytes(_png(np.zeros((64, 64, 3), np.uint8))[:40])
    with pytest.raises(DeviceError, match="cut.png"):
        decode_image(str(p))


def test_list_images_sorted_recursive(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sub.png").mkdir()   # a folder with an image's name is not an image
    for name in ("b/z.jpg", "a.PNG", "notes.txt", "b/c.bmp", "c.webp", "b.tif"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.replace(str(tmp_path), "") for p in list_images(str(tmp_path))]
    # sorted part by part, as pathlib sorts: the files of b/ come between a.PNG and b.tif
    assert found == ["/a.PNG", "/b/c.bmp", "/b/z.jpg", "/b.tif", "/c.webp"]


def test_png_encoder_round_trips_and_is_deterministic():
    rng = np.random.RandomState(0)
    arr = rng.randint(0, 256, size=(33, 47, 3)).astype(np.uint8)
    data = encode_png(arr)
    assert data == encode_image(arr, ".PNG") == encode_png(arr.copy())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), arr)
    assert np.array_equal(decode_image(data), arr)
    with pytest.raises(DeviceError, match="HxWx3"):
        encode_png(arr[..., 0])


# -- sizing before decoding: every format, crafted bombs ------------------------------------------------------
from image_bombs import jpeg_with_junk_after_app0, tiff_bomb  # noqa: E402

from jetson.imageio import ImageTooLarge, probe_image  # noqa: E402

LIMIT = 36 * 1000 * 1000


def _encode(fmt, size=(40, 30), **kw):
    buf = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    Image.new(mode, size).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _patched(fmt, width, height):
    """A small real file of `fmt` whose header is rewritten to announce width x height."""
    import struct
    if fmt == "PNG":
        data = bytearray(_encode("PNG"))
        data[16:24] = struct.pack(">II", width, height)
    elif fmt == "BMP":
        data = bytearray(_encode("BMP"))
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "GIF":
        data = bytearray(_encode("GIF"))
        data[6:10] = struct.pack("<HH", width, height)
    elif fmt == "WEBP":  # lossless: 14-bit width-1 and height-1 after the VP8L signature byte
        data = bytearray(_encode("WEBP", lossless=True))
        assert bytes(data[12:16]) == b"VP8L"
        bits = struct.unpack("<I", bytes(data[21:25]))[0] & ~((1 << 28) - 1)
        data[21:25] = struct.pack("<I", bits | (width - 1) | ((height - 1) << 14))
    elif fmt == "TIFF":
        return tiff_bomb(width, height)
    else:
        return jpeg_with_junk_after_app0(width, height)
    return bytes(data)


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("JPEG", {}), ("BMP", {}), ("GIF", {}), ("TIFF", {}),
                                    ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80})])
def test_every_format_is_sized_from_its_header(fmt, kw):
    data = _encode(fmt, (40, 30), **kw)
    width, height, cost = probe_image(data, LIMIT)
    assert (width, height) == (40, 30) and cost >= 40 * 30 * 7
    assert decode_image(data, max_pixels=LIMIT).shape == (30, 40, 3)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns; we refuse
@pytest.mark.parametrize("fmt,size", [("PNG", (20000, 20000)), ("JPEG", (7000, 7000)), ("BMP", (9000, 9000)),
                                      ("GIF", (9000, 9000)), ("TIFF", (13000, 13000)),
                                      ("WEBP", (16384, 16384))])
def test_bombs_of_every_format_are_refused_before_decoding(fmt, size):
    data = _patched(fmt, *size)
    assert len(data) < 300 * 1000  # small on the wire ...
    with pytest.raises(ImageTooLarge, match=r"{}x{} pixels is over the {} pixel limit".format(size[0], size[1],
                                                                                           LIMIT)):
        probe_image(data, LIMIT)  # ... refused from the header alone
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=LIMIT)


def test_jpeg_junk_byte_after_app0_and_a_second_frame_header_are_still_sized():
    import struct
    small = jpeg_with_junk_after_app0(64, 64)  # Pillow skips the junk byte and decodes it
    assert probe_image(small, LIMIT)[:2] == (64, 64)
    assert decode_image(small, max_pixels=LIMIT).shape == (64, 64, 3)
    # a second SOF after the first: the walk sees every frame header, and the largest counts
    sof = small.index(b"\xff\xc0")
    length = struct.unpack(">H", small[sof + 2:sof + 4])[0]
    second = bytearray(small[sof:sof + 2 + length])
    second[5:9] = struct.pack(">HH", 9000, 9000)
    crafted = small[:sof + 2 + length] + bytes(second) + small[sof + 2 + length:]
    with pytest.raises(ImageTooLarge, match="9000x9000"):
        probe_image(crafted, LIMIT)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pillows_own_limit_is_enforced(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLarge, match="1000 pixel limit"):
        probe_image(_encode("PNG", (40, 30)), LIMIT)
    with pytest.raises(ImageTooLarge):
        decode_image(_encode("BMP", (40, 30)), max_pixels=LIMIT)


def test_unreadable_header_is_refused_not_decoded():
    with pytest.raises(DeviceError, match="cannot decode image") as exc:
        probe_image(b"GIF89a" + b"\0" * 4, LIMIT)
    assert not isinstance(exc.value, ImageTooLarge)
    with pytest.raises(DeviceError, match="marker segments"):
        probe_image(b"\xff\xd8" + b"\xff\xfe\x00\x02" * 20000, LIMIT)


def test_without_pillow_only_formats_parsed_here_are_sized(monkeypatch):
    import jetson.imageio as imageio
    monkeypatch.setattr(imageio, "_pil", lambda: None)  # a device with OpenCV only
    assert probe_image(_encode("PNG", (40, 30)), LIMIT)[:2] == (40, 30)
    assert probe_image(_encode("JPEG", (40, 30)), LIMIT)[:2] == (40, 30)
    assert probe_image(_encode("WEBP", (40, 30), lossless=True), LIMIT)[:2] == (40, 30)
    with pytest.raises(DeviceError, match="without Pillow"):
        probe_image(_encode("BMP", (40, 30)), LIMIT)
    with pytest.raises(ImageTooLarge):
        probe_image(_patched("JPEG", 7000, 7000), LIMIT)
