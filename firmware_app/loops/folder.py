"""The folder loop: inbox files -> judge -> ledger -> store, one durable step at a time.

Order of durability (why no frame is ever lost):
1. a frame is hashed, judged and recorded (`scored`) while its file stays untouched in the inbox;
2. its burst is decided and the action recorded (`decided`) in one transaction, with its event;
3. only then is the file moved or deleted, and the row marked `done`.
A crash anywhere replays from the ledger. A frame that cannot be decoded or scored is kept.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from stat import S_ISLNK
from typing import TypeVar

import numpy as np

from firmware_app.actions import WOULD, Action, ContextState, State
from firmware_app.context import FrameFacts, TopUpFrame
from firmware_app.decision import Candidate, camera_of, group_bursts
from firmware_app.errors import BlankfilterError, LedgerUnavailable
from firmware_app.events.payloads import AuditFrame, EventFrame
from firmware_app.hashing import sha256_bytes, sha256_file
from firmware_app.imaging import decode_jpeg
from firmware_app.judge import Judge, Views, top_up_frame
from firmware_app.ledger import Decision, FrameRow, Ledger, NewFrame, OutboxEvent, printable
from firmware_app.loops.base import RETRY_MAX_S, RETRY_MIN_S, LoopBase, RunSummary
from firmware_app.retention import DiskGuard
from firmware_app.sources import Frame, Skipped, Source
from firmware_app.sources.folder import read_frame
from firmware_app.store import FrameVanished, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """A frame read, hashed and decoded (or the reason it could not be)."""

    stat: os.stat_result | None
    sha: str
    size: int
    views: Views
    read_error: OSError | None  # why it could not even be read: it stays in the inbox
    fingerprint: Fingerprint | None = None  # of the file as read (None: it changed while being read)


Fingerprint = tuple[int, int, int]  # size, mtime (ns), inode: the file is still the bytes that were judged


def fingerprint(st: os.stat_result) -> Fingerprint:
    return st.st_size, st.st_mtime_ns, st.st_ino


T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: list[T], work: Callable[[T], R], pool: Executor) -> Iterator[tuple[T, R]]:
    """Yield (item, work(item)) in order while work on the next item already runs in `pool`.

    JPEG decoding and TFLite inference both release the GIL, so on a multi-core Pi the next
    frame decodes while this one is scored.
    """
    ahead: Future[R] | None = pool.submit(work, items[0]) if items else None
    for index, item in enumerate(items):
        assert ahead is not None
        result = ahead.result()
        ahead = pool.submit(work, items[index + 1]) if index + 1 < len(items) else None
        yield item, result


class FolderLoop(LoopBase):
    def __init__(
        self,
        judge: Judge,
        ledger: Ledger,
        store: Store,
        source: Source,
        guard: DiskGuard,
        burst_gap_s: float,
        settle_s: float,
        once: bool = False,
        dry_run: bool = False,
    ) -> None:
        super().__init__()
        self.judge, self.ledger, self.store, self.source, self.guard = judge, ledger, store, source, guard
        self.burst_gap_s, self.quiet_s = burst_gap_s, max(burst_gap_s, settle_s)
        self.once, self.dry_run = once, dry_run
        self._pending: dict[int, Candidate] = {}
        self._learnable: dict[int, TopUpFrame] = {}  # frame id -> what a top-up needs (in memory only)
        self._last_arrival: dict[str, float] = {}
        self._retry_at: dict[int, tuple[float, float]] = {}  # frame id -> (when, backoff)
        self._fingerprints: dict[int, Fingerprint] = {}  # frame id -> its file as judged (in memory only)

    # -- entry points -----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current frame and return (SIGTERM, SIGINT).

        The loop may be asleep in the source for a long while (no fixed tick), so the source is
        woken too, from a helper thread: this runs in a signal handler, where taking the source's
        lock could deadlock against the main thread it interrupted.
        """
        super().stop()
        threading.Thread(target=self.source.wake, name="stop-wake", daemon=True).start()

    @property
    def waiting(self) -> int:
        """Frames scored but not decided yet (their burst was still open when the loop stopped)."""
        return len(self._pending)

    def run(self) -> RunSummary:
        self.recover()
        self.source.start()
        self.notifier.ready("watching the inbox")
        prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        try:
            self.repeat(lambda: self.step(prefetch), self.once)
        finally:
            prefetch.shutdown(wait=True, cancel_futures=True)
            self.source.stop()
        return self.summary

    def step(self, prefetch: Executor) -> bool:
        """One pass: take the frames that became complete, judge, decide, store. True: `--once` is done."""
        low_disk = self.guard.check()
        frames, skipped = self.source.ready(timeout=0.0 if self.once else self.idle_timeout())
        self.judge.refresh()
        self.note_skipped(skipped)
        todo = [frame for frame in frames if not self.skipped_before(frame)]
        if todo and self.progress is not None:
            self.progress.found(len(todo))
        try:
            for frame, loaded in prefetched(todo, self.load, prefetch):
                if self.stopping:
                    break
                if not self.record(frame, loaded):
                    self.source.release(frame.path)
                if self.progress is not None:
                    self.progress.judged()
        except LedgerUnavailable:
            for frame in todo:  # offered again at the next rescan; what was recorded is skipped then
                self.source.release(frame.path)
            raise
        # Stopped part-way through the frames: the open bursts may still have frames in the
        # inbox, so they are left undecided ('scored'); the next start decides them whole.
        self.close_bursts(low_disk, flush=self.once and self.source.idle() and not self.stopping)
        self.retry_unfinished()
        return self.once and self.source.idle() and not frames

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> None:
        """Finish what a crash interrupted: replay decided actions, re-pend scored frames."""
        if not self.dry_run:
            self.store.clean_partials()
        interrupted = self.ledger.in_state(State.DECIDED)
        for row in interrupted:
            log.info("resuming interrupted %s of %s", row.action, row.path)
        self.apply_all(interrupted)
        for row in self.ledger.in_state(State.SCORED):
            if (self.store.inbox / row.path).exists():
                self._repend(row)
            else:
                self.ledger.done(
                    row.id, action=Action.VANISHED, error="file left the inbox before its burst was decided"
                )

    # -- per frame --------------------------------------------------------------------------
    def skipped_before(self, frame: Frame) -> bool:
        """Looked at before and left in place on purpose: not re-read at every start."""
        try:
            stat = frame.path.stat()
        except OSError:
            return False  # load() reports it
        return self.ledger.was_skipped(frame.rel, stat.st_size, stat.st_mtime)

    def load(self, frame: Frame) -> Loaded:
        """The I/O and decoding of a frame. Touches neither the ledger nor the model, so it runs on
        the prefetch thread while the main thread scores the previous frame."""
        try:
            data, before = read_frame(frame.path)  # never through a link (swapped in after it was listed)
            stat = frame.path.lstat()
        except OSError as exc:
            return Loaded(None, "", 0, Views(None, None, None), exc)
        if fingerprint(before) != fingerprint(stat) or len(data) != stat.st_size:  # still being written
            return Loaded(stat, sha256_bytes(data), len(data), Views(None, None, None), None, None)
        views = self.judge.prepare_jpeg(data, camera_of(frame.rel))
        return Loaded(stat, sha256_bytes(data), len(data), views, None, fingerprint(stat))

    def record(self, frame: Frame, loaded: Loaded) -> bool:
        """Judge a loaded frame and record it as 'scored'; its file stays untouched in the inbox."""
        if loaded.read_error is not None or loaded.stat is None:
            if isinstance(loaded.read_error, FileNotFoundError):
                log.warning(
                    "%s vanished before it could be read (moved or deleted by someone else)", printable(frame.rel)
                )
                return True
            why = loaded.read_error.strerror if loaded.read_error else "unknown"
            log.error("%s: cannot read (%s); left in the inbox, will retry", printable(frame.rel), why)
            return False
        if loaded.fingerprint is None:
            log.info("%s changed while it was read (still being written): judged once it settles", printable(frame.rel))
            return False
        stat, sha, prepared = loaded.stat, loaded.sha, loaded.views.prepared
        known = self.ledger.find(frame.rel, sha)
        # Earlier bytes of this file still waiting for their burst (an upload that stalled past
        # settle_s, then went on): superseded by these (in the same transaction as their row).
        earlier = [c.frame_id for c in self._pending.values() if c.path == frame.rel and c.sha256 != sha]
        if known is not None and known.action == Action.SUPERSEDED:
            for old in earlier:
                self.ledger.done(old, action=Action.SUPERSEDED)
                self._forget(old)
            known = self.ledger.revive(known.id)
            if known is not None:
                log.info("%s holds again the bytes judged at first: waiting for its burst again", printable(frame.rel))
                self._fingerprints[known.id] = loaded.fingerprint
                self._repend(known)
            return True
        if known is not None:
            if known.state == State.DONE:
                self.drop_duplicate(frame, known, stat.st_size, stat.st_mtime)
            return True
        captured = prepared.captured_at if prepared and prepared.captured_at else None
        captured_ts = captured.replace(tzinfo=UTC).timestamp() if captured else stat.st_mtime
        # the references' bank and the log name a frame in text (a name that is not UTF-8, escaped)
        facts = FrameFacts(printable(frame.rel), sha, captured_ts, frame.burst_hint, None, self.judge.cutoff)
        seen = self.judge.see(loaded.views, camera_of(frame.rel), facts)
        record = NewFrame(
            path=frame.rel,
            sha256=sha,
            size=loaded.size,
            captured_at=(captured or datetime.fromtimestamp(stat.st_mtime, UTC)).isoformat(),
            captured_ts=captured_ts,
            time_source="exif" if captured else "mtime",
            burst_hint=frame.burst_hint,
            score=seen.score,
            gamma=prepared.gamma if prepared else None,
            exposure=asdict(prepared.exposure) if prepared else None,
            error=seen.error,
            model=self.judge.classifier.card.name,
            model_version=self.judge.classifier.card.version,
            context_score=seen.assessment.score if seen.assessment is not None else None,
            context_state=seen.context_state,
        )
        try:
            frame_id = self.ledger.add(record, supersedes=earlier)
        except sqlite3.IntegrityError:
            return True  # recorded by an earlier run between our find() and add(): already pending
        for old in earlier:
            log.warning("%s changed after it was read (an upload not finished?): judged again on its new bytes",
                        printable(frame.rel))  # fmt: skip
            self._forget(old)
            self.summary.counts[Action.SUPERSEDED] += 1
        self._fingerprints[frame_id] = loaded.fingerprint
        self.summary.counts["scored" if seen.error is None else "failed"] += 1
        if seen.assessment is not None:
            self.summary.counts[f"context_{seen.assessment.state}"] += 1
        self.time_lapse_reference(frame, sha, captured_ts)
        learnable = top_up_frame(printable(frame.rel), sha, captured_ts, seen)
        if learnable is not None:
            self._learnable[frame_id] = learnable
        self._pend(Candidate(frame_id, frame.rel, sha, captured_ts, frame.burst_hint, seen.score, seen.context_score,
                             record.gamma, seen.context_state))  # fmt: skip
        return True

    def time_lapse_reference(self, frame: Frame, sha: str, captured_ts: float) -> None:
        """A time-lapse or field-scan frame (context.reference_pattern) is taken with no trigger: like a
        camera's quiet-time frame, it also becomes a reference of its camera when the judge finds it empty."""
        pattern = self.judge.config.context.reference_pattern
        if not pattern or self.dry_run or self.judge.context is None or not fnmatch(frame.path.name, pattern):
            return
        try:
            spec = self.judge.classifier.card.input  # decoded as every frame is: at about the classifier's size
            image, _, _ = decode_jpeg(read_frame(frame.path)[0], (spec.width, spec.height), self.judge.imaging)
            rgb = np.asarray(image)
            outcome = self.judge.quiet_reference(camera_of(frame.rel), rgb, printable(frame.rel), sha, captured_ts)
        except (OSError, BlankfilterError, ValueError, RuntimeError, sqlite3.Error) as exc:
            outcome = f"failed ({exc})"
        self.summary.counts["time_lapse_reference" if outcome.startswith("taken") else "time_lapse_refused"] += 1
        log.info("%s: time-lapse frame %s", printable(frame.rel), outcome)

    def drop_duplicate(self, frame: Frame, known: FrameRow, size: int, mtime: float) -> None:
        """The same bytes at the same path again (a card copied twice): never processed twice.

        The copy is removed when the original's outcome still stands (it was deleted as blank, or a
        byte-identical copy sits in the store); otherwise it is left in place and not looked at again.
        """
        stored = self.store.root / known.dest if known.dest else None
        if known.action == Action.DELETED or (stored and stored.is_file() and sha256_file(stored) == known.sha256):
            if not self.dry_run:
                self.store.delete(frame.rel)
            where = f"identical copy in {known.dest}" if known.dest else "deleted as blank"
            log.info("%s was already processed (%s): removed this second copy", printable(frame.rel), where)
            self.summary.counts["duplicate"] += 1
            return
        reason = f"already processed ({known.action}), and its stored copy is gone: left in place"
        log.warning("%s %s", printable(frame.rel), reason)
        if not self.dry_run:
            self.ledger.skip(frame.rel, size, mtime, reason)

    def _pend(self, candidate: Candidate) -> None:
        self._pending[candidate.frame_id] = candidate
        self._last_arrival[camera_of(candidate.path)] = time.monotonic()

    def _repend(self, row: FrameRow) -> None:
        """A scored row from the ledger waits for its burst again (after a restart, or revived)."""
        state, context_score = _recorded_context(row)
        self._pend(Candidate(row.id, row.path, row.sha256, row.captured_ts, row.burst_hint, row.score,
                             context_score, row.gamma, state))  # fmt: skip

    def _forget(self, frame_id: int) -> None:
        """A frame no longer waits for anything (superseded, vanished or done)."""
        self._pending.pop(frame_id, None)
        self._learnable.pop(frame_id, None)
        self._fingerprints.pop(frame_id, None)
        self._retry_at.pop(frame_id, None)

    def judged_bytes(self, frame_id: int, rel: str, sha256: str) -> bool | None:
        """Whether the inbox file is still the bytes that were judged: True, False (other bytes: a
        resumed upload, a rewrite), or None when it is gone. Its size, mtime and inode as read say so
        at the cost of a stat; when they differ (or are not known, after a restart) its sha256 does."""
        path = self.store.inbox / rel
        try:
            st = path.lstat()
            if S_ISLNK(st.st_mode):
                return False  # swapped for a link: never stored, never read through
            if self._fingerprints.get(frame_id) == fingerprint(st):
                return True
            return sha256_file(path) == sha256
        except FileNotFoundError:
            return None
        except OSError:
            return True  # unreadable: the file operation says why, and is retried

    def supersede(self, frame_id: int, rel: str, when: str) -> None:
        """Its file changed after it was judged: close the row; the new bytes are a new frame."""
        log.warning("%s changed after it was judged (an upload not finished?): not %s; judged again as a new frame",
                    printable(rel), when)  # fmt: skip
        self.ledger.done(frame_id, action=Action.SUPERSEDED)
        self._forget(frame_id)
        self.source.release(self.store.inbox / rel)
        self.summary.counts[Action.SUPERSEDED] += 1

    def note_skipped(self, skipped: list[Skipped]) -> None:
        for item in skipped:
            try:
                st: os.stat_result | None = item.path.lstat()  # a link's own, not its target's
            except OSError:
                st = None
            size, mtime = (st.st_size, st.st_mtime) if st else (0, 0.0)
            if not self.ledger.was_skipped(item.rel, size, mtime):
                level = logging.WARNING if item.warning else logging.INFO
                log.log(level, "%s skipped: %s (left in place)", printable(item.rel), item.reason)
                self.ledger.skip(item.rel, size, mtime, item.reason)
                self.summary.counts["skipped"] += 1

    # -- per burst --------------------------------------------------------------------------
    def close_bursts(self, low_disk: bool, flush: bool) -> None:
        """Decide every burst that can no longer grow: all of them when flushing."""
        bursts = group_bursts(list(self._pending.values()), self.burst_gap_s)
        last_of_camera = {camera_of(b[-1].path): id(b) for b in bursts}
        now = time.monotonic()
        for burst in bursts:
            camera = camera_of(burst[-1].path)
            still_open = last_of_camera[camera] == id(burst) and now - self._last_arrival.get(camera, 0) < self.quiet_s
            if still_open and not flush:
                continue
            self.decide(burst, low_disk)

    def idle_timeout(self) -> float:
        """How long the loop may sleep: until an open burst could close or a retry is due.

        A trap runs for months on a battery: no busy polling, no fixed 1 s tick.
        """
        now = time.monotonic()
        open_cameras = {camera_of(c.path) for c in self._pending.values()}
        deadlines = [self._last_arrival.get(camera, now) + self.quiet_s for camera in open_cameras]
        deadlines += [when for when, _ in self._retry_at.values()]
        deadlines.append(now + 60.0)  # the disk guard and quarantine caps still get checked
        if self.notifier.watchdog_s is not None:  # systemd's watchdog must hear from the loop in time
            deadlines.append(now + self.notifier.watchdog_s / 2)
        return max(0.05, min(deadlines) - now)

    def decide(self, burst: list[Candidate], low_disk: bool) -> None:
        """Decide a closed burst, then carry it out. Each frame must still be the bytes judged: one
        that changed is superseded and the rest of its burst waits for its new bytes to be judged
        (a burst is decided whole); one that is gone is recorded so, and never named by an event."""
        changed = False
        for frame in list(burst):
            still = self.judged_bytes(frame.frame_id, frame.path, frame.sha256)
            if still is None:
                self.ledger.done(frame.frame_id, action=Action.VANISHED,
                                 error="file left the inbox before its burst was decided")  # fmt: skip
                self._forget(frame.frame_id)
                self.summary.counts[Action.VANISHED] += 1
                burst.remove(frame)
            elif not still:
                self.supersede(frame.frame_id, frame.path, "decided")
                self._last_arrival[camera_of(frame.path)] = time.monotonic()  # its burst stays open
                changed = True
        if changed or not burst:
            return
        verdict = self.judge.decide(burst, low_disk, on_disk=True)
        decisions = [
            Decision(f.frame_id, verdict.key, v, action, self.store.destination(action, f.path, f.sha256),
                     self.judge.cutoff_for(camera_of(f.path)))
            for f, v, action in zip(burst, verdict.verdicts, verdict.actions, strict=True)
        ]  # fmt: skip
        events = [] if verdict.blank else [self.event_for(burst, verdict.key, decisions)]
        if verdict.blank and Action.AUDIT in verdict.actions:  # the audit sample: to be reviewed
            events.append(self.audit_for(burst, verdict.key, decisions))
        self.ledger.decide(decisions, events)
        if events and self.on_event is not None:
            self.on_event()
        for frame in burst:
            del self._pending[frame.frame_id]
        rows = [self.ledger.find_by_id(frame.frame_id) for frame in burst]
        self.apply_all([row for row in rows if row is not None])
        if self.on_decided is not None:
            self.on_decided()
        if verdict.blank and not self.dry_run:
            learnable = [self._learnable.get(f.frame_id) for f in burst]
            if self.judge.learn(camera_of(burst[0].path), verdict.key, learnable):
                self.summary.counts["reference_added"] += 1
        for frame in burst:
            self._learnable.pop(frame.frame_id, None)

    def event_for(self, burst: list[Candidate], key: str, decisions: list[Decision]) -> OutboxEvent:
        """The kept burst's MQTT event; its thumbnail from the best frame, still in the inbox."""
        frames = [
            EventFrame(printable(d.dest or f.path), f.sha256, f.captured_ts, f.score, f.gamma, f.context_score)
            for f, d in zip(burst, decisions, strict=True)
        ]
        best = max(burst, key=lambda f: -1.0 if f.score is None else f.score)
        return self.judge.event(key, frames, self.store.inbox / best.path, camera_of(burst[0].path))

    def audit_for(self, burst: list[Candidate], key: str, decisions: list[Decision]) -> OutboxEvent:
        """An audited burst's `audit` message; its thumbnail from the best frame, still in the inbox."""
        frames = [
            AuditFrame(printable(d.dest or f.path), f.score, f.context_score, f.context_state, d.action, f.captured_ts)
            for f, d in zip(burst, decisions, strict=True)
        ]
        best = max(burst, key=lambda f: -1.0 if f.score is None else f.score)
        return self.judge.audit(key, camera_of(burst[0].path), frames, self.store.inbox / best.path)

    # -- file operations --------------------------------------------------------------------
    def apply_all(self, rows: list[FrameRow]) -> None:
        """Carry out decided rows' file operations (a burst), then mark them done in one ledger
        transaction: one fsync for the burst instead of one per frame, which spares SD cards.
        A crash in between replays harmlessly (the sources are gone, the destinations hold the
        bytes). A frame whose operation failed stays in the inbox and is retried."""
        finished = [row for row in rows if self._file_operation(row)]
        if not finished:
            return
        try:
            self.ledger.done_many([row.id for row in finished])
        except LedgerUnavailable as exc:
            for row in finished:  # the files moved but the ledger could not say so yet: retry the marking
                self._schedule_retry(row, str(exc))
            return
        for row in finished:
            self._retry_at.pop(row.id, None)
            self._fingerprints.pop(row.id, None)
            self.summary.counts[row.action or "?"] += 1
            log.debug("%s: %s (score %s)", row.path, row.action, _fmt(row.score))

    def _file_operation(self, row: FrameRow) -> bool:
        """Move or delete one decided frame. True when it is done and only needs marking."""
        if self.dry_run:
            what = WOULD.get(Action(row.action), str(row.action)) if row.action else "would leave"
            to = f" -> {row.dest}" if row.dest else ""
            log.info("dry run: %s %s%s (score %s)", what, printable(row.path), to, _fmt(row.score))
            return True
        if self.judged_bytes(row.id, row.path, row.sha256) is False:
            self.supersede(row.id, row.path, str(row.action))
            return False
        try:
            if row.action == Action.DELETED:
                self.store.delete(row.path)
            elif row.dest:
                self.store.move(row.path, row.dest, row.sha256)
        except FrameVanished as exc:
            log.warning("%s", exc)
            self.ledger.done(row.id, action=Action.VANISHED, error=str(exc))
            self.summary.counts[Action.VANISHED] += 1
            return False
        except OSError as exc:
            self._failed(row, exc)
            return False
        return True

    def _failed(self, row: FrameRow, exc: OSError) -> None:
        where = exc.filename or self.store.root
        if exc.filename2 and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            where = exc.filename2  # link/rename: the destination side is the read-only or full one
        elif exc.filename2:
            where = f"{exc.filename} -> {exc.filename2}"
        message = f"{row.action} failed: {exc.strerror or exc} ({where}); the frame stays in the inbox"
        self._schedule_retry(row, message)
        self.summary.failures.append(f"{row.path}: {message}")
        # The ledger may sit on the failing disk itself; the log line above still says it.
        with contextlib.suppress(LedgerUnavailable):
            self.ledger.note_store_error(row.id, message)

    def _schedule_retry(self, row: FrameRow, message: str) -> None:
        _, backoff = self._retry_at.get(row.id, (0.0, RETRY_MIN_S / 2))
        backoff = min(backoff * 2, RETRY_MAX_S)
        self._retry_at[row.id] = (time.monotonic() + backoff, backoff)
        log.error("%s: %s; retry in %.0f s", printable(row.path), message, backoff)

    def retry_unfinished(self) -> None:
        now = time.monotonic()
        for frame_id, (when, _) in list(self._retry_at.items()):
            if when <= now:
                row = self.ledger.find_by_id(frame_id)
                if row is not None and row.state == State.DECIDED:
                    self.apply_all([row])
                else:
                    self._retry_at.pop(frame_id, None)


def _recorded_context(row: FrameRow) -> tuple[ContextState | None, float | None]:
    """A scored row's context as recorded. A state this version does not know (a damaged or newer
    ledger) drops the context score too: the classifier decides, rather than a guess at the rule."""
    try:
        state = ContextState(row.context_state) if row.context_state else None
    except ValueError:
        log.warning(
            "%s: unknown context state %r in the ledger: the classifier decides", printable(row.path), row.context_state
        )
        return None, None
    return state, row.context_score


def _fmt(score: float | None) -> str:
    return "failed" if score is None else f"{score:.3f}"
