"""PIR trigger: a passive-infrared sensor on a GPIO pin, through gpiozero's `MotionSensor`.

gpiozero is imported when the trigger is opened, not at module level: the trap's other sources run
without it, and tests pass a `sensor_factory` with the same constructor and callbacks instead.

gpiozero samples the pin on its own thread (`sample_rate` per second, median over `queue_len`
samples against `threshold`) and calls `when_motion` on a rising edge. That sets an event that
`wait()` consumes. A pulse within `debounce_s` of the last accepted one is ignored: a PIR
re-triggers every few seconds while an animal stays in view, and one burst per `debounce_s` is
enough. Motion already in progress when the sensor is opened is not reported (gpiozero fires on
edges, and a PIR is high for a while after power-on anyway).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from firmware_app.triggers import TriggerError

log = logging.getLogger(__name__)

PIN_KEY = "camera.pir_pin"

# gpiozero's exception class names -> what a field person should check.
_HINTS = {
    "BadPinFactory": "no GPIO library found: not a Raspberry Pi, or install python3-lgpio",
    "PinInvalidPin": "not a GPIO pin of this board (use the BCM number, e.g. 17)",
    "GPIOPinInUse": "the pin is already used by another device in this process",
    "PinUnknownPi": "gpiozero does not recognise this board",
}


class PirTrigger:
    """`wait(timeout)` is True once per accepted PIR pulse; `close()` releases the pin."""

    def __init__(
        self,
        pin: int | str,
        *,
        debounce_s: float = 2.0,
        queue_len: int = 1,
        sample_rate: float = 10.0,
        threshold: float = 0.5,
        pin_factory: Any = None,
        sensor_factory: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_params(debounce_s, queue_len, sample_rate, threshold)
        self.pin = pin
        self.debounce_s = float(debounce_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._pending = False
        self._closed = False
        self._last_accepted: float | None = None
        self.pulses = 0  # rising edges seen, debounced or not
        self.accepted = 0
        factory = sensor_factory if sensor_factory is not None else _gpiozero_motion_sensor(pin)
        try:
            self.sensor = factory(
                pin, queue_len=queue_len, sample_rate=sample_rate, threshold=threshold, pin_factory=pin_factory
            )
        except Exception as exc:  # any driver: gpiozero, lgpio, a test double; all mean "cannot open"
            raise TriggerError(_open_error(pin, exc)) from exc
        self.sensor.when_motion = self._on_motion
        log.info("PIR trigger on GPIO %s (debounce %.1f s)", pin, self.debounce_s)

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for motion; True once per accepted pulse, False on timeout or close."""
        self._event.wait(max(0.0, timeout))
        with self._lock:
            if self._closed or not self._pending:
                return False
            self._pending = False
            self._event.clear()
            return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._event.set()  # wake a waiting thread: it returns False
        self.sensor.when_motion = None
        self.sensor.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _on_motion(self, *_: object) -> None:
        # Called on gpiozero's sampling thread; it accepts a device argument or none.
        now = self._clock()
        with self._lock:
            self.pulses += 1
            if self._closed:
                return
            if self._last_accepted is not None and now - self._last_accepted < self.debounce_s:
                log.debug("PIR pulse %.2f s after the last one: debounced", now - self._last_accepted)
                return
            self._last_accepted = now
            self.accepted += 1
            self._pending = True
            self._event.set()


def _gpiozero_motion_sensor(pin: int | str) -> Callable[..., Any]:
    try:
        from gpiozero import MotionSensor
    except ImportError as exc:
        raise TriggerError(
            f"{PIN_KEY} = {pin}: the PIR trigger needs gpiozero, which is not installed "
            "(on Raspberry Pi OS: apt install python3-gpiozero python3-lgpio, or pip install 'blankfilter[pi]')"
        ) from exc
    return MotionSensor


def _open_error(pin: int | str, exc: Exception) -> str:
    names = [cls.__name__ for cls in type(exc).__mro__]
    hint = next((_HINTS[name] for name in names if name in _HINTS), None)
    detail = f"{type(exc).__name__}: {exc}" + (f" ({hint})" if hint else "")
    return f"{PIN_KEY} = {pin}: cannot open the PIR sensor: {detail}"


def _check_params(debounce_s: float, queue_len: int, sample_rate: float, threshold: float) -> None:
    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    if not number(debounce_s) or debounce_s < 0:
        raise ValueError(f"debounce_s must be a number of seconds >= 0, not {debounce_s!r}")
    if not isinstance(queue_len, int) or isinstance(queue_len, bool) or queue_len < 1:
        raise ValueError(f"queue_len must be an integer >= 1, not {queue_len!r}")
    if not number(sample_rate) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a number of samples a second > 0, not {sample_rate!r}")
    if not number(threshold) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], not {threshold!r}")
