"""Frame sources, two kinds with one small interface each; hardware imports live inside the adapters.

- Files: `Source` (here), implemented by `folder.FolderSource`, hands the folder loop frames that
  are complete files in the inbox.
- Arrays: `camera.Camera`, implemented by the picamera2 and OpenCV adapters, hands the camera loop
  bursts of frames in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Frame:
    """A complete frame file in the inbox."""

    path: Path
    rel: str  # relative to the inbox, POSIX separators: the frame's name in the ledger
    burst_hint: str | None = None  # a burst id when the source knows it (a camera trigger)


@dataclass(frozen=True)
class Skipped:
    """A file the source will not hand over, and why (logged once, recorded in the ledger)."""

    path: Path
    rel: str
    reason: str
    warning: bool = False  # refused for safety (a link), not merely not a frame: logged as a warning


class Source(Protocol):
    def start(self) -> None: ...

    def ready(self, timeout: float) -> tuple[list[Frame], list[Skipped]]:
        """Wait up to `timeout` seconds and return the frames that became complete."""
        ...

    def idle(self) -> bool:
        """True when nothing is waiting to settle (used by `run --once` to know it is finished)."""
        ...

    def wake(self) -> None:
        """End a wait in ready() early (the loop is stopping); safe from any thread."""
        ...

    def release(self, path: Path) -> None:
        """Offer this frame again at the next pass (it could not be recorded yet)."""
        ...

    def stop(self) -> None: ...
