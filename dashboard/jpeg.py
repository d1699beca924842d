"""Is this small byte string a JPEG? The thumbnail check, without an image library.

Walks the marker segments from SOI to the first frame header (SOF) and reads its size, then checks
the end-of-image marker. It does not decode the image: the browser does that, as for any JPEG on the
web; this only makes sure what is served as `image/jpeg` is one, whole, of a sane size.
"""

from __future__ import annotations

# SOF0..SOF15 without DHT (C4), JPG (C8) and DAC (CC): the markers that carry the frame's size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0..RST7: no length field
_SOS, _EOI = 0xDA, 0xD9


def jpeg_size(data: bytes, max_side: int = 1024) -> tuple[int, int] | None:
    """(width, height) of a whole baseline or progressive JPEG, else None."""
    if len(data) < 4 or data[:2] != b"\xff\xd8" or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        while i < len(data) and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= len(data):
            return None
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (_SOS, _EOI, 0x00):  # image data or the end before any frame header
            return None
        if i + 2 > len(data):
            return None
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2 or i + length > len(data):
            return None
        if marker in _SOF:
            if length < 8:
                return None
            height = int.from_bytes(data[i + 3 : i + 5], "big")
            width = int.from_bytes(data[i + 5 : i + 7], "big")
            if not (0 < width <= max_side and 0 < height <= max_side):
                return None
            return width, height
        i += length
    return None
