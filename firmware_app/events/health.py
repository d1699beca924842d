"""The trap's own health for the status topic: disk, CPU temperature, throttling. Each reading is
optional: a value the machine does not offer is left out, never guessed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temperature_c(path: Path = THERMAL) -> float | None:
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def throttled() -> str | None:
    """`vcgencmd get_throttled` on a Raspberry Pi (e.g. "0x50005": under-voltage now and before)."""
    if shutil.which("vcgencmd") is None:
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().partition("=")[2] or None


def health(store_root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        st = os.statvfs(store_root)
        out["disk_free_mb"] = round(st.f_bavail * st.f_frsize / 1e6, 1)
    except OSError:
        pass
    temperature = cpu_temperature_c()
    if temperature is not None:
        out["cpu_temperature_c"] = temperature
    state = throttled()
    if state is not None:
        out["throttled"] = state
    return out
