"""A fake picamera2 for tests (see tests/fakes/README.md)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image


class Picamera2:
    def __init__(self, camera_num: int = 0) -> None:
        paths = [p for p in os.environ.get("FAKE_PICAMERA2_FRAMES", "").split(",") if p]
        if not paths:
            raise RuntimeError("Camera __init__ sequence did not complete.")  # what the real one says with no camera
        self._paths = paths
        self._next = 0
        self._current: Image.Image | None = None
        self._config: dict[str, Any] = {}
        self._log("init", camera_num)

    def _log(self, *what: Any) -> None:
        path = os.environ.get("FAKE_PICAMERA2_LOG")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(what, default=str) + "\n")

    def create_still_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        return {"main": main or {"size": (4056, 3040), "format": "BGR888"}, "lores": lores, **kwargs}

    def configure(self, config: dict[str, Any]) -> None:
        if config["main"]["format"] not in ("BGR888", "RGB888"):
            raise ValueError(f"unsupported main format {config['main']['format']}")
        self._config = config
        self._log("configure", config)

    def set_controls(self, controls: dict[str, Any]) -> None:
        self._log("set_controls", controls)

    def start(self) -> None:
        self._log("start")

    def _frame(self, advance: bool) -> Image.Image:
        if advance or self._current is None:
            path = self._paths[self._next % len(self._paths)]
            self._next += 1
            self._current = Image.open(path).convert("RGB")
        return self._current

    def capture_array(self, name: str = "main") -> np.ndarray:
        if name == "main":
            width, height = self._config["main"]["size"]
            rgb = np.asarray(self._frame(advance=True).resize((width, height)))
            self._log("capture", "main")
            # "BGR888" is [R, G, B] in memory; "RGB888" is [B, G, R] (little-endian word names)
            return rgb if self._config["main"]["format"] == "BGR888" else rgb[..., ::-1].copy()
        width, height = self._config["lores"]["size"]
        grey = np.asarray(self._frame(advance=False).convert("L").resize((width, height)))
        chroma = np.full((height // 2, width), 128, np.uint8)
        return np.concatenate([grey, chroma])  # YUV420: height rows of Y, then U and V

    def stop(self) -> None:
        self._log("stop")

    def close(self) -> None:
        self._log("close")
