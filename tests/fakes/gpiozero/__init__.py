"""A fake gpiozero for tests (see tests/fakes/README.md): MotionSensor fires on a schedule."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


class GPIOZeroError(Exception):
    pass


class BadPinFactory(GPIOZeroError):
    pass


class MotionSensor:
    def __init__(self, pin: Any = None, *, queue_len: int = 1, sample_rate: float = 10, threshold: float = 0.5,
                 partial: bool = False, pin_factory: Any = None) -> None:  # fmt: skip
        if pin is None:
            raise GPIOZeroError("No pin given")
        self.pin = pin
        self.when_motion: Callable[[], None] | None = None
        self.when_no_motion: Callable[[], None] | None = None
        self._motion = False
        self._closed = threading.Event()
        pulses = [float(p) for p in os.environ.get("FAKE_PIR_PULSES", "").split(",") if p]
        threading.Thread(target=self._fire, args=(pulses,), daemon=True).start()

    def _fire(self, pulses: list[float]) -> None:
        opened = time.monotonic()
        for at in pulses:
            if self._closed.wait(max(0.0, opened + at - time.monotonic())):
                return
            self._motion = True
            if self.when_motion:
                self.when_motion()
            time.sleep(0.2)
            self._motion = False
            if self.when_no_motion:
                self.when_no_motion()

    @property
    def motion_detected(self) -> bool:
        return self._motion

    @property
    def value(self) -> float:
        return 1.0 if self._motion else 0.0

    def close(self) -> None:
        self._closed.set()
