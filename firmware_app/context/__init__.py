"""Camera context: each trap learns its own empty scene.

A camera trap looks at the same scene all season. A frame that matches this camera's known-empty
frames (its references, per lighting mode) is blank; an animal is a local change. The pieces:

- `extractor`: the int8 TFLite feature model (its own card, kind "features");
- `score`: the per-cell comparison, the camera's baseline and the drift measure (pure numpy);
- `bank`: the references per camera and mode, in SQLite beside the ledger;
- `CameraContext` (here): what the pipeline calls per frame and per decided burst.

The classifier still scores every frame: it decides alone when the camera has no references for
this lighting mode, when the scene drifted away from them, and always keeps a frame it is sure of.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from firmware_app.actions import ContextState
from firmware_app.context.bank import ReferenceBank
from firmware_app.context.extractor import FeatureExtractor
from firmware_app.context.score import compare
from firmware_app.imaging import Exposure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContextSettings:
    cutoff: float  # context score at or over which a frame is kept
    veto: float  # classifier p at or over which the classifier decides, where it calls the references blank
    drift_limit: float  # median cell distance over which the references no longer describe the scene
    topup_spacing_s: float  # at most one automatic reference per camera and mode in this time


@dataclass(frozen=True)
class Assessment:
    state: ContextState
    mode: str = ""  # day | ir
    score: float | None = None  # context score (when compared)
    mismatch: float | None = None  # median cell distance (drift measure)
    references: int = 0
    features: np.ndarray | None = None  # kept in memory for the top-up, never in the ledger

    @property
    def decides(self) -> bool:
        return self.state == ContextState.MATCHED


def lighting_mode(exposure: Exposure) -> str:
    """Day colour or night IR: references from the other mode would make every frame look changed."""
    return "ir" if exposure.greyscale else "day"


@dataclass(frozen=True)
class FrameFacts:
    """What the pipeline knows of a frame when its context is assessed."""

    source: str  # path in the inbox
    sha256: str
    captured_ts: float
    burst: str | None  # the source's burst id, when it gives one: never compared with its own burst
    score: float | None  # the classifier's p(non-blank)
    classifier_cutoff: float


@dataclass(frozen=True)
class TopUpFrame:
    source: str
    sha256: str
    captured_ts: float
    score: float | None  # classifier
    assessment: Assessment


class CameraContext:
    def __init__(self, extractor: FeatureExtractor, bank: ReferenceBank, settings: ContextSettings) -> None:
        self.extractor, self.bank, self.settings = extractor, bank, settings

    @property
    def label(self) -> str:
        return self.extractor.card.label

    def cameras_wanted(self) -> tuple[frozenset[str], bool]:
        """Cameras with references, and whether a capture is pending: the frames worth a feature pass.
        Read on the main thread; the prefetch thread only looks at the snapshot."""
        rows = self.bank.db.execute("SELECT DISTINCT camera FROM refs WHERE extractor = ?", (self.bank.extractor,))
        return frozenset(r[0] for r in rows), bool(self.bank.captures())

    def assess(self, camera: str, mode: str, pixels: np.ndarray, frame: FrameFacts) -> Assessment:
        features = self.extractor.features(pixels)
        source, burst = frame.source, frame.burst
        if self.bank.take_capture(camera):
            self.bank.add(camera, mode, features, origin="capture", source=source, sha256=frame.sha256, burst=burst,
                          captured_ts=frame.captured_ts, score=frame.score)  # fmt: skip
            log.info("%s: taken as a %s reference of camera %s (capture step)", source, mode, camera)
            return Assessment(ContextState.CAPTURED, mode)
        view = self.bank.view(camera, mode)
        view = view.excluding_burst(burst) if view is not None else None
        if view is None or not view.ids:
            return Assessment(ContextState.NO_REFERENCES, mode)
        if view.baseline.spread > self.settings.drift_limit:
            return Assessment(ContextState.INCONSISTENT, mode, mismatch=view.baseline.spread, references=len(view.ids))
        result = compare(features, view.features, view.baseline)
        state = ContextState.DRIFT if result.mismatch > self.settings.drift_limit else ContextState.MATCHED
        # The veto guards an animal that looks like background to the features (a small rodent at
        # night), but only where the classifier has shown it knows this scene's empty frames.
        sure = frame.score is not None and frame.score >= self.settings.veto
        if state == ContextState.MATCHED and sure and view.classifier_agrees(frame.classifier_cutoff):
            state = ContextState.VETOED
        return Assessment(state, mode, result.score, result.mismatch, len(view.ids), features)

    def is_context_blank(self, assessment: Assessment) -> bool:
        return assessment.decides and assessment.score is not None and assessment.score < self.settings.cutoff

    def top_up(self, camera: str, mode: str, burst: str, frames: list[TopUpFrame], classifier_cutoff: float) -> bool:
        """Learn from a discarded burst: one of its frames becomes an `auto` reference when every frame
        was blank to both the context score and the classifier, and the camera's last automatic
        reference is older than the spacing (so the bank follows the light through the day instead of
        filling with one burst's near-copies). A kept burst never gets here: an animal must never
        become background."""
        if not frames or not all(
            self.is_context_blank(f.assessment) and f.score is not None and f.score < classifier_cutoff for f in frames
        ):
            return False
        middle = frames[len(frames) // 2]
        last = self.bank.last_auto_ts(camera, mode)
        if last is not None and abs(middle.captured_ts - last) < self.settings.topup_spacing_s:
            return False
        assert middle.assessment.features is not None
        added = self.bank.add(camera, mode, middle.assessment.features, origin="auto", source=middle.source,
                              sha256=middle.sha256, burst=burst, captured_ts=middle.captured_ts,
                              score=middle.score)  # fmt: skip
        if added:
            log.info("%s: added as an automatic %s reference of camera %s", middle.source, mode, camera)
        return added is not None
