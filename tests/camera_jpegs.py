"""JPEG files as real trail cameras write them, built byte by byte from a real frame.

Each builder keeps the frame's entropy-coded image data untouched, so a decoder that handles the
variant gives exactly the pixels of the plain file, and a test can compare the two.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"


def segment(marker: int, payload: bytes) -> bytes:
    """One JPEG marker segment: FF <marker>, big-endian length (itself included), payload."""
    assert len(payload) + 2 <= 0xFFFF, f"{len(payload)} bytes do not fit in one JPEG segment"
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def app_segments_end(data: bytes) -> int:
    """Offset just after the SOI and the APPn segments that follow it (where DQT/SOF begin)."""
    assert data[:2] == SOI, "not a JPEG"
    pos = 2
    while data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return pos


def without_app_segments(data: bytes, markers: tuple[int, ...]) -> bytes:
    """The JPEG with its APPn segments of the given markers (e.g. 0xE1, EXIF) removed."""
    end = app_segments_end(data)
    out, pos = bytearray(SOI), 2
    while pos < end:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] not in markers:
            out += data[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + data[end:])


def with_app_segment(data: bytes, seg: bytes) -> bytes:
    """The JPEG with one more segment after its existing APPn segments."""
    at = app_segments_end(data)
    return data[:at] + seg + data[at:]


def small_jpeg(size: tuple[int, int], colour: tuple[int, int, int], quality: int = 90) -> bytes:
    """A plain JPEG of one colour with some noise (so it is not a few hundred bytes)."""
    image = Image.effect_noise(size, 64).convert("RGB")
    image = Image.blend(image, Image.new("RGB", size, colour), 0.7)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def mpo(primary: bytes, preview: bytes) -> bytes:
    """A Multi-Picture Format file (CIPA DC-007), as Bushnell trail cameras write them.

    The primary image gains an APP2 "MPF\\0" segment whose MP index lists two images: itself
    (offset 0) and a preview JPEG appended after the primary's EOI, its offset counted from the
    MP header. Pillow opens such a file as format "MPO".
    """
    entries_at = 8 + 2 + 3 * 12 + 4  # TIFF header, IFD count, 3 entries, next-IFD offset
    index_len = entries_at + 2 * 16
    payload_len = 4 + index_len  # "MPF\0" + the MP header
    header_at = app_segments_end(primary) + 4 + 4  # where the MP header starts in the new file
    primary_len = len(primary) + 4 + payload_len
    preview_offset = primary_len - header_at
    index = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 3)
    index += struct.pack(">HHI4s", 0xB000, 7, 4, b"0100")  # MPFVersion
    index += struct.pack(">HHII", 0xB001, 4, 1, 2)  # NumberOfImages
    index += struct.pack(">HHII", 0xB002, 7, 32, entries_at)  # MPEntry
    index += struct.pack(">I", 0)  # no next IFD
    index += struct.pack(">IIIHH", 0x20030000, primary_len, 0, 0, 0)  # representative, baseline primary
    index += struct.pack(">IIIHH", 0x00010001, len(preview), preview_offset, 0, 0)  # large thumbnail (VGA)
    assert len(index) == index_len
    out = with_app_segment(primary, segment(0xE2, b"MPF\x00" + index))
    assert len(out) == primary_len
    return out + preview


def exif_with_thumbnail(thumbnail: bytes, original: str = "2024:05:06 07:08:09") -> bytes:
    """An APP1 EXIF segment: IFD0 -> Exif IFD (DateTimeOriginal), and IFD1 holding a JPEG thumbnail."""
    text = original.encode("ascii") + b"\x00"
    exif_ifd_at = 8 + 2 + 12 + 4
    text_at = exif_ifd_at + 2 + 12 + 4
    ifd1_at = text_at + len(text)
    thumb_at = ifd1_at + 2 + 3 * 12 + 4
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, exif_ifd_at) + struct.pack(">I", ifd1_at)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x9003, 2, len(text), text_at) + struct.pack(">I", 0)
    tiff += text
    tiff += struct.pack(">H", 3)
    tiff += struct.pack(">HHIHH", 0x0103, 3, 1, 6, 0)  # Compression: JPEG
    tiff += struct.pack(">HHII", 0x0201, 4, 1, thumb_at)  # JPEGInterchangeFormat
    tiff += struct.pack(">HHII", 0x0202, 4, 1, len(thumbnail))  # JPEGInterchangeFormatLength
    tiff += struct.pack(">I", 0)
    assert len(tiff) == thumb_at
    return segment(0xE1, b"Exif\x00\x00" + tiff + thumbnail)


def exif_with_raw_time(original: bytes | None, subsec: bytes | None = None) -> bytes:
    """EXIF bytes (for Image.save(exif=...)) whose DateTimeOriginal / SubSecTimeOriginal hold these
    exact bytes: what a camera with a broken clock or firmware writes, not what Pillow would."""
    from firmware_app.imaging import EXIF_DATETIME_ORIGINAL, EXIF_IFD, EXIF_SUBSEC_ORIGINAL

    exif = Image.Exif()
    sub = exif.get_ifd(EXIF_IFD)
    marks: dict[bytes, bytes] = {}
    if original is not None:
        mark = b"Q" * len(original)
        sub[EXIF_DATETIME_ORIGINAL] = mark.decode()
        marks[mark] = original
    if subsec is not None:
        mark = b"Z" * len(subsec)
        sub[EXIF_SUBSEC_ORIGINAL] = mark.decode()
        marks[mark] = subsec
    raw = exif.tobytes()
    for mark, value in marks.items():
        assert raw.count(mark) == 1, "placeholder not unique: use a longer value"
        raw = raw.replace(mark, value)
    return raw


def with_exif(data: bytes, exif: bytes) -> bytes:
    """The JPEG with its EXIF replaced by these TIFF bytes (as Image.save(exif=...) takes them)."""
    return with_app_segment(without_app_segments(data, (0xE1,)), segment(0xE1, b"Exif\x00\x00" + exif))


# name -> the variant of a real camera frame (its image data untouched): what real cameras write.
VARIANTS = {
    # Bushnell: an APP2 MPF index and a 640x480 preview after the primary image's EOI.
    "mpo_with_preview": lambda data: mpo(data, small_jpeg((640, 480), (0, 0, 255))),
    # Padding to a card sector, a vendor blob, or a second JPEG with no index, after EOI.
    "zeros_after_eoi": lambda data: data + b"\x00" * 4096,
    "garbage_after_eoi": lambda data: data + b"\xff\xd8 vendor blob \xff\xd9\xff\x00" * 100,
    "jpeg_after_eoi": lambda data: data + small_jpeg((640, 480), (0, 255, 0)),
    # A 320x240 thumbnail (about 48 kB) in EXIF IFD1, and a preview JPEG in an APP3 segment.
    "thumbnail_in_exif": lambda data: with_app_segment(
        without_app_segments(data, (0xE1,)), exif_with_thumbnail(small_jpeg((320, 240), (0, 255, 0), 95))
    ),
    "preview_in_app3": lambda data: with_app_segment(data, segment(0xE3, small_jpeg((320, 240), (255, 0, 0)))),
    # JFIF only (APP0), no EXIF at all: no capture time, no orientation.
    "jfif_without_exif": lambda data: without_app_segments(data, (0xE1,)),
    # A camera whose clock was never set, or whose firmware writes junk.
    "zero_datetime_original": lambda data: with_exif(data, exif_with_raw_time(b"0000:00:00 00:00:00")),
    "blank_datetime_original": lambda data: with_exif(data, exif_with_raw_time(b"    :  :     :  :  ")),
    "garbage_datetime_original": lambda data: with_exif(data, exif_with_raw_time(b"\xb2\xff\x00garbage\xe9\x01")),
    "garbage_subsec": lambda data: with_exif(data, exif_with_raw_time(b"2024:05:06 07:08:09", b"\xb2\xb2\xb2")),
    "junk_exif_block": lambda data: with_app_segment(
        without_app_segments(data, (0xE1,)), segment(0xE1, b"Exif\x00\x00MM\x00*\xff\xff\xff\xf0" + b"\x13\x37" * 64)
    ),
}
