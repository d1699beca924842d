"""Shared test fixtures: real frames, real fixture models, and the CLI run as a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
FRAMES = TESTS / "fixtures" / "frames"
MODELS = TESTS / "fixtures" / "models"
TINY_U8 = MODELS / "tiny_u8.tflite"  # uint8 in, 1 sigmoid out, card cutoff 0.85

# Bursts of the fixture set as a camera would shoot them: (folder, [files]) in capture order.
BURSTS: list[tuple[str, list[str]]] = [
    ("wellington", ["11374_1-1.JPG", "11374_2-1.JPG", "11374_3-1.JPG"]),
    ("wellington", ["1200_1-0.JPG", "1200_2-0.JPG", "1200_3-0.JPG"]),
    ("missouri", [f"SEQ75192_IMG_000{i}.JPG" for i in range(1, 6)]),
    ("speciesnet", ["blank.jpg"]),
    ("speciesnet", ["ocelot.jpg"]),
    ("peru", ["cam1_EK000001.JPG"]),
    ("peru", ["cam1_EK000004.JPG"]),
    ("owl", ["RCNX1419.JPG"]),
]
ALL_FRAMES = [f"{folder}/{name}" for folder, names in BURSTS for name in names]


@pytest.fixture
def frames_dir() -> Path:
    return FRAMES


@pytest.fixture
def make_inbox(tmp_path: Path) -> Callable[..., Path]:
    """Copy the fixture frames into an inbox, giving each burst its own capture time.

    Files without EXIF time are grouped by mtime: frames of a burst 1 s apart, bursts 10 min
    apart, all well in the past so they count as complete (settled).
    """

    def make(inbox: Path | None = None, bursts: list[tuple[str, list[str]]] | None = None) -> Path:
        inbox = inbox or tmp_path / "inbox"
        base = 1_700_000_000.0
        for b, (folder, names) in enumerate(bursts or BURSTS):
            for i, name in enumerate(names):
                dest = inbox / folder / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(FRAMES / folder / name, dest)
                stamp = base + b * 600 + i
                os.utime(dest, (stamp, stamp))
        return inbox

    return make


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TESTS.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `blankfilter ARGS...` as a real subprocess (python -m firmware_app)."""

    def run(*args: str | Path, timeout: float = 120, check_rc: int | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "firmware_app", *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=cli_env(), check=False)
        if check_rc is not None:
            assert done.returncode == check_rc, f"rc {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done

    return run


@pytest.fixture
def store_args(tmp_path: Path) -> Callable[..., list[str]]:
    """--set flags for a run in tmp_path: inbox, store root, no settle delay, fixture model."""

    def args(inbox: Path | None = None, root: Path | None = None, model: Path = TINY_U8, **sets: object) -> list[str]:
        out = [
            "--model", str(model),
            "--set", f"source.inbox={inbox or tmp_path / 'inbox'}",
            "--set", f"store.root={root or tmp_path / 'store'}",
            "--set", "source.settle_s=0",
            "--set", "store.min_free_mb=0",  # a nearly full CI disk must not change what is kept
        ]  # fmt: skip
        for key, value in sets.items():
            section, _, name = key.partition("__")
            out += ["--set", f"{section}.{name}={value}"]
        return out

    return args


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs file systems (a full card, a read-only card); unmounted afterwards."""
    if not can_mount():
        pytest.skip("needs root to mount a tmpfs (full-disk and read-only-card tests)")
    mounted: list[Path] = []

    def mount(name: str, size: str = "1m", readonly: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (",ro" if readonly else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    """A real mosquitto on a free port for this test (tests/mqtt_broker.py), stopped afterwards."""
    from mqtt_broker import Broker

    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()
