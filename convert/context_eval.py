"""`blankfilter eval --context`: replay labelled frames per camera, in time order, through the trap's
own judge (`firmware_app.judge.Judge`: the classifier, camera context with its bank, score, drift
check and veto, the burst rule and the top-up), against the classifier alone on the same frames.

Per camera (the `camera` column, else `location`): the bank starts with the camera's known blanks
(`references`: frames that are not replayed, added as `blankfilter reference add` adds them; or
the first `seed_blanks` known blanks of each lighting mode among the replayed frames, never compared
with their own burst), then every burst is judged in order exactly as the trap's loops judge it, and
a discarded burst may top the bank up. Frames without a camera, or whose camera has no references
for their mode, are decided by the classifier, as on the trap.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convert.labels import LabelledFrame
from convert.metrics import roc_auc
from convert.scoring import progress_bar
from firmware_app.actions import ContextState, Verdict
from firmware_app.classifiers import Classifier
from firmware_app.config import Config
from firmware_app.context import Assessment, CameraContext, ContextSettings, FrameFacts
from firmware_app.context.bank import ReferenceBank
from firmware_app.context.extractor import FeatureExtractor
from firmware_app.decision import Candidate, Cutoffs, frame_decision
from firmware_app.errors import ImageError
from firmware_app.hashing import sha256_bytes
from firmware_app.imaging import ImagingSettings
from firmware_app.judge import Judge, Views, top_up_frame

ALL = "(all)"
NO_CAMERA = "(no camera)"


@dataclass
class ReplayFrame:
    frame: LabelledFrame
    camera: str
    burst: str
    index: int  # position in the camera's time order: the replay's clock when no time is known
    score: float | None = None  # classifier p(non-blank); None: unreadable (kept, as on the trap)
    mode: str = "day"
    sha256: str = ""
    assessment: Assessment | None = None
    verdict: Verdict | None = None  # the judge's call on this frame
    seed: bool = False

    @property
    def y(self) -> int:
        return int(self.frame.nonblank)

    @property
    def context_score(self) -> float | None:
        a = self.assessment
        return a.score if a is not None and a.decides else None

    @property
    def context_state(self) -> ContextState | None:
        return self.assessment.state if self.assessment is not None else None


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


def _taken_ts(text: str) -> float | None:
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def _read(row: ReplayFrame) -> bytes | None:
    try:
        return row.frame.path.read_bytes()
    except OSError:
        return None


def seed(judge: Judge, camera: str, rows: list[ReplayFrame], seed_blanks: int) -> None:
    """The first `seed_blanks` known blanks of each lighting mode become references, tagged with
    their burst so that no frame is ever compared with its own burst."""
    seeded: Counter[str] = Counter()
    for row in rows:
        data = None if row.y else _read(row)
        if data is None:
            continue
        try:
            mode, features, score = judge.reference(data)
        except ImageError:
            continue
        if seeded[mode] >= seed_blanks:
            continue
        assert judge.context is not None
        judge.context.bank.add(camera, mode, features, origin="manual", source=str(row.frame.path),
                               sha256=sha256_bytes(data), burst=row.burst, captured_ts=float(row.index),
                               score=score)  # fmt: skip
        seeded[mode] += 1
        row.seed = True


def replay_camera(judge: Judge, camera: str, rows: list[ReplayFrame]) -> None:
    """Judge, decide and learn burst by burst, in time order, with the trap's own judge."""
    bursts: dict[str, list[ReplayFrame]] = {}
    for row in rows:
        bursts.setdefault(row.burst, []).append(row)
    for burst, frames in bursts.items():
        judge.refresh()  # the bank may have grown: which cameras want a feature pass
        candidates, learnable = [], []
        for row in frames:
            data = _read(row)
            views = judge.prepare_jpeg(data, camera) if data is not None else Views(None, None, "cannot read")
            row.sha256 = sha256_bytes(data) if data is not None else ""
            captured = views.prepared.captured_at if views.prepared else None
            ts = _taken_ts(row.frame.taken) or (captured.replace(tzinfo=UTC).timestamp() if captured else None)
            ts = float(row.index) if ts is None else ts
            seen = judge.see(views, camera, FrameFacts(str(row.frame.path), row.sha256, ts, burst, None, judge.cutoff))
            row.score, row.assessment = seen.score, seen.assessment
            row.mode = seen.assessment.mode if seen.assessment else row.mode
            gamma = seen.prepared.gamma if seen.prepared else None
            candidates.append(Candidate(row.index, str(row.frame.path), row.sha256, ts, burst, seen.score,
                                        seen.context_score, gamma))  # fmt: skip
            learnable.append(top_up_frame(str(row.frame.path), row.sha256, ts, seen))
        verdict = judge.decide(candidates, low_disk=False, on_disk=True, key=burst)
        for row, v in zip(frames, verdict.verdicts, strict=True):
            row.verdict = v
        if verdict.blank:
            judge.learn(camera, burst, learnable)


def replay(
    frames: list[LabelledFrame],
    classifier: Classifier,
    extractor: FeatureExtractor,
    settings: ContextSettings,
    config: Config,
    seed_blanks: int = 3,
    references: list[LabelledFrame] | None = None,
    imaging: ImagingSettings | None = None,
    show_progress: bool = True,
) -> list[ReplayFrame]:
    """`config`: the trap's (the classifier cutoff, context.max_references); `settings` the context's."""
    by_camera: dict[str, list[LabelledFrame]] = {}
    for frame, camera in zip(frames, camera_keys(frames), strict=True):
        by_camera.setdefault(camera, []).append(frame)
    known: dict[str, list[LabelledFrame]] = {}
    for frame, camera in zip(references or [], camera_keys(references or []), strict=True):
        known.setdefault(camera, []).append(frame)
    out: list[ReplayFrame] = []
    with progress_bar("replaying", show_progress) as bar:
        task = bar.add_task("replaying", total=len(frames))
        for camera, group in sorted(by_camera.items()):
            bank = ReferenceBank(Path(":memory:"), extractor.card.label, config.context.max_references)
            context = CameraContext(extractor, bank, settings) if camera != NO_CAMERA else None
            judge = Judge(config, classifier, context, imaging)
            rows = [
                ReplayFrame(f, camera, f"{camera}|{f.sequence or f.path.name}", i)
                for i, f in enumerate(time_order(group))
            ]
            if context is not None:
                for ref in known.get(camera, []):
                    judge.add_reference(ref.path.read_bytes(), camera, None, str(ref.path))
                if references is None:
                    seed(judge, camera, rows, seed_blanks)
            replay_camera(judge, camera, rows)
            bank.close()
            out.extend(rows)
            bar.advance(task, len(group))
    return out


def trap_config(cutoff: float | None, max_references: int, topup_spacing_s: float) -> Config:
    """The trap config the replay judges with: defaults, the cutoff in force, the bank's limits."""
    base = Config()
    model = replace(base.model, cutoff=cutoff)
    context = replace(base.context, max_references=max_references, topup_spacing_s=topup_spacing_s)
    return replace(base, model=model, context=context, store=replace(base.store, audit_rate=0.0))


# -- metrics ------------------------------------------------------------------------------------
def _counts(rows: list[ReplayFrame], cutoffs: Cutoffs, use_context: bool) -> dict[str, Any]:
    """Frame and burst recall / TNR of one way of deciding."""

    def blank(r: ReplayFrame) -> bool:
        if use_context:  # the judge's own call, as the trap made it
            return r.verdict == Verdict.BLANK
        return frame_decision(r.score, cutoffs) == Verdict.BLANK

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


def write_decisions(rows: list[ReplayFrame], out: Path) -> None:
    """Per frame, what the judge decided: the same columns the trap's ledger holds for a frame."""
    import csv

    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "camera", "burst", "score", "context_state", "context_score", "decision"])
        for r in rows:
            a = r.assessment
            writer.writerow([
                r.frame.path, r.frame.label, r.camera, r.burst, "" if r.score is None else f"{r.score:.6f}",
                a.state if a else "", "" if a is None or a.score is None else f"{a.score:.6f}", r.verdict or "",
            ])  # fmt: skip
