"""The Pi camera source end to end: `blankfilter run` as a subprocess with the picamera2 and gpiozero
fakes (tests/fakes: same interfaces, real fixture frames) first on PYTHONPATH, the shipped model,
real SQLite, real files, a real notify socket and a real SIGTERM."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from conftest import FRAMES, TESTS, cli_env

from firmware_app.config import load_config
from firmware_app.sources.opencv_camera import OpenCVCamera
from firmware_app.sources.picamera2_camera import CameraError, Picamera2Camera

SHIPPED = TESTS.parent / "models" / "blankfilter-cellnet-320.tflite"
BLANK = FRAMES / "speciesnet" / "blank.jpg"  # the shipped model: p = 0.01
ANIMAL = FRAMES / "speciesnet" / "ocelot.jpg"  # p = 1.0


def camera_env(tmp_path: Path, frames: list[Path], pulses: str, **extra: str) -> dict[str, str]:
    env = cli_env()
    env["PYTHONPATH"] = f"{TESTS / 'fakes'}:{env['PYTHONPATH']}"
    return (
        env
        | {
            "FAKE_PICAMERA2_FRAMES": ",".join(str(p) for p in frames),
            "FAKE_PICAMERA2_LOG": str(tmp_path / "camera.log"),
            "FAKE_PIR_PULSES": pulses,
        }
        | extra
    )


def camera_args(tmp_path: Path, *more: str) -> list[str]:
    sets = {
        "source.kind": "picamera2", "store.root": str(tmp_path / "store"), "store.min_free_mb": 0,
        "store.audit_rate": 0, "camera.trigger": "pir", "camera.burst_frames": 3, "camera.burst_interval_s": 0.05,
        "camera.cooldown_s": 0.5, "camera.still_size": "[640, 480]", "context.enabled": "false",
        "camera.pir_debounce_s": 0.2,
    }  # fmt: skip
    args = ["--model", str(SHIPPED)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return [*args, *more]


def rows(store: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(store / "ledger.db")
    db.row_factory = sqlite3.Row
    out = [dict(r) for r in db.execute("SELECT * FROM frames ORDER BY id")]
    db.close()
    return out


def jpegs(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*.jpg"))


def test_a_pir_trigger_captures_a_burst_blanks_are_never_written_kept_ones_are(tmp_path: Path) -> None:
    # 3 frames of an empty scene, then 3 of an ocelot: two PIR pulses, two bursts
    env = camera_env(tmp_path, [BLANK] * 3 + [ANIMAL] * 3, "0.5,2.0")
    # A cutoff that calls this empty scene blank (the shipped one keeps almost every frame): this is
    # about what the camera loop does with a blank burst, not about the model.
    args = camera_args(tmp_path, "--set", "model.cutoff=0.1")
    done = subprocess.run([sys.executable, "-m", "firmware_app", "run", "--bursts", "2", *args],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = tmp_path / "store"
    recorded = rows(store)
    assert [r["action"] for r in recorded] == ["not_written"] * 3 + ["kept"] * 3
    assert len({r["burst"] for r in recorded}) == 2
    files = jpegs(store)
    assert len(files) == 3 and all(f.parent == store / "kept" / "cam0" for f in files)  # blanks cost no write
    for row in recorded[3:]:
        written = store / row["dest"]
        assert hashlib.sha256(written.read_bytes()).hexdigest() == row["sha256"]  # the ledger names the file
        assert row["score"] > 0.9 and row["state"] == "done"
    assert all(r["score"] < 0.1 for r in recorded[:3])
    db = sqlite3.connect(store / "ledger.db")
    events = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox")]
    assert len(events) == 1 and [f["file"] for f in events[0]["frames"]] == [r["dest"] for r in recorded[3:]]
    log = [json.loads(line) for line in (tmp_path / "camera.log").read_text().splitlines()]
    configured = next(entry[1] for entry in log if entry[0] == "configure")
    assert configured["main"] == {"size": [640, 480], "format": "BGR888"}
    assert sum(1 for entry in log if entry == ["capture", "main"]) == 6
    assert ["stop"] in log  # the camera is released at the end
    assert "PIR on camera cam0" in done.stderr and "not_written" in done.stderr


def test_watchdog_is_fed_while_waiting_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(0.2)
    env = camera_env(tmp_path, [ANIMAL], "", NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="2000000")
    proc = subprocess.Popen([sys.executable, "-m", "firmware_app", "run", *camera_args(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "READY=1" not in "".join(messages):
            with contextlib.suppress(TimeoutError):
                messages.append(server.recv(4096).decode())
        assert any(m.startswith("READY=1") for m in messages), "no READY=1"
        start = time.monotonic()
        while time.monotonic() - start < 3.0:  # no PIR pulses: the loop only waits
            with contextlib.suppress(TimeoutError):
                messages.append(server.recv(4096).decode())
        assert messages.count("WATCHDOG=1") >= 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with contextlib.suppress(TimeoutError):
            for _ in range(10):
                messages.append(server.recv(4096).decode())
        assert "STOPPING=1" in messages
        log = [json.loads(line) for line in (tmp_path / "camera.log").read_text().splitlines()]
        assert ["stop"] in log and ["close"] in log
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()


def test_no_camera_is_a_clear_error(tmp_path: Path) -> None:
    env = camera_env(tmp_path, [], "")
    done = subprocess.run([sys.executable, "-m", "firmware_app", "run", *camera_args(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "the Pi camera did not start" in done.stderr and "ribbon cable" in done.stderr


def test_adapters_without_their_library_say_what_to_install(monkeypatch: Any) -> None:
    config = load_config(None, ["source.kind=picamera2"])
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a PC
    monkeypatch.setitem(sys.modules, "cv2", None)
    try:
        Picamera2Camera(config.camera)
    except CameraError as exc:
        assert "python3-picamera2" in str(exc) and "--system-site-packages" in str(exc)
    else:
        raise AssertionError("no error")
    try:
        OpenCVCamera(config.camera)
    except CameraError as exc:
        assert "python3-opencv" in str(exc)
    else:
        raise AssertionError("no error")


class FakeCapture:
    """cv2.VideoCapture's interface: frames from fixture JPEGs (BGR, as OpenCV gives them)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.released = frames, False

    def isOpened(self) -> bool:
        return True

    def set(self, _prop: int, _value: float) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        self.released = True


def test_opencv_adapter_gives_rgb_and_grey_lores(tmp_path: Path) -> None:
    from PIL import Image

    rgb = np.asarray(Image.open(ANIMAL).convert("RGB").resize((640, 480)))
    capture = FakeCapture([rgb[..., ::-1].copy(), rgb[..., ::-1].copy()])
    cv2 = type("cv2", (), {
        "VideoCapture": lambda device: capture, "CAP_PROP_FRAME_WIDTH": 3, "CAP_PROP_FRAME_HEIGHT": 4,
        "INTER_AREA": 3, "COLOR_BGR2GRAY": 6,
        "resize": staticmethod(lambda img, size, interpolation: np.asarray(Image.fromarray(img).resize(size))),
        "cvtColor": staticmethod(lambda img, code: np.asarray(Image.fromarray(img[..., ::-1]).convert("L"))),
    })  # fmt: skip
    camera = OpenCVCamera(load_config(None, ["source.kind=opencv"]).camera, module=cv2)  # type: ignore[arg-type]
    camera.start()
    assert np.array_equal(camera.capture(), rgb)  # BGR from OpenCV, RGB to the model
    assert camera.lores().shape == (240, 320)
    try:
        camera.capture()
    except CameraError as exc:
        assert "no frame" in str(exc)
    camera.stop()
    assert capture.released


class ScriptedCamera:
    """The Camera interface with scripted lores frames (motion appears after warm-up) and a real frame."""

    name = "cam0"

    def __init__(self, lores: list[np.ndarray], still: np.ndarray) -> None:
        self.lores_frames, self.still, self.started, self.stopped, self.lores_reads = lores, still, False, False, 0

    def start(self) -> None:
        self.started = True

    def lores(self) -> np.ndarray:
        frame = self.lores_frames[min(self.lores_reads, len(self.lores_frames) - 1)]
        self.lores_reads += 1
        return frame

    def capture(self) -> np.ndarray:
        return self.still

    def stop(self) -> None:
        self.stopped = True


def test_software_motion_triggers_a_burst_after_warm_up(tmp_path: Path) -> None:
    from PIL import Image

    from firmware_app.app import build_trap, make_triggers
    from firmware_app.classifiers import load_classifier

    sets = ["camera.trigger=motion", "source.kind=opencv", "store.min_free_mb=0", f"store.root={tmp_path / 'store'}",
            "store.audit_rate=0", "camera.burst_frames=2", "camera.burst_interval_s=0",
            "context.enabled=false"]  # fmt: skip
    config = load_config(None, sets)
    grey = np.asarray(Image.open(BLANK).convert("L").resize((320, 240)))
    rng = np.random.default_rng(1)
    quiet = [np.clip(grey + rng.normal(0, 2, grey.shape), 0, 255).astype(np.uint8) for _ in range(15)]
    animal = [frame.copy() for frame in quiet[:4]]
    for i, frame in enumerate(animal):  # a dark shape walks in
        frame[100:140, 40 + 20 * i : 90 + 20 * i] = 10
    still = np.asarray(Image.open(ANIMAL).convert("RGB").resize((640, 480)))
    camera = ScriptedCamera(quiet + animal, still)
    pir, motion = make_triggers(config)
    assert pir is None and motion is not None
    trap = build_trap(config, max_bursts=1, classifier=load_classifier(SHIPPED, threads=1), camera=camera,
                      triggers=(pir, motion))  # fmt: skip
    summary = trap.loop.run()
    trap.close()
    assert summary.bursts == 1 and summary.counts == {"kept": 2}
    assert camera.lores_reads >= 16  # not before the warm-up and the moving shape
    assert camera.started and camera.stopped
    assert len(list((tmp_path / "store" / "kept" / "cam0").glob("*.jpg"))) == 2


def test_night_mode_switches_exposure_with_hysteresis(tmp_path: Path, monkeypatch: Any) -> None:
    import importlib.util

    from PIL import Image, ImageEnhance

    spec = importlib.util.spec_from_file_location("fake_picamera2", TESTS / "fakes" / "picamera2" / "__init__.py")
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    dark, dusk = tmp_path / "dark.jpg", tmp_path / "dusk.jpg"
    day = Image.open(ANIMAL).convert("RGB")
    ImageEnhance.Brightness(day).enhance(0.05).save(dark)
    monkeypatch.setenv("FAKE_PICAMERA2_FRAMES", f"{dark},{dusk},{ANIMAL}")
    monkeypatch.setenv("FAKE_PICAMERA2_LOG", str(tmp_path / "camera.log"))
    sets = ["source.kind=picamera2", "camera.still_size=[640, 480]", "camera.night_below=30",
            "camera.night_exposure_time_us=40000", "camera.night_analogue_gain=8"]  # fmt: skip
    camera = Picamera2Camera(load_config(None, sets).camera, module=fake)
    camera.start()
    means = []
    for _ in range(3):  # each capture moves the fake to the next scene; lores shows the current one
        camera.capture()
        grey = camera.lores()
        means.append(float(grey.mean()))
        if len(means) == 1:
            assert camera.night  # dark: night settings
            mean = means[0]
            ImageEnhance.Brightness(day).enhance(0.05 * 35 / max(mean, 1)).save(dusk)  # between 30 and 45
    camera.stop()
    controls = [entry[1] for entry in map(json.loads, (tmp_path / "camera.log").read_text().splitlines())
                if entry[0] == "set_controls"]  # fmt: skip
    assert controls[0] == {"AeEnable": False, "ExposureTime": 40000, "AnalogueGain": 8.0}  # night
    assert 30 <= means[1] < 45 and len(controls) == 2  # dusk over night_below but under 1.5x: still night
    assert controls[1] == {"AeEnable": True} and not camera.night  # full daylight: automatic again
