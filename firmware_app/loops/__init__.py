"""The trap's two loops, behind one `Loop` protocol, built by `app.py`:

- `folder.FolderLoop`: frames that arrive as files in an inbox (a commercial trap, a card reader,
  an upload): the durable state machine of the ledger, recovery after a crash, retries;
- `camera.CameraLoop`: a Pi or OpenCV camera: trigger -> burst of arrays -> judge -> write only
  what is kept -> ledger.

Both decide with the same `judge.Judge`, guard the card with the same `retention.DiskGuard`, and
wait out an unwritable ledger the same way (`base.LoopBase`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from firmware_app.judge import Judge
from firmware_app.loops.base import Progress, RunSummary


class Loop(Protocol):
    judge: Judge
    on_event: Callable[[], None] | None  # told after a kept burst's event is in the outbox
    on_decided: Callable[[], None] | None  # told after a burst was decided and carried out (for the status)
    progress: Progress | None  # told how far it is through the frames found (a folder source)

    def run(self) -> RunSummary:
        """Until stopped (or, for `--once` / `--bursts N`, until the work is done)."""
        ...

    def stop(self) -> None:
        """Finish the current frame or burst, then return from `run` (safe from a signal handler)."""
        ...

    @property
    def waiting(self) -> int:
        """Frames scored but not decided when `run` returned (their burst was still open)."""
        ...


__all__ = ["Loop", "Progress", "RunSummary"]
