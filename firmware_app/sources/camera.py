"""Camera sources: frames that arrive as arrays, in bursts, when a trigger fires.

A `Camera` adapter (picamera2 on a Pi, OpenCV for USB/RTSP cameras) captures a burst of RGB arrays
and offers a small greyscale stream for motion detection. The hardware library is imported inside
each adapter. Frames are scored straight from memory: only the frames a burst decision keeps (and
the audit sample) are ever encoded and written, so blanks cost no SD-card writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Protocol

import numpy as np

from firmware_app.hashing import sha256_bytes


@dataclass(frozen=True)
class CapturedFrame:
    rgb: np.ndarray  # HxWx3 uint8, RGB order
    captured_at: datetime  # UTC
    index: int  # position in its burst

    @cached_property
    def pixel_sha256(self) -> str:
        """Identifies a frame that was never written (a blank); hashed once, however often asked."""
        return sha256_bytes(self.rgb.tobytes())


class Camera(Protocol):
    name: str

    def start(self) -> None: ...

    def lores(self) -> np.ndarray:
        """The current low-resolution frame, greyscale HxW uint8 (for motion detection)."""
        ...

    def capture(self) -> np.ndarray:
        """One full-size frame, HxWx3 uint8 RGB."""
        ...

    def stop(self) -> None: ...


def capture_burst(camera: Camera, count: int, interval_s: float) -> list[CapturedFrame]:
    """`count` frames `interval_s` apart (measured from each capture's start, as a trail camera does)."""
    frames = []
    for index in range(count):
        started = time.monotonic()
        rgb = camera.capture()
        frames.append(CapturedFrame(rgb, datetime.now(UTC), index))
        if index + 1 < count:
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    return frames
