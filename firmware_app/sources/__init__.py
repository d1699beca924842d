"""Frame sources: one small interface, one adapter per kind (folder now; cameras later).

A source hands the pipeline frames that are complete. Hardware imports live inside the adapter.
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


class Source(Protocol):
    def start(self) -> None: ...

    def ready(self, timeout: float) -> tuple[list[Frame], list[Skipped]]:
        """Wait up to `timeout` seconds and return the frames that became complete."""
        ...

    def idle(self) -> bool:
        """True when nothing is waiting to settle (used by `run --once` to know it is finished)."""
        ...

    def wake(self) -> None:
        """End a wait in ready() early (the pipeline is stopping); safe from any thread."""
        ...

    def stop(self) -> None: ...
