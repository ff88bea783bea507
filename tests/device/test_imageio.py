import io

import numpy as np
import pytest

from edgeprune.errors import DeviceError
from jetson.imageio import decode_image, encode_image, list_images

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
    for name in ("b/z.jpg", "a.PNG", "notes.txt", "b/c.bmp"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.replace(str(tmp_path), "") for p in list_images(str(tmp_path))]
    assert found == ["/a.PNG", "/b/c.bmp", "/b/z.jpg"]
