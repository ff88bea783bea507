"""Crafted decompression bombs for the image-sizing tests: small files whose headers announce huge images.
Python 3.6 compatible (the serve tests also run in the device venv); needs Pillow only for the JPEG."""
import io
import struct
import zlib


def tiff_bomb(width, height):
    """A valid one-strip 8-bit greyscale TIFF, deflate-compressed zeros: 13000 x 13000 is ~170 KB on disk
    and 169 MB once decoded (more in RGB). The strip is compressed row by row, so making it stays small."""
    packer = zlib.compressobj(9)
    row = b"\0" * width
    strip = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8),  # width, height, bits, deflate
            (262, 3, 1), (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    ifd_size = 2 + 12 * len(tags) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = data_offset if tag == 273 else value
        ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else
                                                    struct.pack("<I", value))
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip


def jpeg_with_junk_after_app0(width, height):
    """A small real JPEG whose frame header (SOF0) is patched to width x height, with one junk byte after the
    APP0 segment: Pillow still opens it (it skips the junk) and would allocate the announced size."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(buf, format="JPEG", quality=80)
    data = bytearray(buf.getvalue())
    assert data[2:4] == b"\xff\xe0", "expected a JFIF APP0 segment first"
    end_app0 = 4 + struct.unpack(">H", bytes(data[4:6]))[0]
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data[:end_app0]) + b"\x00" + bytes(data[end_app0:])
