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
from firmware_app.context import Assessment, CameraContext, ContextSettings, FrameFacts, lighting_mode
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
    references: tuple[str, ...] = ()  # deployment mode: the frames its burst's fresh bank held, in order
    reference_modes: tuple[str, ...] = ()  # and each one's lighting mode (the veto reads the frame's mode's)

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


def lighting(judge: Judge, data: bytes) -> str | None:
    """A frame's lighting mode as the trap sees it (None: it cannot be decoded)."""
    views = judge.prepare_jpeg(data, NO_CAMERA)  # the classifier's view only
    return lighting_mode(views.prepared.exposure) if views.prepared is not None else None


def seed(judge: Judge, camera: str, rows: list[ReplayFrame], seed_blanks: int) -> None:
    """The first `seed_blanks` known blanks of each lighting mode become references (their info bars
    found across them, as `reference add` does), tagged with their burst so that no frame is ever
    compared with its own burst."""
    seeded: Counter[str] = Counter()
    chosen: list[tuple[ReplayFrame, bytes]] = []
    for row in rows:
        data = None if row.y else _read(row)
        mode = lighting(judge, data) if data is not None else None
        if data is None or mode is None or seeded[mode] >= seed_blanks:
            continue
        seeded[mode] += 1
        chosen.append((row, data))
    outcomes = judge.add_references(camera, [(data, str(row.frame.path)) for row, data in chosen],
                                    bursts=[row.burst for row, _ in chosen],
                                    times=[float(row.index) for row, _ in chosen])  # fmt: skip
    for (row, _), outcome in zip(chosen, outcomes, strict=True):
        row.seed = not isinstance(outcome, ImageError)


def frame_time(row: ReplayFrame, views: Views) -> float:
    """The replay's clock: the CSV's capture time, else the frame's EXIF time, else its place in order."""
    captured = views.prepared.captured_at if views.prepared else None
    ts = _taken_ts(row.frame.taken) or (captured.replace(tzinfo=UTC).timestamp() if captured else None)
    return float(row.index) if ts is None else ts


def judge_burst(judge: Judge, camera: str, burst: str, frames: list[ReplayFrame], learn: bool) -> None:
    """One burst, exactly as the trap's loops judge it: see every frame, decide the burst, and (in
    time order) let a discarded burst top the bank up."""
    judge.refresh()  # the bank may have grown: which cameras want a feature pass, and their crops
    candidates, learnable = [], []
    for row in frames:
        data = _read(row)
        views = judge.prepare_jpeg(data, camera) if data is not None else Views(None, None, "cannot read")
        row.sha256 = sha256_bytes(data) if data is not None else ""
        ts = frame_time(row, views)
        seen = judge.see(views, camera, FrameFacts(str(row.frame.path), row.sha256, ts, burst, None, judge.cutoff))
        row.score, row.assessment = seen.score, seen.assessment
        row.mode = seen.assessment.mode if seen.assessment else row.mode
        gamma = seen.prepared.gamma if seen.prepared else None
        candidates.append(Candidate(row.index, str(row.frame.path), row.sha256, ts, burst, seen.score,
                                    seen.context_score, gamma, seen.context_state))  # fmt: skip
        learnable.append(top_up_frame(str(row.frame.path), row.sha256, ts, seen))
    verdict = judge.decide(candidates, low_disk=False, on_disk=True, key=burst)
    for row, v in zip(frames, verdict.verdicts, strict=True):
        row.verdict = v
    if learn and verdict.blank:
        judge.learn(camera, burst, learnable)


def bursts_of(rows: list[ReplayFrame]) -> dict[str, list[ReplayFrame]]:
    bursts: dict[str, list[ReplayFrame]] = {}
    for row in rows:
        bursts.setdefault(row.burst, []).append(row)
    return bursts


def replay_camera(judge: Judge, camera: str, rows: list[ReplayFrame]) -> None:
    """Judge, decide and learn burst by burst, in time order, with the trap's own judge."""
    for burst, frames in bursts_of(rows).items():
        judge_burst(judge, camera, burst, frames, learn=True)


def group_by_camera(frames: list[LabelledFrame]) -> dict[str, list[ReplayFrame]]:
    by_camera: dict[str, list[LabelledFrame]] = {}
    for frame, camera in zip(frames, camera_keys(frames), strict=True):
        by_camera.setdefault(camera, []).append(frame)
    return {
        camera: [
            ReplayFrame(f, camera, f"{camera}|{f.sequence or f.path.name}", i) for i, f in enumerate(time_order(group))
        ]
        for camera, group in sorted(by_camera.items())
    }


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
    """Time order: `config` is the trap's (the classifier cutoff, context.max_references); `settings`
    the context's. The bank of each camera starts from `references` (else seeds) and grows by top-up."""
    known: dict[str, list[LabelledFrame]] = {}
    for frame, camera in zip(references or [], camera_keys(references or []), strict=True):
        known.setdefault(camera, []).append(frame)
    out: list[ReplayFrame] = []
    with progress_bar("replaying", show_progress) as bar:
        task = bar.add_task("replaying", total=len(frames))
        for camera, rows in group_by_camera(frames).items():
            bank = ReferenceBank(Path(":memory:"), extractor.card.label, config.context.max_references)
            context = CameraContext(extractor, bank, settings) if camera != NO_CAMERA else None
            judge = Judge(config, classifier, context, imaging)
            if context is not None:
                if references is not None:
                    refs = [(ref.path.read_bytes(), str(ref.path)) for ref in known.get(camera, [])]
                    judge.add_references(camera, refs)
                else:
                    seed(judge, camera, rows, seed_blanks)
            replay_camera(judge, camera, rows)
            bank.close()
            out.extend(rows)
            bar.advance(task, len(rows))
    return out


def deployment(
    frames: list[LabelledFrame],
    classifier: Classifier,
    extractor: FeatureExtractor,
    settings: ContextSettings,
    config: Config,
    per_mode: int = 3,
    min_gap_h: float = 2.0,
    imaging: ImagingSettings | None = None,
    show_progress: bool = True,
) -> list[ReplayFrame]:
    """Deployment mode: every burst judged as a user sets a trap up. A fresh bank per burst holds up
    to `per_mode` known blanks of the same camera for each lighting mode, drawn (reproducibly) from
    its other bursts at least `min_gap_h` hours away when capture times are known, never the frame or
    its burst; `reference add` adds them (their info bars found across them); no top-up. A burst
    whose camera has no such blanks is decided by the classifier, as on a trap before references."""
    out: list[ReplayFrame] = []
    with progress_bar("deployment replay", show_progress) as bar:
        task = bar.add_task("deployment replay", total=len(frames))
        for camera, rows in group_by_camera(frames).items():
            plain = Judge(config, classifier, None, imaging)
            pool = _reference_pool(plain, rows) if camera != NO_CAMERA else []
            for burst, members in bursts_of(rows).items():
                picked = _pick(pool, burst, [frame_time(r, Views(None, None, None)) for r in members],
                               per_mode, min_gap_h)  # fmt: skip
                bank = ReferenceBank(Path(":memory:"), extractor.card.label, config.context.max_references)
                judge = Judge(config, classifier, CameraContext(extractor, bank, settings), imaging)
                if picked:
                    judge.add_references(camera, [(data, str(r.frame.path)) for r, data, _, _ in picked],
                                         bursts=[r.burst for r, *_ in picked])  # fmt: skip
                for row in members:
                    row.references = tuple(str(r.frame.path) for r, *_ in picked)
                    row.reference_modes = tuple(mode for _, _, mode, _ in picked)
                judge_burst(judge if picked else plain, camera, burst, members, learn=False)
                bank.close()
                bar.advance(task, len(members))
            out.extend(rows)
    return out


def _reference_pool(judge: Judge, rows: list[ReplayFrame]) -> list[tuple[ReplayFrame, bytes, str, float | None]]:
    """The camera's known blanks that could serve as references: (row, bytes, lighting mode, time)."""
    pool = []
    for row in rows:
        data = None if row.y else _read(row)
        mode = lighting(judge, data) if data is not None else None
        if data is not None and mode is not None:
            pool.append((row, data, mode, _taken_ts(row.frame.taken)))
    return pool


def _pick(
    pool: list[tuple[ReplayFrame, bytes, str, float | None]],
    burst: str,
    times: list[float],
    per_mode: int,
    min_gap_h: float,
) -> list[tuple[ReplayFrame, bytes, str, float | None]]:
    """Up to `per_mode` references per lighting mode from other bursts, far enough in time, in a
    random order seeded by the burst (reproducible, and not biased toward the nearest frames)."""
    import random

    known_times = [t for t in times if t is not None and t > 1e6]  # real times, not the index clock
    eligible = [
        item for item in pool
        if item[0].burst != burst
        and not (known_times and item[3] is not None and min(abs(item[3] - t) for t in known_times) < min_gap_h * 3600)
    ]  # fmt: skip
    random.Random(burst).shuffle(eligible)
    picked: list[tuple[ReplayFrame, bytes, str, float | None]] = []
    counts: Counter[str] = Counter()
    for item in eligible:
        if counts[item[2]] < per_mode:
            counts[item[2]] += 1
            picked.append(item)
    return picked


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
    """Per frame, what the judge decided: the same columns the trap's ledger holds for a frame; in
    deployment mode also `references`, the frames its burst was judged against (a JSON list of paths,
    in the order they were added: `reference add` of exactly these reproduces it on a trap)."""
    import csv
    import json

    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "camera", "burst", "score", "context_state", "context_score", "decision",
                         "references"])  # fmt: skip
        for r in rows:
            a = r.assessment
            writer.writerow([
                r.frame.path, r.frame.label, r.camera, r.burst, "" if r.score is None else f"{r.score:.6f}",
                a.state if a else "", "" if a is None or a.score is None else f"{a.score:.6f}", r.verdict or "",
                json.dumps(list(r.references)) if r.references else "",
            ])  # fmt: skip
