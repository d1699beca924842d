"""The trap's loop for camera sources: trigger -> burst of arrays -> score -> decide -> write what is kept.

Unlike the folder pipeline, nothing is on disk before the decision: the frames are scored from
memory, so blanks are never written (store.discard = "delete"). Kept frames (and the audit sample)
are encoded and written first (temporary file, fsync, rename), then the burst's frames, decision
and event are recorded in one ledger transaction. A crash in between leaves a written frame that is
not yet in the ledger, never a recorded frame that was not written. A power cut during capture
loses that burst (it only ever existed in memory).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from firmware_app.classifiers import Classifier
from firmware_app.config import Config
from firmware_app.context import FAILED, Assessment, CameraContext, FrameFacts, TopUpFrame, lighting_mode
from firmware_app.decision import Candidate, Cutoffs, audit_pick, burst_is_blank, frame_decision
from firmware_app.errors import BlankfilterError, ImageError
from firmware_app.events.payloads import EventFrame, build_event, dumps
from firmware_app.events.thumbnail import thumbnail_of
from firmware_app.imaging import Prepared, prepare_array
from firmware_app.ledger import Decision, Ledger, NewFrame, OutboxEvent
from firmware_app.pipeline import imaging_settings
from firmware_app.sdnotify import Notifier
from firmware_app.sources.camera import Camera, CapturedFrame, capture_burst
from firmware_app.store import FOLDERS, fsync_dir

log = logging.getLogger(__name__)

LORES_PERIOD_S = 0.2  # motion detection looks at 5 lores frames a second


class Trigger(Protocol):
    def wait(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


class Motion(Protocol):
    def update(self, grey: np.ndarray, now: float) -> bool: ...

    def reset(self) -> None: ...


@dataclass
class Scored:
    frame: CapturedFrame
    prepared: Prepared | None
    score: float | None
    error: str | None
    assessment: Assessment | None = None


@dataclass
class CaptureSummary:
    bursts: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def line(self) -> str:
        parts = [f"{k} {v}" for k, v in sorted(self.counts.items())]
        return f"{self.bursts} burst(s): " + (", ".join(parts) if parts else "nothing")


class CaptureLoop:
    def __init__(
        self,
        config: Config,
        classifier: Classifier,
        ledger: Ledger,
        camera: Camera,
        pir: Trigger | None = None,
        motion: Motion | None = None,
        context: CameraContext | None = None,
    ) -> None:
        self.config, self.classifier, self.ledger, self.camera = config, classifier, ledger, camera
        self.pir, self.motion, self.context = pir, motion, context
        self.cutoff = config.model.cutoff if config.model.cutoff is not None else classifier.card.cutoff
        self.cutoffs = Cutoffs(self.cutoff, context.settings.cutoff if context else 0.5)
        self.settings = imaging_settings(config)
        self.notifier = Notifier()
        self.summary = CaptureSummary()
        self.on_event: object = None
        self._stop = threading.Event()
        self._last_burst = -1e9

    def stop(self) -> None:
        """SIGTERM: finish the current burst, then return."""
        self._stop.set()
        self.notifier.stopping()

    def set_cutoff(self, cutoff: float) -> None:
        self.cutoff = cutoff
        self.cutoffs = Cutoffs(cutoff, self.cutoffs.context)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, max_bursts: int | None = None) -> CaptureSummary:
        self.camera.start()
        self.notifier.ready(f"camera {self.camera.name}: waiting for a trigger")
        try:
            while not self._stop.is_set():
                self.notifier.ping()
                if not self.triggered():
                    continue
                frames = capture_burst(
                    self.camera, self.config.camera.burst_frames, self.config.camera.burst_interval_s
                )
                self._last_burst = time.monotonic()
                self.handle(frames)
                if self.motion is not None:
                    # Learn the background again: the trigger may have been a light change (the IR lamp
                    # switching on changes half the view), and an animal may have moved things.
                    self.motion.reset()
                if max_bursts is not None and self.summary.bursts >= max_bursts:
                    break
        finally:
            self.camera.stop()
            if self.pir is not None:
                self.pir.close()
        return self.summary

    def triggered(self) -> bool:
        """Wait a little for a trigger (never longer than the watchdog allows); honour the cool-down."""
        step = min(1.0, self.notifier.watchdog_s / 2) if self.notifier.watchdog_s else 1.0
        cooling = self._last_burst + self.config.camera.cooldown_s - time.monotonic()
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

    # -- one burst --------------------------------------------------------------------------
    def handle(self, frames: list[CapturedFrame]) -> None:
        scored = [self.score(frame) for frame in frames]
        candidates = [
            Candidate(i, f"{self.camera.name}/{i}", "", s.frame.captured_at.timestamp(), None, s.score,
                      s.assessment.score if s.assessment and s.assessment.decides else None,
                      s.prepared.gamma if s.prepared else None)
            for i, s in enumerate(scored)
        ]  # fmt: skip
        blank = burst_is_blank(candidates, self.cutoffs)
        key = f"{self.camera.name}-{frames[0].captured_at.strftime('%Y%m%dT%H%M%S%f')}"
        action = self.action(blank, key)
        rows, decisions, event_frames = [], [], []
        for s, candidate in zip(scored, candidates, strict=True):
            name = f"{key}_{s.frame.index + 1}.jpg"
            dest, sha = self.write(action, name, s.frame) if FOLDERS.get(action) else (None, s.frame.pixel_sha256)
            rows.append(self.new_frame(name, sha, s))
            decisions.append((dest, frame_decision(candidate.score, self.cutoffs, candidate.context_score)))
            event_frames.append(EventFrame(dest or name, sha, candidate.captured_ts, s.score, candidate.gamma,
                                           candidate.context_score))  # fmt: skip
        events = [] if blank else [self.event(key, event_frames, scored)]
        self.ledger.record_captured(rows, [Decision(0, key, d, action, dest, self.cutoff) for dest, d in decisions],
                                    events)  # fmt: skip
        if events and callable(self.on_event):
            self.on_event()
        if blank:
            self.learn(key, scored)
        self.summary.bursts += 1
        self.summary.add(action, len(frames))
        log.info("burst %s: %s (max score %s)", key, action, _max(scored))

    def score(self, frame: CapturedFrame) -> Scored:
        try:
            prepared = prepare_array(frame.rgb, self.classifier.card.input, self.settings)
        except ImageError as exc:
            return Scored(frame, None, None, str(exc))
        try:
            score = self.classifier.score(prepared.pixels)
        except Exception as exc:  # fail open: an unscored frame keeps its burst
            log.error("camera %s: scoring failed (%s); the burst is kept", self.camera.name, exc)
            return Scored(frame, prepared, None, f"scoring failed: {exc}")
        result = Scored(frame, prepared, score, None)
        result.assessment = self.assess(frame, prepared, score)
        return result

    def assess(self, frame: CapturedFrame, prepared: Prepared, score: float) -> Assessment | None:
        if self.context is None:
            return None
        mode = lighting_mode(prepared.exposure)
        try:
            if not (self.context.bank.has_camera(self.camera.name) or self.context.bank.captures()):
                return None  # no references: no feature pass
            pixels = prepare_array(frame.rgb, self.context.extractor.card.input, self.settings).pixels
            facts = FrameFacts(f"{self.camera.name}/{frame.index}", frame.pixel_sha256,
                               frame.captured_at.timestamp(), None, score, self.cutoff)  # fmt: skip
            return self.context.assess(self.camera.name, mode, pixels, facts)
        except (BlankfilterError, ValueError, RuntimeError) as exc:
            log.error("camera %s: camera context failed (%s); the classifier decides", self.camera.name, exc)
            return Assessment(FAILED, mode)

    def action(self, blank: bool, key: str) -> str:
        if not blank:
            return "kept"
        if audit_pick(key, self.config.store.audit_rate):
            return "audit"
        return {"delete": "not_written", "quarantine": "quarantined", "keep": "blank_kept"}[self.config.store.discard]

    # -- writing ----------------------------------------------------------------------------
    def write(self, action: str, name: str, frame: CapturedFrame) -> tuple[str, str]:
        """Encode and write one frame atomically; (path relative to store.root, sha256 of the file)."""
        data = encode_jpeg(frame, self.config.camera.jpeg_quality)
        rel = f"{FOLDERS[action]}/{self.camera.name}/{name}"
        target = self.config.store.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return rel, _sha(data)

    def new_frame(self, name: str, sha: str, s: Scored) -> NewFrame:
        card = self.classifier.card
        return NewFrame(
            path=f"{self.camera.name}/{name}", sha256=sha, size=int(s.frame.rgb.nbytes),
            captured_at=s.frame.captured_at.isoformat(), captured_ts=s.frame.captured_at.timestamp(),
            time_source="source", burst_hint=None, score=s.score, gamma=s.prepared.gamma if s.prepared else None,
            exposure=None, error=s.error, model=card.name, model_version=card.version,
            context_score=s.assessment.score if s.assessment else None,
            context_state=s.assessment.state if s.assessment else None,
        )  # fmt: skip

    def event(self, key: str, frames: list[EventFrame], scored: list[Scored]) -> OutboxEvent:
        m = self.config.mqtt
        best = max(scored, key=lambda s: -1.0 if s.score is None else s.score)
        thumbnail = thumbnail_of(Image.fromarray(best.frame.rgb), m.thumbnail_px, int(m.thumbnail_max_kb * 1024))
        card = self.classifier.card
        payload = build_event(self.config.trap.id, key, frames, self.cutoff, (card.name, card.version), thumbnail)
        return OutboxEvent(payload["event_id"], dumps(payload))

    def learn(self, key: str, scored: list[Scored]) -> None:
        if self.context is None or any(s.assessment is None or not s.assessment.decides for s in scored):
            return
        frames = [TopUpFrame(f"{self.camera.name}/{key}_{s.frame.index + 1}", s.frame.pixel_sha256,
                             s.frame.captured_at.timestamp(), s.score, s.assessment)  # type: ignore[arg-type]
                  for s in scored]  # fmt: skip
        try:
            self.context.top_up(self.camera.name, frames[0].assessment.mode, key, frames, self.cutoff)
        except BlankfilterError as exc:
            log.error("could not add an automatic reference (%s)", exc)


def encode_jpeg(frame: CapturedFrame, quality: int) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(frame.rgb, "RGB")
    exif = Image.Exif()
    exif[0x0132] = frame.captured_at.strftime("%Y:%m:%d %H:%M:%S")  # DateTime (UTC: the trap's clock)
    image.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _max(scored: list[Scored]) -> str:
    values = [s.score for s in scored if s.score is not None]
    return f"{max(values):.3f}" if values else "none (unscored: kept)"


# -- building it from the config ------------------------------------------------------------------
def make_camera(config: Config) -> Camera:
    if config.source.kind == "picamera2":
        from firmware_app.sources.picamera2_camera import Picamera2Camera

        return Picamera2Camera(config.camera)
    from firmware_app.sources.opencv_camera import OpenCVCamera

    return OpenCVCamera(config.camera)


def make_triggers(config: Config) -> tuple[Trigger | None, Motion | None]:
    """camera.trigger: the PIR on its pin, motion on the lores stream, or both."""
    c = config.camera
    pir = motion = None
    if c.trigger in ("pir", "both"):
        from firmware_app.triggers.pir import PirTrigger

        pir = PirTrigger(c.pir_pin, debounce_s=c.pir_debounce_s)
    if c.trigger in ("motion", "both"):
        from firmware_app.triggers.motion import MotionDetector, load_mask

        width, height = c.lores_size
        mask = load_mask(c.motion_mask, (height, width)) if c.motion_mask else None
        motion = MotionDetector(threshold=c.motion_threshold, min_area=c.motion_min_area,
                                warmup_frames=c.motion_warmup_frames, cooldown_s=0.0, mask=mask)  # fmt: skip
    return pir, motion
