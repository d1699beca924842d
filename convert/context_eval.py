"""`blankfilter eval --context`: replay labelled frames per camera, in time order, through the trap's
own camera-context code (bank, score, drift check, fusion, top-up), against the classifier alone on
the same frames.

Per camera (the `camera` column, else `location`): the bank is seeded with the first N known blanks
of each lighting mode, then every burst is scored in order with references that never include the
scored frame's own burst, decided as the trap would, and a discarded burst may top the bank up. Frames
without a camera, or whose camera has no references for their mode, are decided by the classifier,
as on the trap.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.labels import LabelledFrame
from convert.metrics import roc_auc
from convert.scoring import progress_bar
from firmware_app.classifiers import Classifier
from firmware_app.context import Assessment, CameraContext, ContextSettings, FrameFacts, TopUpFrame, lighting_mode
from firmware_app.context.bank import ReferenceBank
from firmware_app.context.extractor import FeatureExtractor
from firmware_app.decision import Cutoffs, frame_decision
from firmware_app.errors import ImageError
from firmware_app.imaging import ImagingSettings, prepare_jpeg_views

ALL = "(all)"
NO_CAMERA = "(no camera)"


@dataclass
class ReplayFrame:
    frame: LabelledFrame
    camera: str
    burst: str
    index: int  # position in the camera's time order: the replay's clock
    score: float | None = None  # classifier p(non-blank); None: unreadable (kept, as on the trap)
    mode: str = "day"
    pixels: np.ndarray | None = None  # the extractor's input (dropped after use)
    sha256: str = ""
    assessment: Assessment | None = None
    seed: bool = False

    @property
    def y(self) -> int:
        return int(self.frame.nonblank)

    @property
    def context_score(self) -> float | None:
        a = self.assessment
        return a.score if a is not None and a.decides else None


def camera_keys(frames: list[LabelledFrame]) -> list[str]:
    """Each frame's camera: the `camera` column; else its `location` (Norway's tunnels are cameras),
    except in a location where other frames name their camera: there a frame without one is of an
    unknown camera (Missouri's unstamped Panama frames are many cameras, not one)."""
    named = {f.location for f in frames if f.camera}
    return [f.camera or (NO_CAMERA if f.location in named or not f.location else f.location) for f in frames]


def _natural(text: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def time_order(frames: list[LabelledFrame]) -> list[LabelledFrame]:
    """Capture time when the CSV has it, else burst ids in natural order (SEQ75184 < SEQ75186), then path."""
    return sorted(frames, key=lambda f: (f.taken, _natural(f.sequence), _natural(f.path.name)))


def prepare(
    rows: list[ReplayFrame], classifier: Classifier, extractor: FeatureExtractor, settings: ImagingSettings
) -> None:
    for row in rows:
        try:
            data = row.frame.path.read_bytes()
            prepared, view = prepare_jpeg_views(data, [classifier.card.input, extractor.card.input], settings)
            row.score = classifier.score(prepared.pixels)
            row.mode = lighting_mode(prepared.exposure)
            row.pixels = view.pixels
            row.sha256 = hashlib.sha256(data).hexdigest()
        except (OSError, ImageError):
            row.score = None


def replay_camera(
    rows: list[ReplayFrame], context: CameraContext, cutoffs: Cutoffs, seed_blanks: int, camera: str
) -> None:
    """Seed, then score, decide and top up burst by burst, exactly as the pipeline does."""
    seeded: Counter[str] = Counter()
    for row in rows:
        if row.score is not None and not row.y and seeded[row.mode] < seed_blanks and row.pixels is not None:
            context.bank.add(camera, row.mode, context.extractor.features(row.pixels), origin="manual",
                             source=str(row.frame.path), sha256=row.sha256, burst=row.burst,
                             captured_ts=float(row.index), score=row.score)  # fmt: skip
            seeded[row.mode] += 1
            row.seed = True
    bursts: dict[str, list[ReplayFrame]] = {}
    for row in rows:
        bursts.setdefault(row.burst, []).append(row)
    for burst, frames in bursts.items():
        for row in frames:
            if row.score is not None and row.pixels is not None:
                facts = FrameFacts(str(row.frame.path), row.sha256, float(row.index), burst, row.score,
                                   cutoffs.classifier)  # fmt: skip
                row.assessment = context.assess(camera, row.mode, row.pixels, facts)
            row.pixels = None
        decisions = [frame_decision(r.score, cutoffs, r.context_score) for r in frames]
        if all(d == "blank" for d in decisions) and all(r.assessment is not None for r in frames):
            top = [TopUpFrame(str(r.frame.path), r.sha256, float(r.index), r.score, r.assessment)  # type: ignore[arg-type]
                   for r in frames]  # fmt: skip
            context.top_up(camera, frames[0].mode, burst, top, cutoffs.classifier)


def replay(
    frames: list[LabelledFrame],
    classifier: Classifier,
    extractor: FeatureExtractor,
    settings: ContextSettings,
    cutoff: float,
    seed_blanks: int = 3,
    max_references: int = 12,
    imaging: ImagingSettings | None = None,
    show_progress: bool = True,
) -> list[ReplayFrame]:
    by_camera: dict[str, list[LabelledFrame]] = {}
    for frame, camera in zip(frames, camera_keys(frames), strict=True):
        by_camera.setdefault(camera, []).append(frame)
    cutoffs = Cutoffs(cutoff, settings.cutoff)
    out: list[ReplayFrame] = []
    with progress_bar("replaying", show_progress) as bar:
        task = bar.add_task("replaying", total=len(frames))
        for camera, group in sorted(by_camera.items()):
            bank = ReferenceBank(Path(":memory:"), extractor.card.label, max_references)
            context = CameraContext(extractor, bank, settings)
            rows = [
                ReplayFrame(f, camera, f"{camera}|{f.sequence or f.path.name}", i)
                for i, f in enumerate(time_order(group))
            ]
            prepare(rows, classifier, extractor, imaging or ImagingSettings())
            if camera != NO_CAMERA:
                replay_camera(rows, context, cutoffs, seed_blanks, camera)
            bank.close()
            out.extend(rows)
            bar.advance(task, len(group))
    return out


# -- metrics ------------------------------------------------------------------------------------
def _counts(rows: list[ReplayFrame], cutoffs: Cutoffs, use_context: bool) -> dict[str, Any]:
    """Frame and burst recall / TNR of one way of deciding."""

    def blank(r: ReplayFrame) -> bool:
        return frame_decision(r.score, cutoffs, r.context_score if use_context else None) == "blank"

    animals = [r for r in rows if r.y]
    blanks = [r for r in rows if not r.y]
    bursts: dict[str, list[ReplayFrame]] = {}
    for r in rows:
        bursts.setdefault(r.burst, []).append(r)
    animal_bursts = [b for b in bursts.values() if any(r.y for r in b)]
    blank_bursts = [b for b in bursts.values() if not any(r.y for r in b)]
    kept = sum(1 for r in animals if not blank(r))
    discarded = sum(1 for r in blanks if blank(r))
    kept_b = sum(1 for b in animal_bursts if not all(blank(r) for r in b))
    discarded_b = sum(1 for b in blank_bursts if all(blank(r) for r in b))
    return {
        "frame_recall": kept / len(animals) if animals else None,
        "frame_tnr": discarded / len(blanks) if blanks else None,
        "kept_animal_frames": kept,
        "discarded_blank_frames": discarded,
        "burst_recall": kept_b / len(animal_bursts) if animal_bursts else None,
        "burst_tnr": discarded_b / len(blank_bursts) if blank_bursts else None,
        "kept_animal_bursts": kept_b,
        "discarded_blank_bursts": discarded_b,
    }


def summarise(rows: list[ReplayFrame], cutoffs: Cutoffs, veto: float) -> dict[str, Any]:
    cameras = [ALL, *sorted({r.camera for r in rows})]
    table = []
    for camera in cameras:
        subset = [r for r in rows if camera == ALL or r.camera == camera]
        matched = [r for r in subset if r.context_score is not None]
        states = Counter(r.assessment.state if r.assessment else "classifier_only" for r in subset)
        table.append(
            {
                "camera": camera,
                "frames": len(subset),
                "animal_frames": sum(r.y for r in subset),
                "blank_frames": sum(1 - r.y for r in subset),
                "bursts": len({r.burst for r in subset}),
                "context_decided": len(matched),
                "states": dict(states),
                "context_auc": roc_auc([r.y for r in matched], [r.context_score or 0.0 for r in matched]),
                "classifier_auc_same_frames": roc_auc([r.y for r in matched], [r.score or 0.0 for r in matched]),
                "classifier": _counts(subset, cutoffs, use_context=False),
                "fused": _counts(subset, cutoffs, use_context=True),
            }
        )
    return {
        "cutoff": cutoffs.classifier,
        "context_cutoff": cutoffs.context,
        "veto": veto,
        "unscored": sum(1 for r in rows if r.score is None),
        "cameras": table,
    }


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(
        title=f"camera context: classifier cutoff {result['cutoff']:.4f}, context cutoff "
        f"{result['context_cutoff']:.3f}, veto {result['veto']:.2f}"
    )
    for column in ("camera", "frames", "animal/blank", "context decided", "ctx AUC", "clf AUC",
                   "recall clf → fused", "TNR clf → fused", "blank bursts discarded"):  # fmt: skip
        table.add_column(column, justify="left" if column == "camera" else "right")
    for row in result["cameras"]:
        clf, fused = row["classifier"], row["fused"]
        table.add_row(
            row["camera"], str(row["frames"]), f"{row['animal_frames']}/{row['blank_frames']}",
            str(row["context_decided"]), pct(row["context_auc"]), pct(row["classifier_auc_same_frames"]),
            f"{pct(clf['frame_recall'])} → {pct(fused['frame_recall'])}",
            f"{pct(clf['frame_tnr'])} → {pct(fused['frame_tnr'])}",
            f"{clf['discarded_blank_bursts']} → {fused['discarded_blank_bursts']}",
        )  # fmt: skip
    Console().print(table)


def context_scores(rows: list[ReplayFrame]) -> list[Any]:
    """The context-decided frames as ScoredFrames (score = context score), for `tune --scores`."""
    from convert.scoring import ScoredFrame

    return [
        ScoredFrame(str(r.frame.path), r.frame.label, r.camera, r.burst, r.context_score, None, None)
        for r in rows
        if r.context_score is not None
    ]
