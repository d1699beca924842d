"""Triggers of the Pi camera source: what tells the camera to shoot a burst.

Two kinds, both cheap enough for a Pi Zero 2 and free of hardware imports at module level:

- `pir.PirTrigger`: a PIR sensor on a GPIO pin (gpiozero, imported when the trigger is opened).
- `motion.MotionDetector`: software motion detection on the camera's low-resolution ("lores")
  stream. It is frame-driven (`update(grey, now) -> bool`), so the camera source, which owns the
  frame loop, calls it for each lores frame instead of waiting on it.

A blocking trigger follows the `Trigger` protocol below, a frame-driven one the `Motion` protocol,
so the camera loop can use a PIR, a motion detector (or a test double) without knowing which.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from firmware_app.errors import BlankfilterError


class TriggerError(BlankfilterError):
    """A trigger cannot be opened; the message names the config key and what to do."""


@runtime_checkable
class Trigger(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True when the trigger fired (each firing is reported once)."""
        ...

    def close(self) -> None:
        """Release the hardware; a pending or later `wait` returns False."""
        ...


class Motion(Protocol):
    def update(self, grey: np.ndarray, now: float) -> bool:
        """Feed one lores frame (greyscale HxW uint8); True when it shows motion."""
        ...

    def reset(self) -> None:
        """Forget the background (after a burst: the light or the scene may have changed)."""
        ...
