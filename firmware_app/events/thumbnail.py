"""The small JPEG an event carries, so a dashboard shows what walked by without the frame leaving
the trap. Made from the burst's highest-scoring frame while it is still in the inbox, and never through a
symbolic link (O_NOFOLLOW), so an event cannot carry a picture of a file from outside the inbox."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from PIL import Image, ImageOps

log = logging.getLogger(__name__)

QUALITIES = (70, 55, 40)


def make_thumbnail(path: Path, long_side: int, max_bytes: int) -> tuple[bytes, int, int] | None:
    """(JPEG bytes, width, height) under max_bytes, or None (no thumbnail: the event still goes)."""
    if long_side <= 0:
        return None
    try:
        # never through a link: it could name any file on the trap, sent out with the event
        fh = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb")
    except OSError as exc:
        log.debug("%s: no thumbnail (%s)", path, exc)
        return None
    try:
        with fh, Image.open(fh) as image:
            image.draft("RGB", (long_side, long_side))  # DCT-scaled decode: cheap even for 8 MP
            small = (ImageOps.exif_transpose(image) or image).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        log.debug("%s: no thumbnail (%s)", path, exc)
        return None
    return thumbnail_of(small, long_side, max_bytes)


def thumbnail_of(image: Image.Image, long_side: int, max_bytes: int) -> tuple[bytes, int, int] | None:
    """From an image in memory (a camera frame): the same size and byte caps."""
    if long_side <= 0:
        return None
    small = image.convert("RGB")
    side = long_side
    while side >= 32:
        small.thumbnail((side, side))
        for quality in QUALITIES:
            out = io.BytesIO()
            small.save(out, "JPEG", quality=quality, optimize=True)
            if out.tell() <= max_bytes:
                return out.getvalue(), small.width, small.height
        side = int(side * 0.75)
    return None
