"""The camera loop: trigger -> burst of arrays -> judge -> write what is kept -> ledger.

Unlike the folder loop, nothing is on disk before the decision: the frames are judged from memory,
so blanks are never written (store.discard = "delete"). Order of durability:
1. the kept frames (and the audit sample, quarantine, blank/) are encoded and written first, each
   atomically and never overwriting (`Store.write_new`);
2. then the burst's frames, decision and event are recorded in one ledger transaction.
A crash in between leaves a written frame that is not yet in the ledger, never a recorded frame
that was not written. A power cut during capture loses that burst (it only ever existed in memory).
When the ledger cannot be written, the burst is held in memory and recorded when it can be; no new
burst is taken meanwhile (its frames could not be recorded either).
"""

from __future__ import annotations

import io
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from firmware_app.actions import FOLDERS, Action
from firmware_app.config import CameraSection
from firmware_app.context import FrameFacts
from firmware_app.decision import Candidate
from firmware_app.errors import BlankfilterError
from firmware_app.events.payloads import AuditFrame, EventFrame
from firmware_app.judge import Judge, Seen, top_up_frame
from firmware_app.ledger import Decision, Ledger, NewFrame, OutboxEvent
from firmware_app.loops.base import LoopBase, RunSummary
from firmware_app.retention import DiskGuard
from firmware_app.sources.camera import Camera, CapturedFrame, capture_burst
from firmware_app.store import Store
from firmware_app.triggers import Motion, Trigger

log = logging.getLogger(__name__)

LORES_PERIOD_S = 0.2  # motion detection looks at 5 lores frames a second
GUARD_EVERY_S = 60.0  # quarantine caps and the free-space floor are checked this often while idle


@dataclass(frozen=True)
class Recorded:
    """A decided burst, its files written, waiting to go into the ledger in one transaction."""

    key: str
    rows: list[NewFrame]
    decisions: list[Decision]
    events: list[OutboxEvent]
    action: Action


class CameraLoop(LoopBase):
    def __init__(
        self,
        judge: Judge,
        ledger: Ledger,
        store: Store,
        camera: Camera,
        guard: DiskGuard,
        settings: CameraSection,
        pir: Trigger | None = None,
        motion: Motion | None = None,
        max_bursts: int | None = None,
    ) -> None:
        super().__init__()
        self.judge, self.ledger, self.store, self.camera, self.guard = judge, ledger, store, camera, guard
        self.settings, self.pir, self.motion, self.max_bursts = settings, pir, motion, max_bursts
        self._last_burst = -1e9
        self._next_guard = 0.0
        self._held: Recorded | None = None  # decided and written, not yet in the ledger
        self._last_reference = time.monotonic()  # the quiet-time reference clock starts with the loop

    @property
    def waiting(self) -> int:
        return len(self._held.rows) if self._held is not None else 0

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        self.store.clean_partials()
        self.camera.start()
        self.notifier.ready(f"camera {self.camera.name}: waiting for a trigger")
        try:
            self.repeat(self.step, once=False)
        finally:
            self.camera.stop()
            if self.pir is not None:
                self.pir.close()
        return self.summary

    def step(self) -> bool:
        """Record a held burst first; else wait a little for a trigger and handle its burst.
        True once `--bursts N` bursts were handled."""
        if self._held is not None:
            self.record(self._held)  # LedgerUnavailable: the base loop backs off, then we are back here
        now = time.monotonic()
        if now >= self._next_guard:
            self.guard.check()
            self._next_guard = now + GUARD_EVERY_S
        if not self.triggered():
            self.quiet_reference()
            return False
        frames = capture_burst(self.camera, self.settings.burst_frames, self.settings.burst_interval_s)
        self._last_burst = time.monotonic()
        self.handle(frames, self.guard.check())
        self._next_guard = time.monotonic() + GUARD_EVERY_S
        if self.motion is not None:
            # Learn the background again: the trigger may have been a light change (the IR lamp
            # switching on changes half the view), and an animal may have moved things.
            self.motion.reset()
        return self.max_bursts is not None and self.summary.bursts >= self.max_bursts

    def triggered(self) -> bool:
        """Wait a little for a trigger (never longer than the watchdog allows); honour the cool-down."""
        step = min(1.0, self.notifier.watchdog_s / 2) if self.notifier.watchdog_s else 1.0
        cooling = self._last_burst + self.settings.cooldown_s - time.monotonic()
        if cooling > 0:
            self._stop.wait(min(cooling, step))
            return False
        if self.motion is not None:
            grey = self.camera.lores()
            if self.motion.update(grey, time.monotonic()):
                log.info("motion on camera %s", self.camera.name)
                return True
            if self.pir is None:
                self._stop.wait(LORES_PERIOD_S)
                return False
        if self.pir is not None and self.pir.wait(LORES_PERIOD_S if self.motion is not None else step):
            log.info("PIR on camera %s", self.camera.name)
            return True
        return False

    def quiet_reference(self) -> None:
        """After context.quiet_reference_s without a trigger (and never soon after one), one frame
        becomes a reference if the judge finds it empty: the trap covers the day's light itself."""
        context = self.judge.context
        every, after = self.judge.config.context.quiet_reference_s, self.judge.config.context.quiet_after_trigger_s
        now = time.monotonic()
        if context is None or every <= 0 or now - self._last_reference < every or now - self._last_burst < after:
            return
        self._last_reference = now
        try:  # a reference is a nicety: nothing about it may stop the trap
            frame = CapturedFrame(self.camera.capture(), datetime.now(UTC), 0)
            source = f"{self.camera.name}/quiet-{frame.captured_at.strftime('%Y%m%dT%H%M%S')}"
            outcome = self.judge.quiet_reference(self.camera.name, frame.rgb, source, frame.pixel_sha256,
                                                 frame.captured_at.timestamp())  # fmt: skip
        except (BlankfilterError, OSError, ValueError, RuntimeError, sqlite3.Error) as exc:
            outcome = f"failed ({exc})"
        self.summary.counts["quiet_reference" if outcome.startswith("taken") else "quiet_reference_refused"] += 1
        log.info("camera %s: quiet-time frame %s", self.camera.name, outcome)

    # -- one burst --------------------------------------------------------------------------
    def handle(self, frames: list[CapturedFrame], low_disk: bool) -> None:
        name = self.camera.name
        key = f"{name}-{frames[0].captured_at.strftime('%Y%m%dT%H%M%S%f')}"
        self.judge.refresh()  # once a burst: which cameras have references
        seen = [self.see(frame, key) for frame in frames]
        candidates = [
            Candidate(f.index, self.rel(key, f), "", f.captured_at.timestamp(), None, s.score, s.context_score,
                      s.prepared.gamma if s.prepared else None, s.context_state)
            for f, s in zip(frames, seen, strict=True)
        ]  # fmt: skip
        verdict = self.judge.decide(candidates, low_disk, on_disk=False, key=key)
        rows, decisions, event_frames = [], [], []
        for frame, s, v, action in zip(frames, seen, verdict.verdicts, verdict.actions, strict=True):
            dest, sha, error = self.write(action, key, frame)
            rows.append(self.new_frame(key, frame, s, sha, error))
            decisions.append(Decision(0, key, v, action, dest, self.judge.cutoff_for(self.camera.name)))
            event_frames.append(EventFrame(dest or self.rel(key, frame), sha, frame.captured_at.timestamp(), s.score,
                                           s.prepared.gamma if s.prepared else None, s.context_score))  # fmt: skip
        best = self.best(frames, seen)
        events = [] if verdict.blank else [self.judge.event(key, event_frames, best, self.camera.name)]
        if verdict.blank and Action.AUDIT in verdict.actions:  # the audit sample: to be reviewed
            events.append(self.audit(key, frames, seen, decisions))
        self.summary.bursts += 1
        self.summary.counts.update(str(a) for a in verdict.actions)
        log.info("burst %s: %s (max score %s)", key, verdict.actions[0], _max(seen))
        self._held = Recorded(key, rows, decisions, events, verdict.actions[0])
        self.record(self._held)
        if verdict.blank:
            learnable = [top_up_frame(self.rel(key, f), f.pixel_sha256, f.captured_at.timestamp(), s)
                         for f, s in zip(frames, seen, strict=True)]  # fmt: skip
            if self.judge.learn(name, key, learnable):
                self.summary.counts["reference_added"] += 1

    def record(self, held: Recorded) -> None:
        self.ledger.record_captured(held.rows, held.decisions, held.events)
        self._held = None
        if held.events and self.on_event is not None:
            self.on_event()
        if self.on_decided is not None:
            self.on_decided()

    def see(self, frame: CapturedFrame, key: str) -> Seen:
        views = self.judge.prepare_array(frame.rgb, self.camera.name)
        facts = FrameFacts(self.rel(key, frame), frame.pixel_sha256, frame.captured_at.timestamp(), None, None,
                           self.judge.cutoff)  # fmt: skip
        return self.judge.see(views, self.camera.name, facts)

    def audit(self, key: str, frames: list[CapturedFrame], seen: list[Seen], decisions: list[Decision]) -> OutboxEvent:
        """An audited burst's `audit` message (its frames are written to audit/ first, as kept ones are)."""
        audit_frames = [
            AuditFrame(d.dest or self.rel(key, f), s.score, s.context_score, s.context_state, d.action,
                       f.captured_at.timestamp())
            for f, s, d in zip(frames, seen, decisions, strict=True)
        ]  # fmt: skip
        return self.judge.audit(key, self.camera.name, audit_frames, self.best(frames, seen))

    def rel(self, key: str, frame: CapturedFrame) -> str:
        """The frame's name under its folder: <camera>/<burst key>_<n>.jpg."""
        return f"{self.camera.name}/{key}_{frame.index + 1}.jpg"

    def write(self, action: Action, key: str, frame: CapturedFrame) -> tuple[str | None, str, str | None]:
        """(dest, sha256, error): a frame whose action keeps a file is encoded and written; the sha is
        of the file's bytes, or of the pixels for a frame never written."""
        if action not in FOLDERS:
            return None, frame.pixel_sha256, None
        data = encode_jpeg(frame, self.settings.jpeg_quality)
        try:
            dest, sha = self.store.write_new(action, self.rel(key, frame), data)
        except OSError as exc:  # a full or read-only card: the frame only existed in memory
            where = exc.filename or self.store.root
            message = f"could not write {action} frame ({exc.strerror or exc}: {where}); it is lost"
            log.error("%s: %s", self.rel(key, frame), message)
            self.summary.failures.append(f"{self.rel(key, frame)}: {message}")
            return None, frame.pixel_sha256, message
        return dest, sha, None

    def new_frame(self, key: str, frame: CapturedFrame, s: Seen, sha: str, store_error: str | None) -> NewFrame:
        card = self.judge.classifier.card
        error = "; ".join(e for e in (s.error, store_error) if e) or None
        return NewFrame(
            path=self.rel(key, frame), sha256=sha, size=int(frame.rgb.nbytes),
            captured_at=frame.captured_at.isoformat(), captured_ts=frame.captured_at.timestamp(),
            time_source="source", burst_hint=None, score=s.score, gamma=s.prepared.gamma if s.prepared else None,
            exposure=None, error=error, model=card.name, model_version=card.version,
            context_score=s.assessment.score if s.assessment else None, context_state=s.context_state,
        )  # fmt: skip

    @staticmethod
    def best(frames: list[CapturedFrame], seen: list[Seen]) -> np.ndarray:
        scores = [-1.0 if s.score is None else s.score for s in seen]
        return frames[scores.index(max(scores))].rgb


def encode_jpeg(frame: CapturedFrame, quality: int) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(frame.rgb, "RGB")
    exif = Image.Exif()
    exif[0x0132] = frame.captured_at.strftime("%Y:%m:%d %H:%M:%S")  # DateTime (UTC: the trap's clock)
    image.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def _max(seen: list[Seen]) -> str:
    values = [s.score for s in seen if s.score is not None]
    return f"{max(values):.3f}" if values else "none (unscored: kept)"
