"""A USB camera or an RTSP stream through OpenCV, for traps built from other hardware.

OpenCV comes from apt on the Pi (python3-opencv, built for numpy 1.x); it is imported here only.
The lores stream is the current frame, shrunk and in grey: the same motion detector runs on it.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

import numpy as np

from firmware_app.config import CameraSection
from firmware_app.sources.picamera2_camera import CameraError

log = logging.getLogger(__name__)


class OpenCVCamera:
    def __init__(self, settings: CameraSection, module: ModuleType | None = None) -> None:
        self.name, self.settings = settings.name, settings
        if module is None:
            try:
                module = importlib.import_module("cv2")
            except ImportError as exc:
                raise CameraError(
                    f"source.kind = opencv but OpenCV cannot be imported ({exc}): apt install python3-opencv"
                ) from None
        self._cv2: Any = module
        self._cap: Any = None

    def start(self) -> None:
        device: int | str = int(self.settings.device) if self.settings.device.isdigit() else self.settings.device
        cap = self._cv2.VideoCapture(device)
        if not cap.isOpened():
            raise CameraError(f"camera.device = {self.settings.device!r}: OpenCV cannot open it")
        width, height = self.settings.still_size
        cap.set(self._cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(self._cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._cap = cap
        log.info("opencv: %s from %s", self.name, self.settings.device)

    def _read(self) -> np.ndarray:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraError(f"camera.device = {self.settings.device!r}: no frame (unplugged, or the stream ended)")
        return bgr

    def lores(self) -> np.ndarray:
        bgr = self._read()
        width, height = self.settings.lores_size
        small = self._cv2.resize(bgr, (width, height), interpolation=self._cv2.INTER_AREA)
        return np.asarray(self._cv2.cvtColor(small, self._cv2.COLOR_BGR2GRAY))

    def capture(self) -> np.ndarray:
        return np.ascontiguousarray(self._read()[..., ::-1])  # BGR -> RGB

    def stop(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
