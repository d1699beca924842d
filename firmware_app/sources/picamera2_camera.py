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
        self.night = False

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
            controls = exposure_controls(s.exposure_time_us, s.analogue_gain)
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
        grey = np.ascontiguousarray(yuv[:height, : self.settings.lores_size[0]])
        self._follow_light(float(grey.mean()))
        return grey

    def _follow_light(self, mean: float) -> None:
        """Night mode (camera.night_below): the IR-lit scene needs other exposure settings. The way
        back to day needs 1.5x the light, so dusk does not flip the settings back and forth."""
        s = self.settings
        if not s.night_below:
            return
        night = mean < s.night_below if not self.night else mean < 1.5 * s.night_below
        if night == self.night:
            return
        self.night = night
        if night:
            controls = exposure_controls(s.night_exposure_time_us, s.night_analogue_gain) or {"AeEnable": True}
        else:
            controls = exposure_controls(s.exposure_time_us, s.analogue_gain) or {"AeEnable": True}
        self._cam.set_controls(controls)
        log.info("camera %s: %s settings (motion-stream mean %.0f)", self.name, "night" if night else "day", mean)

    def capture(self) -> np.ndarray:
        rgb = self._cam.capture_array("main")
        return np.ascontiguousarray(rgb[..., :3])

    def stop(self) -> None:
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None


def exposure_controls(exposure_time_us: int, analogue_gain: float) -> dict[str, Any]:
    """libcamera controls for a fixed exposure and/or gain; empty for automatic."""
    controls: dict[str, Any] = {}
    if exposure_time_us:
        controls |= {"AeEnable": False, "ExposureTime": exposure_time_us}
    if analogue_gain:
        controls |= {"AnalogueGain": analogue_gain}
    return controls
