"""`blankfilter run`: the trap daemon, for a folder inbox or a camera."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import time
from typing import TYPE_CHECKING, Any

from firmware_app import __version__
from firmware_app.actions import WOULD, Action
from firmware_app.commands.common import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    add_common,
    config_from_args,
    setup_logging,
    stop_on_signals,
)
from firmware_app.errors import LedgerDamaged, LedgerUnavailable
from firmware_app.ledger import Ledger

if TYPE_CHECKING:
    from firmware_app.loops import RunSummary

log = logging.getLogger("blankfilter")


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="process the inbox: score, decide, keep or discard, record")
    add_common(run)
    run.add_argument("--once", action="store_true", help="process what is there now, then exit")
    run.add_argument("--dry-run", action="store_true", help="score and decide, but move, delete and record nothing")
    run.add_argument("--bursts", type=int, help="camera sources: stop after this many bursts (a field check)")
    run.add_argument(
        "--progress-every", type=float, default=30.0, metavar="SECONDS",
        help="when stderr is not a terminal (a journal, a log file): a line saying how far the judging of a "
        "large inbox is, this often (a terminal shows a progress bar instead)",
    )  # fmt: skip
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from firmware_app.app import build_trap, start_publisher

    config = config_from_args(args)
    setup_logging(config.log.level)
    try:
        trap = build_trap(config, once=args.once, dry_run=args.dry_run, max_bursts=args.bursts)
    except LedgerDamaged as exc:  # waiting does not mend it: exit 2, which systemd does not restart
        log.error("%s", exc)
        return EXIT_USAGE
    except LedgerUnavailable as exc:  # a full or read-only card: no ledger, so nothing may move
        log.error("%s", exc)
        return EXIT_INCOMPLETE
    judge, folder = trap.judge, config.source.kind == "folder"
    if judge.context is not None:
        log.info(
            "camera context: %s, cutoff %.3f, veto %.2f, references in %s",
            judge.context.label, judge.context.settings.cutoff, judge.context.settings.veto, config.bank_path,
        )  # fmt: skip
    where = f"inbox {config.source.inbox}" if folder else f"camera {config.camera.name} ({config.source.kind}, " \
        f"trigger {config.camera.trigger})"  # fmt: skip
    log.info(
        "blankfilter %s: trap %s, model %s (%s), cutoff %.4g (%s), %s, discard=%s%s",
        __version__, config.trap.id, judge.classifier.card.label, judge.classifier.runtime, judge.cutoff,
        judge.cutoff_origin, where, config.store.discard,
        ", DRY RUN: nothing is moved or deleted" if args.dry_run else "",
    )  # fmt: skip

    stop_on_signals(trap.loop.stop, "frame" if folder else "burst")
    publisher = None if args.dry_run else start_publisher(config, trap)
    progress = trap.loop.progress = progress_for(args.progress_every)
    try:
        summary = trap.loop.run()
    except LedgerDamaged as exc:  # `--once` (a daemon backs off instead, touching nothing)
        log.error("%s", exc)
        return EXIT_USAGE
    except LedgerUnavailable as exc:
        log.error("%s", exc)
        return EXIT_INCOMPLETE
    finally:
        progress.close()
        if publisher is not None:
            publisher.stop(drain_s=config.mqtt.drain_s if args.once else 3.0)
        if not args.dry_run:
            note_outbox(trap.ledger, publisher is not None)
        trap.close()
    log.info("%s", dry_run_line(summary) if args.dry_run else f"done: {summary.line()}")
    if publisher is not None and publisher.failed:
        log.error("stopped because the MQTT publisher gave up (%s): events wait in the outbox for the restart",
                  publisher.failed)  # fmt: skip
        return EXIT_INCOMPLETE
    if trap.loop.waiting:
        log.info("%d frame(s) wait for their burst to close: the next start decides them", trap.loop.waiting)
    if summary.failures:
        log.error(
            "%d frame(s) could not be stored%s:", len(summary.failures), " and stay in the inbox" if folder else ""
        )
        for line in summary.failures[:20]:
            log.error("  %s", line)
        return EXIT_INCOMPLETE
    return EXIT_OK


def note_outbox(ledger: Ledger, broker: bool) -> None:
    try:
        depth, oldest = ledger.outbox_state()
    except (sqlite3.Error, LedgerUnavailable):
        return
    if depth:
        when = "when the broker is reachable" if broker else "once mqtt.host is set"
        log.info("%d event(s) wait in the outbox (oldest %s); they are sent %s", depth, oldest, when)


def dry_run_line(summary: RunSummary) -> str:
    """What a dry run would have done, in those words: it moved, deleted and recorded nothing."""
    would = [f"{WOULD[Action(k)]} {n} frame(s)" for k, n in sorted(summary.counts.items()) if k in WOULD]
    rest = [f"{k} {n}" for k, n in sorted(summary.counts.items()) if k not in WOULD]
    text = ", ".join(would) or "nothing to decide"
    return f"dry run done: {text} ({', '.join(rest) or 'nothing judged'}); nothing was moved, deleted or recorded"


class FrameProgress:
    """How far `run` is through the frames it found: a progress bar when stderr is a terminal, else
    (a journal, a log file) a line every `every_s` seconds while a large inbox is judged, and one when
    it is done. A few frames at a time, as a running trap gets them, say nothing."""

    def __init__(self, every_s: float, terminal: bool) -> None:
        self.every_s, self.terminal = every_s, terminal
        self.total = self.done = 0
        self.started = self.last_line = 0.0
        self.lines = 0  # periodic lines written in this stretch of frames
        self.bar: Any = None  # rich.progress.Progress, while shown
        self.task: Any = None

    def found(self, frames: int) -> None:
        if self.done == self.total:  # a new stretch of frames
            self.total = self.done = self.lines = 0
            self.started = self.last_line = time.monotonic()
        self.total += frames
        if self.terminal and self.bar is None and self.total >= BAR_MIN_FRAMES:
            self._show_bar()
        if self.bar is not None:
            self.bar.update(self.task, total=self.total, completed=self.done)

    def judged(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif not self.terminal and now - self.last_line >= self.every_s and self.done < self.total:
            log.info("progress: %s", self._so_far(now))
            self.last_line, self.lines = now, self.lines + 1
        if self.done == self.total:
            self._finish(now)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
            _log_to(sys.stderr)

    def _so_far(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else 0.0
        return (f"judged {self.done} of {self.total} frames ({self.done / self.total:.0%}), {rate:.1f} frames/s, "
                f"about {_duration(left)} left")  # fmt: skip

    def _finish(self, now: float) -> None:
        shown = self.bar is not None or self.lines > 0
        self.close()
        if shown:
            elapsed = now - self.started
            log.info("judged %d frames in %s (%.1f frames/s)", self.total, _duration(elapsed),
                     self.total / max(elapsed, 1e-6))  # fmt: skip

    def _show_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("judging"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )  # fmt: skip
        self.task = self.bar.add_task("judging", total=self.total)
        self.bar.start()
        _log_to(sys.stderr)  # rich now holds stderr: log lines print above the bar, not through it


BAR_MIN_FRAMES = 10  # fewer frames are judged before a bar could say anything


def progress_for(every_s: float) -> FrameProgress:
    terminal = sys.stderr.isatty() and not os.environ.get("JOURNAL_STREAM")
    return FrameProgress(every_s, terminal)


def _log_to(stream: Any) -> None:
    """Point the log's stderr handlers at `stream` (rich's stand-in for stderr while a bar is shown)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(stream)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
