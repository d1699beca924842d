"""Blank or not, per frame and per burst. Pure functions: no I/O, no clock, no randomness.

A burst is the frames of one trigger. Camera traps shoot 3 or more frames a trigger and the animal
is often in only one of them, so a burst is kept whole if any frame scores at or over the cutoff.
A frame that could not be scored counts as non-blank: we fail open, never discard the unknown.

With camera context (firmware_app/context/), context can only ever discard where the frame's scene
matched the camera's references; everywhere else it can only keep more (`is_blank`):
- matched: the context score decides (a local change keeps the frame, whatever the classifier says);
- drift or inconsistent references (the scene no longer fits them): blank only if the context
  score AND the classifier both say blank: an unknown scene fails open;
- vetoed (the classifier is sure of an animal, and that means something at this camera), no
  references, captured, failed: the classifier alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from firmware_app.actions import Action, ContextState, Verdict
from firmware_app.hashing import sha256_text


@dataclass(frozen=True)
class Candidate:
    """A scored frame waiting for its burst to close."""

    frame_id: int
    path: str  # relative to the inbox
    sha256: str
    captured_ts: float
    burst_hint: str | None  # a source-given burst id wins over time gaps
    score: float | None  # None: scoring failed
    context_score: float | None = None  # the context score, when the frame was compared with references
    gamma: float | None = None  # gamma applied before scoring (1.0: none), for the event
    context_state: ContextState | None = None  # what camera context made of it (None: not used)


def camera_of(path: str) -> str:
    """Frames in different sub-folders come from different cameras (or cards): never one burst."""
    return str(PurePosixPath(path).parent)


def group_bursts(frames: Sequence[Candidate], gap_s: float) -> list[list[Candidate]]:
    """Split frames into bursts: same source burst id, or same camera and within `gap_s` of the previous."""
    hinted: dict[tuple[str, str], list[Candidate]] = {}
    by_camera: dict[str, list[Candidate]] = {}
    for frame in frames:
        if frame.burst_hint:
            hinted.setdefault((camera_of(frame.path), frame.burst_hint), []).append(frame)
        else:
            by_camera.setdefault(camera_of(frame.path), []).append(frame)
    bursts = [sorted(group, key=_order) for group in hinted.values()]
    for camera_frames in by_camera.values():
        current: list[Candidate] = []
        for frame in sorted(camera_frames, key=_order):
            if current and frame.captured_ts - current[-1].captured_ts > gap_s:
                bursts.append(current)
                current = []
            current.append(frame)
        if current:
            bursts.append(current)
    return sorted(bursts, key=lambda b: _order(b[0]))


def _order(frame: Candidate) -> tuple[float, str]:
    return frame.captured_ts, frame.path


@dataclass(frozen=True)
class Cutoffs:
    classifier: float  # p(non-blank) at or over which a frame is kept
    context: float = 0.5  # context score at or over which a frame is kept, when its scene matched


def _cutoffs(cutoff: float | Cutoffs) -> Cutoffs:
    return cutoff if isinstance(cutoff, Cutoffs) else Cutoffs(cutoff)


def is_blank(
    score: float | None,
    cutoff: float | Cutoffs,
    context_score: float | None = None,
    context_state: ContextState | None = None,
) -> bool:
    """A frame is blank only when it was scored and every judge that applies calls it blank (see the
    module docstring). A context score without a state is a matched scene."""
    if score is None:
        return False
    c = _cutoffs(cutoff)
    classifier_blank = score < c.classifier
    if context_score is None:
        return classifier_blank
    state = context_state or ContextState.MATCHED
    if state == ContextState.MATCHED:
        return context_score < c.context
    if state in (ContextState.DRIFT, ContextState.INCONSISTENT):
        return classifier_blank and context_score < c.context
    return classifier_blank


def burst_is_blank(burst: Sequence[Candidate], cutoff: float | Cutoffs) -> bool:
    return all(is_blank(frame.score, cutoff, frame.context_score, frame.context_state) for frame in burst)


def burst_id(burst: Sequence[Candidate]) -> str:
    """Stable across restarts: derived from the first frame, not from a counter. Its bytes are part
    of it: a camera whose clock and file counter were reset (a battery change, a formatted card)
    writes a new burst under an old name and time, and that is another burst with its own event."""
    first = burst[0]
    if first.burst_hint:
        return first.burst_hint
    return sha256_text(f"{first.path}|{first.captured_ts:.3f}|{first.sha256}")[:16]


def audit_pick(burst_key: str, rate: float) -> bool:
    """Whether a blank burst goes to the audit sample: a hash, not a die roll, so a restart after
    a crash makes the same choice and the sample stays reproducible."""
    if rate <= 0:
        return False
    draw = int(sha256_text(f"audit|{burst_key}")[:8], 16) / 0x100000000  # [0, 1)
    return draw < rate


def frame_decision(
    score: float | None,
    cutoff: float | Cutoffs,
    context_score: float | None = None,
    context_state: ContextState | None = None,
) -> Verdict:
    if score is None:
        return Verdict.UNKNOWN
    return Verdict.BLANK if is_blank(score, cutoff, context_score, context_state) else Verdict.NONBLANK


# What store.discard means for a blank burst; `on_disk`: the frames are files in the inbox already
# (folder source), else arrays in memory (camera source), which a delete simply never writes.
_DISCARD = {"quarantine": Action.QUARANTINED, "keep": Action.BLANK_KEPT}


def burst_actions(
    burst: Sequence[Candidate],
    blank: bool,
    burst_key: str,
    discard: str,
    audit_rate: float,
    low_disk: bool,
    on_disk: bool,
) -> list[Action]:
    """One action per frame of a decided burst: the one table for every source.

    A kept burst keeps every frame (an unscored one as `failed_kept`). A blank burst goes to the
    audit sample or is discarded as `store.discard` says, except when the disk is nearly full: then
    nothing blank is kept anywhere (no audit, no quarantine), since a full card stops the animals too.
    """
    if not blank:
        return [Action.FAILED_KEPT if f.score is None else Action.KEPT for f in burst]
    if not low_disk and audit_pick(burst_key, audit_rate):
        return [Action.AUDIT] * len(burst)
    deleted = Action.DELETED if on_disk else Action.NOT_WRITTEN
    action = deleted if low_disk else _DISCARD.get(discard, deleted)
    return [action] * len(burst)
