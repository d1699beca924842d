"""Camera context: each trap learns its own empty scene.

A camera trap looks at the same scene all season. A frame that matches this camera's known-empty
frames (its references, per lighting mode) is blank; an animal is a local change. The pieces:

- `extractor`: the int8 TFLite feature model (its own card, kind "features");
- `score`: the per-cell comparison, the camera's baseline and the drift measure (pure numpy);
- `bank`: the references per camera and mode, in SQLite beside the ledger;
- `CameraContext` (here): what the pipeline calls per frame and per decided burst.

The classifier still scores every frame: it decides alone when the camera has no references for
this lighting mode, must agree before a frame whose scene drifted away from them is called blank,
and always keeps a frame it is sure of (`veto_fires`). Context can only ever discard where it
matched; everywhere else it can only keep more.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from firmware_app.actions import ContextState
from firmware_app.context.bank import BankView, ReferenceBank
from firmware_app.context.extractor import FeatureExtractor
from firmware_app.context.score import Comparison, compare
from firmware_app.imaging import Exposure
from firmware_app.modelcard import InputSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContextSettings:
    cutoff: float  # context score at or over which a frame is kept
    veto: float  # classifier p at or over which (with the margin) a frame is kept whatever its context
    drift_limit: float  # drift level over which the references no longer describe the scene
    topup_spacing_s: float  # at most one automatic reference per camera and mode in this time
    veto_margin: float = 2.0  # logit units the classifier must clear over its highest score of the references
    noise_floor: float | None = None  # the score's calibration (score.excess_share): the extractor card's


def _logit(p: float) -> float:
    q = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(q / (1 - q))


def veto_fires(p: float | None, highest_reference_p: float | None, veto: float, margin: float) -> bool:
    """The classifier is sure of an animal, and that means something at this camera: p >= veto and
    logit(p) >= logit(its highest p among the camera's known-empty references) + margin.

    At every camera: the first version switched the veto off wherever the classifier scored the
    references non-blank, and on unseen cameras that overruled animals at p = 0.79 and 0.96. The
    margin is what keeps it from firing on every frame of a scene the classifier always calls an
    animal (the Norway tunnels: empty frames score p 0.90-1.00; an absolute veto would keep them
    all). References never scored: the absolute veto."""
    if p is None or p < veto:
        return False
    if highest_reference_p is None:
        return True
    return _logit(p) >= _logit(highest_reference_p) + margin


@dataclass(frozen=True)
class Assessment:
    state: ContextState
    mode: str = ""  # day | ir
    score: float | None = None  # context score (when compared)
    mismatch: float | None = None  # drift level: a low percentile of the cell distances
    references: int = 0
    features: np.ndarray | None = None  # kept in memory for the top-up, never in the ledger
    peak: float | None = None  # the most changed cell and the bank's level the score was calibrated by:
    level: float | None = None  # `eval --lolo` rescores with other calibrations from these

    @property
    def decides(self) -> bool:
        return self.state == ContextState.MATCHED


def a_reference(mode: str) -> str:
    """How logs and messages name a reference of a lighting mode: "a day reference", "an IR reference"."""
    return "an IR reference" if mode == "ir" else f"a {mode} reference"


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

    def input_for(self, crop: tuple[float, float] | None) -> InputSpec:
        """The extractor's input for a camera: its card's, with the camera's own info-bar crop when found."""
        spec = self.extractor.card.input
        return spec if crop is None else dataclasses.replace(spec, crop_top=crop[0], crop_bottom=crop[1])

    def assess(self, camera: str, mode: str, pixels: np.ndarray, frame: FrameFacts) -> Assessment:
        features = self.extractor.features(pixels)
        source, burst = frame.source, frame.burst
        if self.bank.take_capture(camera):
            self.bank.add(camera, mode, features, origin="capture", source=source, sha256=frame.sha256, burst=burst,
                          captured_ts=frame.captured_ts, score=frame.score)  # fmt: skip
            log.info("%s: taken as %s of camera %s (capture step)", source, a_reference(mode), camera)
            return Assessment(ContextState.CAPTURED, mode)
        view = self.bank.view(camera, mode)
        view = view.excluding_burst(burst) if view is not None else None
        if view is None or not view.ids:
            return Assessment(ContextState.NO_REFERENCES, mode)
        result = self.compare(features, view)
        if view.baseline.spread > self.settings.drift_limit:
            state = ContextState.INCONSISTENT  # the references disagree with each other
        elif result.mismatch > self.settings.drift_limit:
            state = ContextState.DRIFT  # the whole scene differs from them
        else:
            state = ContextState.MATCHED
        sure = veto_fires(frame.score, view.highest_score, self.settings.veto, self.settings.veto_margin)
        if state == ContextState.MATCHED and sure:  # (drift already needs the classifier to agree)
            state = ContextState.VETOED
        mismatch = view.baseline.spread if state == ContextState.INCONSISTENT else result.mismatch
        return Assessment(state, mode, result.score, mismatch, len(view.ids), features, result.peak, result.level)

    def compare(self, features: np.ndarray, view: BankView) -> Comparison:
        """A frame's features against a camera's references, scored with this extractor's calibration."""
        return compare(features, view.features, view.baseline, self.settings.noise_floor)

    def is_context_blank(self, assessment: Assessment) -> bool:
        return assessment.decides and assessment.score is not None and assessment.score < self.settings.cutoff

    def top_up(self, camera: str, mode: str, burst: str, frames: list[TopUpFrame], max_p: float) -> bool:
        """Learn from a discarded burst: one of its frames becomes an `auto` reference when every frame
        was blank to the context score and the classifier scored it under `max_p` (the judge's
        context.reference_max_p: a test of "empty", not the classification cutoff), and the last automatic
        reference is older than the spacing (so the bank follows the light through the day instead of
        filling with one burst's near-copies). A kept burst never gets here: an animal must never
        become background."""
        if not frames or not all(
            self.is_context_blank(f.assessment) and f.score is not None and f.score < max_p for f in frames
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
