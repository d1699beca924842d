"""The Raspberry Pi camera through picamera2 (from Raspberry Pi OS apt: python3-picamera2).

Two streams: `main` at camera.still_size for the frames, `lores` at camera.lores_size (YUV420,
whose first rows are the luminance) for motion detection. picamera2 names formats by their
little-endian word order: "BGR888" arrays hold pixels as [R, G, B], which is what the model wants.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

import numpy as np

from firmware_app.config import CameraSection
from firmware_app.errors import BlankfilterError

log = logging.getLogger(__name__)


class CameraError(BlankfilterError):
    pass


class Picamera2Camera:
    def __init__(self, settings: CameraSection, module: ModuleType | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        if module is None:
            try:
                module = importlib.import_module("picamera2")
            except ImportError as exc:
                raise CameraError(
                    f"source.kind = picamera2 but picamera2 cannot be imported ({exc}): install python3-picamera2 "
                    "from Raspberry Pi OS apt and make the venv with --system-site-packages (deploy/install.sh does)"
                ) from None
        self._module: Any = module
        self._cam: Any = None

    def start(self) -> None:
        s = self.settings
        try:
            cam = self._module.Picamera2()
            config = cam.create_still_configuration(
                main={"size": tuple(s.still_size), "format": "BGR888"},
                lores={"size": tuple(s.lores_size), "format": "YUV420"},
                buffer_count=2,
            )
            cam.configure(config)
            controls: dict[str, Any] = {}
            if s.exposure_time_us:
                controls |= {"AeEnable": False, "ExposureTime": s.exposure_time_us}
            if s.analogue_gain:
                controls |= {"AnalogueGain": s.analogue_gain}
            if controls:
                cam.set_controls(controls)
            cam.start()
        except (RuntimeError, OSError, IndexError) as exc:  # no camera attached, busy, or the cable is loose
            raise CameraError(
                f"the Pi camera did not start ({exc}): check the ribbon cable and `rpicam-hello`"
            ) from None
        self._cam = cam
        log.info("picamera2: %s frames %dx%d, motion stream %dx%d", self.name, *s.still_size, *s.lores_size)

    def lores(self) -> np.ndarray:
        yuv = self._cam.capture_array("lores")
        height = self.settings.lores_size[1]
        return np.ascontiguousarray(yuv[:height, : self.settings.lores_size[0]])

    def capture(self) -> np.ndarray:
        rgb = self._cam.capture_array("main")
        return np.ascontiguousarray(rgb[..., :3])

    def stop(self) -> None:
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None
