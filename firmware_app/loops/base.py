"""What both loops share: the stop flag, systemd's watchdog, the run summary, and the rule for an
unwritable ledger (a daemon waits with backoff and carries on when space returns; `--once` exits)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from firmware_app.errors import LedgerUnavailable
from firmware_app.sdnotify import Notifier

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 5.0, 600.0
LEDGER_RETRY_MIN_S = 30.0


@dataclass
class RunSummary:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # file operations that could not finish
    bursts: int = 0

    def line(self) -> str:
        parts = [f"{k} {v}" for k, v in sorted(self.counts.items())]
        text = ", ".join(parts) if parts else "nothing new"
        return f"{self.bursts} burst(s): {text}" if self.bursts else text


class Progress(Protocol):
    """Told how far the loop is through the frames it found (`run` shows a bar or a periodic line)."""

    def found(self, frames: int) -> None:
        """`frames` more frames are about to be judged."""

    def judged(self) -> None:
        """One of them was judged (recorded, or left for a retry)."""


class LoopBase:
    ledger_retry_min_s = LEDGER_RETRY_MIN_S  # a class attribute, so a test can shorten the wait

    def __init__(self) -> None:
        self.notifier = Notifier()
        self.summary = RunSummary()
        self.on_event: Callable[[], None] | None = None
        self.on_decided: Callable[[], None] | None = None
        self.progress: Progress | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        self.notifier.stopping()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_alive(self, seconds: float) -> None:
        """Sleep (a stop ends it early) while still feeding systemd's watchdog: waiting is not hanging."""
        deadline = time.monotonic() + seconds
        step = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.notifier.ping()
            self._stop.wait(min(left, step))

    def repeat(self, step: Callable[[], bool], once: bool) -> None:
        """Call `step` until stopped or it says the work is done (True), feeding the watchdog once a
        pass. An unwritable ledger ends `--once` (LedgerUnavailable propagates); a daemon logs it,
        waits with backoff (30 s, doubling, at most 10 min) and carries on when space returns,
        instead of exiting into a restart loop."""
        backoff = self.ledger_retry_min_s
        while not self._stop.is_set():
            self.notifier.ping()  # once per pass: a loop stuck anywhere stops feeding the watchdog
            try:
                finished = step()
            except LedgerUnavailable as exc:
                if once:
                    raise
                log.error("%s Retrying in %.0f s.", exc, backoff)
                self.wait_alive(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            backoff = self.ledger_retry_min_s
            if finished:
                break
