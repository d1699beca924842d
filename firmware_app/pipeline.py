"""The trap's main loop: source -> imaging -> model -> decision -> store, with the ledger in between.

Order of durability (why no frame is ever lost):
1. a frame is hashed, scored and recorded (`scored`) while its file stays untouched in the inbox;
2. its burst is decided and the action recorded (`decided`) in one transaction;
3. only then is the file moved or deleted, and the row marked `done`.
A crash anywhere replays from the ledger. A frame that cannot be decoded or scored is kept.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from firmware_app.classifiers import Classifier
from firmware_app.config import Config
from firmware_app.context import (
    DRIFT,
    FAILED,
    INCONSISTENT,
    MATCHED,
    Assessment,
    CameraContext,
    FrameFacts,
    TopUpFrame,
    lighting_mode,
)
from firmware_app.context.bank import BankError
from firmware_app.decision import (
    Candidate,
    Cutoffs,
    audit_pick,
    burst_id,
    burst_is_blank,
    camera_of,
    frame_decision,
    group_bursts,
)
from firmware_app.errors import BlankfilterError, ImageError, LedgerUnavailable
from firmware_app.events.payloads import EventFrame, build_event, dumps
from firmware_app.events.thumbnail import make_thumbnail
from firmware_app.hashing import sha256_file
from firmware_app.imaging import ImagingSettings, Prepared, prepare_jpeg_views
from firmware_app.ledger import Decision, FrameRow, Ledger, NewFrame, OutboxEvent
from firmware_app.sdnotify import Notifier
from firmware_app.sources import Frame, Skipped
from firmware_app.sources.folder import FolderSource
from firmware_app.store import FrameVanished, Store

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 5.0, 600.0
LEDGER_RETRY_MIN_S = 30.0


@dataclass
class RunSummary:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # file operations that could not finish

    def line(self) -> str:
        parts = [f"{k} {v}" for k, v in sorted(self.counts.items())]
        return ", ".join(parts) if parts else "nothing new"


@dataclass(frozen=True)
class Loaded:
    """A frame read, hashed and decoded (or the reason it could not be)."""

    stat: os.stat_result | None
    sha: str
    size: int
    prepared: Prepared | None
    error: str | None  # why it could not be decoded: it will be kept (fail open)
    read_error: OSError | None  # why it could not even be read: it stays in the inbox
    context_pixels: np.ndarray | None = None  # the extractor's input, when the camera has references


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


def imaging_settings(config: Config) -> ImagingSettings:
    im = config.imaging
    return ImagingSettings(
        gamma=im.gamma,
        dark_below=im.dark_below,
        bright_above=im.bright_above,
        target_mean=im.target_mean,
        max_pixels=int(im.max_megapixels * 1e6),
    )


class Pipeline:
    def __init__(
        self,
        config: Config,
        classifier: Classifier,
        ledger: Ledger,
        dry_run: bool = False,
        context: CameraContext | None = None,
    ) -> None:
        self.config = config
        self.classifier = classifier
        self.ledger = ledger
        self.dry_run = dry_run
        self.context = context
        self.cutoff = config.model.cutoff if config.model.cutoff is not None else classifier.card.cutoff
        self.cutoffs = Cutoffs(self.cutoff)
        if context is not None:
            self.cutoffs = Cutoffs(self.cutoff, context.settings.cutoff)
        # Which cameras are worth a feature pass: a snapshot the prefetch thread may read.
        self._context_cameras: frozenset[str] = frozenset()
        self._capture_pending = False
        self._learnable: dict[int, TopUpFrame] = {}  # frame id -> what a top-up needs (in memory only)
        self._context_state: dict[tuple[str, str], str] = {}  # (camera, mode) -> last state, to log changes
        self.on_event: Callable[[], None] | None = None  # told after a kept burst's event is in the outbox
        self.notifier = Notifier()
        self.settings = imaging_settings(config)
        self.store = Store(config.store.root, config.source.inbox)
        self.summary = RunSummary()
        self.low_disk = False
        self._pending: dict[int, Candidate] = {}
        self._last_arrival: dict[str, float] = {}
        self._retry_at: dict[int, tuple[float, float]] = {}  # frame id -> (when, backoff)
        self._stop = threading.Event()
        self._source: FolderSource | None = None

    # -- entry points -----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current frame and return (SIGTERM, SIGINT).

        The loop may be asleep in the source for a long while (no fixed tick), so the source is
        woken too, from a helper thread: this runs in a signal handler, where taking the source's
        lock could deadlock against the main thread it interrupted.
        """
        self._stop.set()
        self.notifier.stopping()
        source = self._source
        if source is not None:
            threading.Thread(target=source.wake, name="stop-wake", daemon=True).start()

    def wait_alive(self, seconds: float) -> None:
        """Sleep (a stop ends it early) while still feeding systemd's watchdog: waiting is not hanging."""
        deadline = time.monotonic() + seconds
        step = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.notifier.ping()
            self._stop.wait(min(left, step))

    @property
    def waiting(self) -> int:
        """Frames scored but not decided yet (their burst was still open when the loop stopped)."""
        return len(self._pending)

    def make_source(self) -> FolderSource:
        src, root = self.config.source, self.config.store.root
        exclude = tuple(root / d for d in ("kept", "audit", "quarantine", "blank"))
        return FolderSource(src.inbox, src.extensions, src.recursive, src.watch, src.poll_s, src.settle_s, exclude)

    def run(self, once: bool = False) -> RunSummary:
        if not self.dry_run:
            self.config.store.root.mkdir(parents=True, exist_ok=True)
        self.recover()
        source = self._source = self.make_source()
        source.start()
        self.notifier.ready(f"watching {self.config.source.inbox}")
        prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        backoff = LEDGER_RETRY_MIN_S
        try:
            while not self._stop.is_set():
                self.notifier.ping()  # once per pass: a loop stuck anywhere stops feeding the watchdog
                try:
                    frames = self.step(source, prefetch, once)
                except LedgerUnavailable as exc:
                    if once:
                        raise
                    # A daemon waits for space instead of exiting into a restart loop.
                    log.error("%s Retrying in %.0f s.", exc, backoff)
                    self.wait_alive(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_S)
                    continue
                backoff = LEDGER_RETRY_MIN_S
                if once and source.idle() and not frames:
                    break
        finally:
            prefetch.shutdown(wait=True, cancel_futures=True)
            source.stop()
        return self.summary

    def step(self, source: FolderSource, prefetch: Executor, once: bool) -> list[Frame]:
        """One pass of the loop: take the frames that became complete, score, decide, store."""
        self.guard_disk()
        frames, skipped = source.ready(timeout=0.0 if once else self.idle_timeout())
        self.refresh_context()
        self.note_skipped(skipped)
        todo = [frame for frame in frames if not self.skipped_before(frame)]
        try:
            for frame, loaded in prefetched(todo, self.load, prefetch):
                if self._stop.is_set():
                    break
                if not self.record(frame, loaded):
                    source.release(frame.path)
        except LedgerUnavailable:
            for frame in todo:  # offered again at the next rescan; what was recorded is skipped then
                source.release(frame.path)
            raise
        # Stopped part-way through the frames: the open bursts may still have frames in the
        # inbox, so they are left undecided ('scored'); the next start decides them whole.
        self.close_bursts(flush=once and source.idle() and not self._stop.is_set())
        self.retry_unfinished()
        return frames

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> None:
        """Finish what a crash interrupted: replay decided actions, re-pend scored frames."""
        interrupted = self.ledger.in_state("decided")
        for row in interrupted:
            log.info("resuming interrupted %s of %s", row.action, row.path)
        self.apply_all(interrupted)
        for row in self.ledger.in_state("scored"):
            if (self.config.source.inbox / row.path).exists():
                context_score = row.context_score if row.context_state == "matched" else None
                self._pend(row.id, row.path, row.sha256, row.captured_ts, row.burst_hint, row.score, context_score,
                           row.gamma)  # fmt: skip
            else:
                self.ledger.done(row.id, action="vanished", error="file left the inbox before its burst was decided")

    # -- per frame --------------------------------------------------------------------------
    def process(self, frame: Frame) -> bool:
        """Read, hash, score and record one frame. False when it must be offered again later."""
        if self.skipped_before(frame):
            return True
        return self.record(frame, self.load(frame))

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
            stat = frame.path.stat()
            data = frame.path.read_bytes()
        except OSError as exc:
            return Loaded(None, "", 0, None, None, exc)
        sha = hashlib.sha256(data).hexdigest()
        specs = [self.classifier.card.input]
        if self.context is not None and self.wants_context(frame.rel):
            specs.append(self.context.extractor.card.input)
        try:
            views, error = prepare_jpeg_views(data, specs, self.settings), None
        except ImageError as exc:
            views, error = [], str(exc)
        prepared = views[0] if views else None
        context_pixels = views[1].pixels if len(views) > 1 else None
        return Loaded(stat, sha, len(data), prepared, error, None, context_pixels)

    # -- camera context ---------------------------------------------------------------------
    def refresh_context(self) -> None:
        if self.context is None:
            return
        try:
            self._context_cameras, self._capture_pending = self.context.cameras_wanted()
        except (BankError, sqlite3.Error) as exc:
            log.error("reference bank unreadable (%s): the classifier decides alone", exc)
            self._context_cameras, self._capture_pending = frozenset(), False

    def wants_context(self, rel: str) -> bool:
        """A feature pass only for cameras with references (or a pending capture): free until then."""
        return self._capture_pending or camera_of(rel) in self._context_cameras

    def assess_context(self, frame: Frame, loaded: Loaded, captured_ts: float, score: float) -> Assessment | None:
        if self.context is None or loaded.context_pixels is None or loaded.prepared is None:
            return None
        mode, camera = lighting_mode(loaded.prepared.exposure), camera_of(frame.rel)
        try:
            facts = FrameFacts(frame.rel, loaded.sha, captured_ts, frame.burst_hint, score, self.cutoff)
            assessment = self.context.assess(camera, mode, loaded.context_pixels, facts)
        except (BlankfilterError, ValueError, RuntimeError, sqlite3.Error) as exc:
            log.error("%s: camera context failed (%s); the classifier decides", frame.rel, exc)
            return Assessment(FAILED, mode)
        self.note_context_state(camera, assessment)
        return assessment

    def note_context_state(self, camera: str, assessment: Assessment) -> None:
        """Say so once when a camera's references stop (or start again) to describe its scene."""
        key = (camera, assessment.mode)
        before = self._context_state.get(key)
        self._context_state[key] = assessment.state
        if assessment.state == before or assessment.state not in (DRIFT, INCONSISTENT, MATCHED):
            return
        if assessment.state == MATCHED:
            if before in (DRIFT, INCONSISTENT):
                log.info("camera %s (%s): the scene matches its references again", camera, assessment.mode)
            return
        why = (
            "the whole scene differs from its references (moved, re-aimed, or the season changed)"
            if assessment.state == DRIFT
            else "its references disagree with each other"
        )
        log.warning(
            "camera %s (%s): %s (median cell distance %.2f, over context.drift_limit): the classifier decides. After "
            "moving or servicing a camera: `blankfilter reference reset --camera %s`, then add new references.",
            camera, assessment.mode, why, assessment.mismatch or 0.0, camera,
        )  # fmt: skip

    def learn(self, burst: list[Candidate], key: str) -> None:
        """A discarded burst may top up its camera's references (see CameraContext.top_up)."""
        frames = [self._learnable.get(f.frame_id) for f in burst]
        if self.context is None or self.dry_run or any(f is None for f in frames):
            return
        learnable = [f for f in frames if f is not None]
        try:
            if self.context.top_up(camera_of(burst[0].path), learnable[0].assessment.mode, key, learnable, self.cutoff):
                self.summary.counts["reference_added"] += 1
        except (BlankfilterError, sqlite3.Error) as exc:
            log.error("could not add an automatic reference (%s)", exc)

    def record(self, frame: Frame, loaded: Loaded) -> bool:
        """Score a loaded frame and record it as 'scored'; its file stays untouched in the inbox."""
        if loaded.read_error is not None or loaded.stat is None:
            if isinstance(loaded.read_error, FileNotFoundError):
                log.warning("%s vanished before it could be read (moved or deleted by someone else)", frame.rel)
                return True
            why = loaded.read_error.strerror if loaded.read_error else "unknown"
            log.error("%s: cannot read (%s); left in the inbox, will retry", frame.rel, why)
            return False
        stat, sha, prepared = loaded.stat, loaded.sha, loaded.prepared
        known = self.ledger.find(frame.rel, sha)
        if known is not None:
            if known.state == "done":
                self.drop_duplicate(frame, known, stat.st_size, stat.st_mtime)
            return True
        score, error = self.score(prepared, loaded.error, frame.rel)
        captured = prepared.captured_at if prepared and prepared.captured_at else None
        captured_ts = captured.replace(tzinfo=UTC).timestamp() if captured else stat.st_mtime
        assessment = self.assess_context(frame, loaded, captured_ts, score) if score is not None else None
        context_score = assessment.score if assessment is not None and assessment.decides else None
        record = NewFrame(
            path=frame.rel,
            sha256=sha,
            size=loaded.size,
            captured_at=(captured or datetime.fromtimestamp(stat.st_mtime, UTC)).isoformat(),
            captured_ts=captured_ts,
            time_source="exif" if captured else "mtime",
            burst_hint=frame.burst_hint,
            score=score,
            gamma=prepared.gamma if prepared else None,
            exposure=asdict(prepared.exposure) if prepared else None,
            error=error,
            model=self.classifier.card.name,
            model_version=self.classifier.card.version,
            context_score=assessment.score if assessment is not None else None,
            context_state=assessment.state if assessment is not None else None,
        )
        try:
            frame_id = self.ledger.add(record)
        except sqlite3.IntegrityError:
            return True  # recorded by an earlier run between our find() and add(): already pending
        self.summary.counts["scored" if error is None else "failed"] += 1
        if assessment is not None:
            self.summary.counts[f"context_{assessment.state}"] += 1
            if assessment.decides:
                self._learnable[frame_id] = TopUpFrame(frame.rel, sha, captured_ts, score, assessment)
        self._pend(frame_id, frame.rel, sha, record.captured_ts, frame.burst_hint, score, context_score, record.gamma)
        return True

    def drop_duplicate(self, frame: Frame, known: FrameRow, size: int, mtime: float) -> None:
        """The same bytes at the same path again (a card copied twice): never processed twice.

        The copy is removed when the original's outcome still stands (it was deleted as blank, or a
        byte-identical copy sits in the store); otherwise it is left in place and not looked at again.
        """
        stored = self.store.root / known.dest if known.dest else None
        if known.action == "deleted" or (stored and stored.is_file() and sha256_file(stored) == known.sha256):
            if not self.dry_run:
                self.store.delete(frame.rel)
            where = f"identical copy in {known.dest}" if known.dest else "deleted as blank"
            log.info("%s was already processed (%s): removed this second copy", frame.rel, where)
            self.summary.counts["duplicate"] += 1
            return
        reason = f"already processed ({known.action}), and its stored copy is gone: left in place"
        log.warning("%s %s", frame.rel, reason)
        if not self.dry_run:
            self.ledger.skip(frame.rel, size, mtime, reason)

    def score(self, prepared: Prepared | None, decode_error: str | None, rel: str) -> tuple[float | None, str | None]:
        if prepared is None:
            log.warning("%s: %s; kept (fail open)", rel, decode_error)
            return None, decode_error
        try:
            return self.classifier.score(prepared.pixels), None
        except Exception as exc:
            log.error("%s: scoring failed (%s); kept (fail open)", rel, exc)
            return None, f"scoring failed: {exc}"

    def _pend(
        self,
        frame_id: int,
        rel: str,
        sha: str,
        ts: float,
        hint: str | None,
        score: float | None,
        context_score: float | None = None,
        gamma: float | None = None,
    ) -> None:
        self._pending[frame_id] = Candidate(frame_id, rel, sha, ts, hint, score, context_score, gamma)
        self._last_arrival[camera_of(rel)] = time.monotonic()

    def note_skipped(self, skipped: list[Skipped]) -> None:
        for item in skipped:
            st = item.path.stat() if item.path.exists() else None
            size, mtime = (st.st_size, st.st_mtime) if st else (0, 0.0)
            if not self.ledger.was_skipped(item.rel, size, mtime):
                log.info("%s skipped: %s (left in place)", item.rel, item.reason)
                self.ledger.skip(item.rel, size, mtime, item.reason)
                self.summary.counts["skipped"] += 1

    # -- per burst --------------------------------------------------------------------------
    def close_bursts(self, flush: bool) -> None:
        """Decide every burst that can no longer grow: all of them when flushing."""
        bursts = group_bursts(list(self._pending.values()), self.config.decision.burst_gap_s)
        last_of_camera = {camera_of(b[-1].path): id(b) for b in bursts}
        quiet_s = max(self.config.decision.burst_gap_s, self.config.source.settle_s)
        now = time.monotonic()
        for burst in bursts:
            camera = camera_of(burst[-1].path)
            still_open = last_of_camera[camera] == id(burst) and now - self._last_arrival.get(camera, 0) < quiet_s
            if still_open and not flush:
                continue
            self.decide(burst)

    def idle_timeout(self) -> float:
        """How long the loop may sleep: until an open burst could close or a retry is due.

        A trap runs for months on a battery: no busy polling, no fixed 1 s tick.
        """
        quiet_s = max(self.config.decision.burst_gap_s, self.config.source.settle_s)
        now = time.monotonic()
        open_cameras = {camera_of(c.path) for c in self._pending.values()}
        deadlines = [self._last_arrival.get(camera, now) + quiet_s for camera in open_cameras]
        deadlines += [when for when, _ in self._retry_at.values()]
        deadlines.append(now + 60.0)  # the disk guard and quarantine caps still get checked
        if self.notifier.watchdog_s is not None:  # systemd's watchdog must hear from the loop in time
            deadlines.append(now + self.notifier.watchdog_s / 2)
        return max(0.05, min(deadlines) - now)

    def decide(self, burst: list[Candidate]) -> None:
        blank = burst_is_blank(burst, self.cutoffs)
        key = burst_id(burst)
        if not blank:
            actions = ["failed_kept" if f.score is None else "kept" for f in burst]
        elif audit_pick(key, self.config.store.audit_rate) and not self.low_disk:
            actions = ["audit"] * len(burst)
        else:
            actions = [self.discard_action()] * len(burst)
        decisions = []
        for frame, action in zip(burst, actions, strict=True):
            dest = self.store.destination(action, frame.path, frame.sha256)
            decisions.append(
                Decision(
                    frame.frame_id,
                    key,
                    frame_decision(frame.score, self.cutoffs, frame.context_score),
                    action,
                    dest,
                    self.cutoff,
                )
            )
        events = [] if blank else [self.event_for(burst, key, decisions)]
        self.ledger.decide(decisions, events)
        if events and self.on_event is not None:
            self.on_event()
        for frame in burst:
            del self._pending[frame.frame_id]
        rows = [self.ledger.find_by_id(frame.frame_id) for frame in burst]
        self.apply_all([row for row in rows if row is not None])
        if blank:
            self.learn(burst, key)
        for frame in burst:
            self._learnable.pop(frame.frame_id, None)

    def event_for(self, burst: list[Candidate], key: str, decisions: list[Decision]) -> OutboxEvent:
        """The kept burst's MQTT event, for the outbox (the same transaction as its decision)."""
        m = self.config.mqtt
        frames = [
            EventFrame(d.dest or f.path, f.sha256, f.captured_ts, f.score, f.gamma, f.context_score)
            for f, d in zip(burst, decisions, strict=True)
        ]
        best = max(burst, key=lambda f: -1.0 if f.score is None else f.score)
        thumbnail = make_thumbnail(self.config.source.inbox / best.path, m.thumbnail_px, int(m.thumbnail_max_kb * 1024))
        model = (self.classifier.card.name, self.classifier.card.version)
        event = build_event(self.config.trap.id, key, frames, self.cutoff, model, thumbnail)
        return OutboxEvent(event["event_id"], dumps(event))

    def set_cutoff(self, cutoff: float) -> None:
        """A new classifier cutoff while running (the remote cutoff): bursts decided from now on use it."""
        self.cutoff = cutoff
        self.cutoffs = Cutoffs(cutoff, self.cutoffs.context)

    def discard_action(self) -> str:
        mode = self.config.store.discard
        if self.low_disk and mode != "delete":
            return "deleted"  # the free-space floor wins: a full card would stop the animals too
        return {"delete": "deleted", "quarantine": "quarantined", "keep": "blank_kept"}[mode]

    # -- file operations --------------------------------------------------------------------
    def apply(self, row: FrameRow) -> None:
        self.apply_all([row])

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
            self.summary.counts[row.action or "?"] += 1
            log.debug("%s: %s (score %s)", row.path, row.action, _fmt(row.score))

    def _file_operation(self, row: FrameRow) -> bool:
        """Move or delete one decided frame. True when it is done and only needs marking."""
        if self.dry_run:
            log.info("dry run: %s %s (score %s)", row.action, row.path, _fmt(row.score))
            return True
        try:
            if row.action == "deleted":
                self.store.delete(row.path)
            elif row.dest:
                self.store.move(row.path, row.dest, row.sha256)
        except FrameVanished as exc:
            log.warning("%s", exc)
            self.ledger.done(row.id, action="vanished", error=str(exc))
            self.summary.counts["vanished"] += 1
            return False
        except OSError as exc:
            self._failed(row, exc)
            return False
        return True

    def _failed(self, row: FrameRow, exc: OSError) -> None:
        where = exc.filename or self.config.store.root
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
        log.error("%s: %s; retry in %.0f s", row.path, message, backoff)

    def retry_unfinished(self) -> None:
        now = time.monotonic()
        for frame_id, (when, _) in list(self._retry_at.items()):
            if when <= now:
                row = self.ledger.find_by_id(frame_id)
                if row is not None and row.state == "decided":
                    self.apply(row)
                else:
                    self._retry_at.pop(frame_id, None)

    def guard_disk(self) -> None:
        """Keep store.min_free_mb free: prune quarantine first, then stop keeping blanks."""
        if self.dry_run:
            return
        st = self.config.store
        self.store.prune_quarantine(self.ledger, st.quarantine_max_mb, st.quarantine_max_days, st.min_free_mb)
        free = self.store.free_mb()
        low = free < st.min_free_mb
        if low and not self.low_disk:
            log.warning(
                "disk nearly full: %.0f MB free under store.min_free_mb = %.0f: blanks are deleted, "
                "not quarantined, kept or audited, until space returns",
                free,
                st.min_free_mb,
            )
        elif self.low_disk and not low:
            log.info("disk space back to %.0f MB free: store.discard = %s again", free, st.discard)
        self.low_disk = low


def _fmt(score: float | None) -> str:
    return "failed" if score is None else f"{score:.3f}"


def check_layout(config: Config) -> None:
    """The inbox must not contain the store's folders: kept frames would be picked up again."""
    inbox, root = config.source.inbox.resolve(), config.store.root.resolve()
    if root.is_relative_to(inbox) and root != inbox:
        raise BlankfilterError(f"store.root {root} is inside source.inbox {inbox}: put them side by side")
    if inbox == root:
        raise BlankfilterError(f"source.inbox and store.root are the same folder ({inbox}): use {root}/inbox")
