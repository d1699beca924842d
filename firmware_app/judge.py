"""The judge: the one place that decides what a frame is and what happens to its burst.

Every path that decides calls this and nothing else: the folder loop (`loops/folder.py`), the
camera loop (`loops/camera.py`) and the workstation's `eval --context` replay. Per frame:

1. prepare: one decode (or one downscale of a camera array) gives the classifier's view and, when
   the frame's camera has references, the context extractor's;
2. score: the classifier's p(non-blank); a frame that cannot be decoded or scored gets no score,
   which keeps its burst (fail open: the unknown is never discarded);
3. assess: camera context compares the frame with its camera's references (a failure there only
   means the classifier decides);

per burst:

4. decide: blank only if every frame is (`decision.py`'s pure rules), and one action per frame
   from the one discard table, given the disk guard's low-disk state;
5. learn: a discarded burst may become a reference (the one top-up rule); a kept one never does;
6. the kept burst's event, for the outbox.

The loops own I/O, durability and retries; the judge owns no file, no clock and no ledger.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from firmware_app.actions import Action, ContextState, Verdict
from firmware_app.classifiers import Classifier
from firmware_app.config import Config
from firmware_app.context import Assessment, CameraContext, FrameFacts, TopUpFrame, a_reference, lighting_mode
from firmware_app.context.bank import BankError
from firmware_app.context.bars import detect_info_bars
from firmware_app.decision import Candidate, Cutoffs, burst_actions, burst_id, camera_of, frame_decision
from firmware_app.errors import BlankfilterError, ImageError
from firmware_app.events.payloads import AuditFrame, EventFrame, build_audit, build_event, dumps
from firmware_app.events.thumbnail import make_thumbnail, thumbnail_of
from firmware_app.hashing import sha256_bytes
from firmware_app.imaging import ImagingSettings, Prepared, decode_jpeg, prepare_array_views, prepare_jpeg_views
from firmware_app.ledger import OutboxEvent
from firmware_app.modelcard import InputSpec

log = logging.getLogger(__name__)

AUDIT_THUMBNAIL_MAX_BYTES = 192 * 1024  # a 640 px JPEG is ~60 KB; under the monitor's 256 KB cap
CONTEXT_ERRORS = (BlankfilterError, ValueError, RuntimeError, sqlite3.Error)


@dataclass(frozen=True)
class Views:
    """A frame prepared for the models (or why it could not be)."""

    prepared: Prepared | None  # the classifier's view; None: it could not be decoded
    context_pixels: np.ndarray | None  # the extractor's input, when the camera has references
    error: str | None  # why it could not be decoded: it will be kept (fail open)


@dataclass(frozen=True)
class Seen:
    """What the judge made of one frame."""

    score: float | None  # p(non-blank); None: could not be decoded or scored (kept)
    error: str | None
    prepared: Prepared | None
    assessment: Assessment | None  # None: no camera context for this frame

    @property
    def context_score(self) -> float | None:
        """The context score, when the frame was compared with references (its state says how it counts)."""
        return self.assessment.score if self.assessment is not None else None

    @property
    def context_state(self) -> ContextState | None:
        return self.assessment.state if self.assessment is not None else None


@dataclass(frozen=True)
class BurstVerdict:
    key: str  # the burst id (ledger, event id, audit draw)
    blank: bool
    verdicts: list[Verdict]  # per frame
    actions: list[Action]  # per frame


class Judge:
    def __init__(
        self,
        config: Config,
        classifier: Classifier,
        context: CameraContext | None,
        imaging: ImagingSettings | None = None,
    ) -> None:
        self.config, self.classifier, self.context = config, classifier, context
        self.imaging = imaging or ImagingSettings.from_config(config.imaging)
        self.cutoff = config.model.cutoff if config.model.cutoff is not None else classifier.card.cutoff
        self.cutoffs = Cutoffs(self.cutoff, context.settings.cutoff if context is not None else 0.5)
        # Whether a frame may become background is its own question: the classification cutoff is tuned
        # for recall (it keeps almost every frame), so as a test of "empty" it would refuse nearly all.
        self.reference_max_p = config.context.reference_max_p
        # Which cameras are worth a feature pass: a snapshot the prefetch thread may read.
        self._context_cameras: frozenset[str] = frozenset()
        self._crops: dict[str, tuple[float, float]] = {}  # camera -> its own info-bar crop
        self._capture_pending = False
        self._context_state: dict[tuple[str, str], ContextState] = {}  # (camera, mode) -> last, to log changes
        self.camera_cutoffs: dict[str, float] = {}  # camera -> its own cutoff (remote), over self.cutoff

    @property
    def cutoff_origin(self) -> str:
        return "config" if self.config.model.cutoff is not None else "model card"

    def set_cutoff(self, cutoff: float) -> None:
        """A new classifier cutoff while running (the remote cutoff): bursts decided from now on use it."""
        self.cutoff = cutoff
        self.cutoffs = Cutoffs(cutoff, self.cutoffs.context)

    def set_camera_cutoff(self, camera: str, cutoff: float) -> None:
        """One camera's own classifier cutoff (`<base>/set/cutoff/<camera>`, e.g. lowered after its
        audit sample showed misses): its bursts decided from now on use it instead of the trap's."""
        self.camera_cutoffs[camera] = cutoff

    def cutoff_for(self, camera: str) -> float:
        return self.camera_cutoffs.get(camera, self.cutoff)

    # -- 1. prepare ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read which cameras have references (once a pass, on the loop's thread: SQLite stays there)."""
        if self.context is None:
            return
        try:
            self._context_cameras, self._capture_pending = self.context.cameras_wanted()
            self._crops = self.context.bank.crops()
        except (BankError, sqlite3.Error) as exc:
            log.error("reference bank unreadable (%s): the classifier decides alone", exc)
            self._context_cameras, self._capture_pending = frozenset(), False

    def wants_context(self, camera: str) -> bool:
        """A feature pass only for cameras with references (or a pending capture): free until then."""
        return self.context is not None and (self._capture_pending or camera in self._context_cameras)

    def specs(self, camera: str) -> list[InputSpec]:
        specs = [self.classifier.card.input]
        if self.context is not None and self.wants_context(camera):
            specs.append(self.context.input_for(self._crops.get(camera)))
        return specs

    def prepare_jpeg(self, data: bytes, camera: str) -> Views:
        """Safe on the prefetch thread: touches neither the models nor SQLite."""
        try:
            views = prepare_jpeg_views(data, self.specs(camera), self.imaging)
        except ImageError as exc:
            return Views(None, None, str(exc))
        return Views(views[0], views[1].pixels if len(views) > 1 else None, None)

    def prepare_array(self, rgb: np.ndarray, camera: str) -> Views:
        try:
            views = prepare_array_views(rgb, self.specs(camera), self.imaging)
        except ImageError as exc:
            return Views(None, None, str(exc))
        return Views(views[0], views[1].pixels if len(views) > 1 else None, None)

    # -- 2. score, 3. assess ------------------------------------------------------------------
    def see(self, views: Views, camera: str, facts: FrameFacts) -> Seen:
        """Score a prepared frame (fail open) and assess it against its camera's references."""
        if views.prepared is None:
            log.warning("%s: %s; kept (fail open)", facts.source, views.error)
            return Seen(None, views.error, None, None)
        try:
            score = self.classifier.score(views.prepared.pixels)
        except Exception as exc:  # any model failure: the frame is kept, never discarded
            log.error("%s: scoring failed (%s); kept (fail open)", facts.source, exc)
            return Seen(None, f"scoring failed: {exc}", views.prepared, None)
        facts = FrameFacts(facts.source, facts.sha256, facts.captured_ts, facts.burst, score, self.cutoff)
        return Seen(score, None, views.prepared, self.assess(views, camera, facts))

    def assess(self, views: Views, camera: str, facts: FrameFacts) -> Assessment | None:
        if self.context is None or views.context_pixels is None or views.prepared is None:
            return None
        mode = lighting_mode(views.prepared.exposure)
        try:
            assessment = self.context.assess(camera, mode, views.context_pixels, facts)
        except CONTEXT_ERRORS as exc:
            log.error("%s: camera context failed (%s); the classifier decides", facts.source, exc)
            return Assessment(ContextState.FAILED, mode)
        self._note_state(camera, assessment)
        return assessment

    def _note_state(self, camera: str, assessment: Assessment) -> None:
        """Say so once when a camera's references stop (or start again) to describe its scene."""
        key = (camera, assessment.mode)
        before = self._context_state.get(key)
        self._context_state[key] = assessment.state
        unfit = (ContextState.DRIFT, ContextState.INCONSISTENT)
        if assessment.state == before or assessment.state not in (*unfit, ContextState.MATCHED):
            return
        if assessment.state == ContextState.MATCHED:
            if before in unfit:
                log.info("camera %s (%s): the scene matches its references again", camera, assessment.mode)
            return
        why = (
            "the whole scene differs from its references (moved, re-aimed, or the season changed)"
            if assessment.state == ContextState.DRIFT
            else "its references disagree with each other"
        )
        log.warning(
            "camera %s (%s): %s (drift level %.2f, over context.drift_limit): a frame is called blank only where the "
            "classifier agrees. After moving or servicing a camera: `blankfilter reference reset --camera %s`, then "
            "add new references.",
            camera, assessment.mode, why, assessment.mismatch or 0.0, camera,
        )  # fmt: skip

    # -- 4. decide ----------------------------------------------------------------------------
    def decide(self, burst: Sequence[Candidate], low_disk: bool, on_disk: bool, key: str | None = None) -> BurstVerdict:
        """A closed burst: blank or not, and what happens to each frame (`decision.burst_actions`)."""
        key = key or burst_id(burst)
        cutoffs = Cutoffs(self.cutoff_for(camera_of(burst[0].path)), self.cutoffs.context) if burst else self.cutoffs
        verdicts = [frame_decision(f.score, cutoffs, f.context_score, f.context_state) for f in burst]
        blank = all(v == Verdict.BLANK for v in verdicts)  # kept whole if any frame is (or is unknown)
        s = self.config.store
        actions = burst_actions(burst, blank, key, s.discard, s.audit_rate, low_disk, on_disk)
        return BurstVerdict(key, blank, verdicts, actions)

    # -- 5. learn -----------------------------------------------------------------------------
    def learn(self, camera: str, key: str, frames: Sequence[TopUpFrame | None]) -> bool:
        """The one top-up rule: a discarded burst whose every frame context judged may add a
        reference (`CameraContext.top_up` says which, and when). True when one was added."""
        if self.context is None or not frames or any(f is None or not f.assessment.decides for f in frames):
            return False
        learnable = [f for f in frames if f is not None]
        try:
            return self.context.top_up(camera, learnable[0].assessment.mode, key, learnable, self.reference_max_p)
        except CONTEXT_ERRORS as exc:
            log.error("could not add an automatic reference (%s)", exc)
            return False

    # -- references ---------------------------------------------------------------------------
    def reference(self, data: bytes, camera: str) -> tuple[str, np.ndarray, float]:
        """A known-empty frame seen as the loops see this camera's frames: (lighting mode, features,
        classifier p). The classifier's score of a reference tells later how sure it can be of
        nothing at this camera (the veto's margin). Raises ImageError for a frame that cannot be decoded."""
        context = self._need_context()
        specs = [self.classifier.card.input, context.input_for(context.bank.crops().get(camera))]
        seen, view = prepare_jpeg_views(data, specs, self.imaging)
        return lighting_mode(seen.exposure), context.extractor.features(view.pixels), self.classifier.score(seen.pixels)

    def find_bars(self, camera: str, frames: Sequence[bytes]) -> tuple[float, float] | None:
        """A camera's first references fix how its frames are cut: its own info bars (`context/bars.py`),
        found across them. A camera that already has references keeps its crop (their features depend on
        it: the card's, for references made before bars were found). Returns the crop set, or None."""
        if not self._crop_is_open(camera):
            return None
        greys: dict[tuple[int, int], list[np.ndarray]] = {}
        spec = self.classifier.card.input
        for data in frames:
            try:
                image, _, _ = decode_jpeg(data, (spec.width, spec.height), self.imaging)
            except ImageError:
                continue
            greys.setdefault(image.size, []).append(np.asarray(image.convert("L")))
        return self._fix_crop(camera, max(greys.values(), key=len)) if greys else None

    def _crop_is_open(self, camera: str) -> bool:
        """Neither a crop nor references yet: the next references decide how this camera is cut."""
        context = self._need_context()
        return camera not in context.bank.crops() and not context.bank.has_camera(camera)

    def _fix_crop(self, camera: str, greys: Sequence[np.ndarray]) -> tuple[float, float]:
        top, bottom = detect_info_bars(greys)
        self._need_context().bank.set_crop(camera, top, bottom)
        log.info("camera %s: info bars %.1f %% at the top, %.1f %% at the bottom: cut before comparing",
                 camera, 100 * top, 100 * bottom)  # fmt: skip
        return top, bottom

    def add_references(
        self,
        camera: str,
        frames: Sequence[tuple[bytes, str]],
        mode: str | None = None,
        bursts: Sequence[str | None] | None = None,
        times: Sequence[float | None] | None = None,
    ) -> list[tuple[str, bool] | ImageError]:
        """`reference add` (and the replay's seeds): (data, source) frames of one camera become its
        references, after its info bars are found when these are its first. Per frame: (the mode it
        went to, whether it was new), or the ImageError that kept it out."""
        context = self._need_context()
        self.find_bars(camera, [data for data, _ in frames])
        out: list[tuple[str, bool] | ImageError] = []
        for i, (data, source) in enumerate(frames):
            try:
                seen_mode, features, score = self.reference(data, camera)
            except ImageError as exc:
                out.append(exc)
                continue
            added = context.bank.add(camera, mode or seen_mode, features, origin="manual", source=source,
                                     sha256=sha256_bytes(data), burst=bursts[i] if bursts else None,
                                     captured_ts=times[i] if times else None, score=score)  # fmt: skip
            out.append((mode or seen_mode, added is not None))
        return out

    def quiet_reference(self, camera: str, rgb: np.ndarray, source: str, sha256: str, captured_ts: float) -> str:
        """A frame a camera took while nothing triggered it, offered as an `auto` reference (the light of
        this hour, day or IR). Taken only when the classifier scores it under context.reference_max_p and
        it is not a local change in a scene that matches the references (an animal that lay down without
        triggering the PIR looks exactly like that). Returns what happened, for the log."""
        context = self._need_context()
        if self._crop_is_open(camera):
            self._fix_crop(camera, [np.asarray(Image.fromarray(rgb).convert("L"))])
        spec = context.input_for(context.bank.crops().get(camera))
        seen, view = prepare_array_views(rgb, [self.classifier.card.input, spec], self.imaging)
        score = self.classifier.score(seen.pixels)
        if score >= self.reference_max_p:
            return f"not taken: the classifier scores it {score:.3f} (an animal may be there)"
        mode, features = lighting_mode(seen.exposure), context.extractor.features(view.pixels)
        bank_view = context.bank.view(camera, mode)
        if bank_view is not None and bank_view.ids:
            result = context.compare(features, bank_view)
            local = result.mismatch <= context.settings.drift_limit and result.score >= context.settings.cutoff
            if local:
                return f"not taken: a local change in a matching scene (context {result.score:.3f})"
        added = context.bank.add(camera, mode, features, origin="auto", source=source, sha256=sha256,
                                 captured_ts=captured_ts, score=score)  # fmt: skip
        return f"taken as {a_reference(mode)}" if added is not None else "not taken: the bank is full of chosen ones"

    def _need_context(self) -> CameraContext:
        if self.context is None:
            raise BlankfilterError("camera context is off (context.enabled = false): no references to take")
        return self.context

    # -- 6. the event -------------------------------------------------------------------------
    def event(
        self, key: str, frames: list[EventFrame], best: Path | np.ndarray | None, camera: str | None = None
    ) -> OutboxEvent:
        """A kept burst's MQTT event, for the outbox (written in the same transaction as its decision).
        `best`: the burst's highest-scoring frame (its file, or a camera's array), for the thumbnail;
        `camera`: whose cutoff the event names (the camera's own, when it has one)."""
        m = self.config.mqtt
        side, cap = m.thumbnail_px, int(m.thumbnail_max_kb * 1024)
        if isinstance(best, Path):
            thumbnail = make_thumbnail(best, side, cap)
        else:
            thumbnail = thumbnail_of(Image.fromarray(best), side, cap) if best is not None else None
        model = (self.classifier.card.name, self.classifier.card.version)
        cutoff = self.cutoff if camera is None else self.cutoff_for(camera)
        payload = build_event(self.config.trap.id, key, frames, cutoff, model, thumbnail)
        return OutboxEvent(payload["event_id"], dumps(payload))

    def audit(self, key: str, camera: str, frames: list[AuditFrame], best: Path | np.ndarray | None) -> OutboxEvent:
        """An audited burst's `audit` message, for the outbox (in the same transaction as its decision),
        its thumbnail store.audit_thumbnail_px on the long side: big enough to spot a small animal."""
        side = self.config.store.audit_thumbnail_px
        cap = AUDIT_THUMBNAIL_MAX_BYTES
        if isinstance(best, Path):
            thumbnail = make_thumbnail(best, side, cap)
        else:
            thumbnail = thumbnail_of(Image.fromarray(best), side, cap) if best is not None else None
        context = self.cutoffs.context if self.context is not None else None
        payload = build_audit(self.config.trap.id, camera, key, frames, (self.cutoff_for(camera), context), thumbnail)
        return OutboxEvent(payload["id"], dumps(payload), kind="audit")


def top_up_frame(source: str, sha256: str, captured_ts: float, seen: Seen) -> TopUpFrame | None:
    """What a later top-up needs of a frame context judged (None: context did not decide it)."""
    if seen.assessment is None or not seen.assessment.decides:
        return None
    return TopUpFrame(source, sha256, captured_ts, seen.score, seen.assessment)
