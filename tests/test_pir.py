"""PirTrigger: through a fake sensor with gpiozero's MotionSensor interface, and through gpiozero's own MockFactory."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from firmware_app.triggers import Trigger, TriggerError
from firmware_app.triggers.pir import PirTrigger


class FakeMotionSensor:
    """gpiozero.MotionSensor's constructor, callbacks and close(); `pulse()` fires from a thread like gpiozero."""

    def __init__(
        self,
        pin: int | str | None = None,
        *,
        pull_up: bool = False,
        active_state: bool | None = None,
        queue_len: int = 1,
        sample_rate: float = 10,
        threshold: float = 0.5,
        partial: bool = False,
        pin_factory: Any = None,
    ) -> None:
        self.pin = pin
        self.queue_len = queue_len
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.pin_factory = pin_factory
        self.when_motion: Any = None
        self.when_no_motion: Any = None
        self.motion_detected = False
        self.closed = False

    def pulse(self, delay: float = 0.0, high_s: float = 0.01) -> threading.Thread:
        def run() -> None:
            time.sleep(delay)
            self.motion_detected = True
            if self.when_motion is not None:
                self.when_motion()
            time.sleep(high_s)
            self.motion_detected = False
            if self.when_no_motion is not None:
                self.when_no_motion()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_trigger(**kwargs: Any) -> tuple[PirTrigger, FakeMotionSensor]:
    trigger = PirTrigger(17, sensor_factory=FakeMotionSensor, **kwargs)
    return trigger, trigger.sensor


def test_wait_returns_true_on_motion() -> None:
    trigger, sensor = fake_trigger()
    assert isinstance(trigger, Trigger)
    sensor.pulse(delay=0.05)
    start = time.monotonic()
    assert trigger.wait(5.0) is True
    assert time.monotonic() - start < 2.0
    assert trigger.wait(0.05) is False, "one pulse is reported once"
    trigger.close()


def test_wait_returns_false_on_timeout() -> None:
    trigger, _ = fake_trigger()
    start = time.monotonic()
    assert trigger.wait(0.2) is False
    assert time.monotonic() - start >= 0.19
    assert trigger.wait(0) is False
    trigger.close()


def test_motion_before_wait_is_kept_for_the_next_wait() -> None:
    trigger, sensor = fake_trigger()
    sensor.pulse().join()
    assert trigger.wait(0) is True
    trigger.close()


def test_sensor_gets_the_gpiozero_arguments() -> None:
    factory = object()
    trigger, sensor = fake_trigger(queue_len=3, sample_rate=20.0, threshold=0.7, pin_factory=factory)
    assert (sensor.pin, sensor.queue_len, sensor.sample_rate, sensor.threshold) == (17, 3, 20.0, 0.7)
    assert sensor.pin_factory is factory
    assert sensor.when_motion is not None
    trigger.close()


def test_debounce_ignores_a_second_pulse_inside_debounce_s() -> None:
    clock = FakeClock()
    trigger, sensor = fake_trigger(debounce_s=2.0, clock=clock)
    sensor.pulse().join()
    assert trigger.wait(1.0) is True
    clock.now += 1.0
    sensor.pulse().join()
    assert trigger.wait(0.1) is False, "a pulse 1 s after the last one is the same animal"
    clock.now += 1.5  # 2.5 s after the accepted pulse; the debounced one does not extend the window
    sensor.pulse().join()
    assert trigger.wait(1.0) is True
    assert (trigger.pulses, trigger.accepted) == (3, 2)
    trigger.close()


def test_no_debounce_accepts_every_pulse() -> None:
    clock = FakeClock()
    trigger, sensor = fake_trigger(debounce_s=0.0, clock=clock)
    for _ in range(3):
        sensor.pulse().join()
        assert trigger.wait(1.0) is True
    trigger.close()


def test_close_closes_the_sensor_and_wakes_a_waiter() -> None:
    trigger, sensor = fake_trigger()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(trigger.wait(10.0)))
    waiter.start()
    time.sleep(0.1)
    start = time.monotonic()
    trigger.close()
    waiter.join(5.0)
    assert result == [False]
    assert time.monotonic() - start < 2.0
    assert sensor.closed and sensor.when_motion is None and trigger.closed
    trigger.close()  # twice is harmless
    sensor.when_motion = trigger._on_motion  # a late callback from the sampling thread
    sensor.pulse().join()
    assert trigger.wait(0) is False


def test_missing_gpiozero_names_the_pin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero -> ImportError
    with pytest.raises(TriggerError, match=r"camera\.pir_pin = 17: .*gpiozero.* not installed"):
        PirTrigger(17)


def test_bad_pin_names_the_pin_key() -> None:
    class PinInvalidPin(ValueError):  # gpiozero's class name, raised by the factory
        pass

    def factory(pin: int, **_: Any) -> FakeMotionSensor:
        raise PinInvalidPin(f"{pin} is not a valid pin name")

    with pytest.raises(TriggerError, match=r"camera\.pir_pin = 99: cannot open .*PinInvalidPin.*BCM") as info:
        PirTrigger(99, sensor_factory=factory)
    assert isinstance(info.value.__cause__, PinInvalidPin)


def test_any_open_failure_is_a_trigger_error() -> None:
    def factory(pin: int, **_: Any) -> FakeMotionSensor:
        raise OSError(16, "Device or resource busy")

    with pytest.raises(TriggerError, match=r"camera\.pir_pin = 4: cannot open the PIR sensor: OSError.*busy"):
        PirTrigger(4, sensor_factory=factory)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("debounce_s", -1.0),
        ("debounce_s", float("nan")),
        ("queue_len", 0),
        ("queue_len", 2.5),
        ("sample_rate", 0),
        ("threshold", 1.5),
        ("threshold", True),
    ],
)
def test_bad_parameters_name_the_parameter(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        PirTrigger(17, sensor_factory=FakeMotionSensor, **{name: value})


# -- gpiozero itself, on its mock pins ------------------------------------------------------------
@pytest.fixture
def mock_pins() -> Iterator[Any]:
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    previous = gpiozero.Device.pin_factory
    factory = MockFactory()
    gpiozero.Device.pin_factory = factory
    yield factory
    factory.reset()
    gpiozero.Device.pin_factory = previous


def settled(trigger: PirTrigger) -> None:
    """gpiozero's sampling thread reads its first state silently: let it, so the next edge fires."""
    trigger.sensor.value  # noqa: B018 - blocks until the sampling queue is full
    time.sleep(0.1)


def test_gpiozero_mock_pin_drives_the_trigger(mock_pins: Any) -> None:
    trigger = PirTrigger(17, debounce_s=0.5, sample_rate=100.0)
    pin = mock_pins.pin(17)
    settled(trigger)
    pin.drive_high()
    assert trigger.wait(3.0) is True
    first = time.monotonic()
    pin.drive_low()
    time.sleep(0.1)
    pin.drive_high()  # inside debounce_s: ignored
    assert trigger.wait(0.2) is False
    pin.drive_low()
    time.sleep(max(0.0, 0.6 - (time.monotonic() - first)))
    pin.drive_high()
    assert trigger.wait(3.0) is True
    trigger.close()
    assert trigger.sensor.closed


def test_gpiozero_invalid_pin(mock_pins: Any) -> None:
    with pytest.raises(TriggerError, match=r"camera\.pir_pin = 99: cannot open .*PinInvalidPin"):
        PirTrigger(99)


def test_gpiozero_pin_in_use_and_released_by_close(mock_pins: Any) -> None:
    first = PirTrigger(17)
    with pytest.raises(TriggerError, match=r"camera\.pir_pin = 17: .*GPIOPinInUse"):
        PirTrigger(17)
    first.close()
    PirTrigger(17).close()  # close() gave the pin back
