"""Score labelled frames with a TFLite model, exactly as the trap would (same preprocessing, same
runtime), and keep the scores in a CSV so tuning and plots do not need the model again."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convert.labels import LabelledFrame
from firmware_app.classifiers import Classifier
from firmware_app.errors import ImageError
from firmware_app.imaging import ImagingSettings, prepare_jpeg

SCORE_COLUMNS = ("path", "label", "location", "sequence", "score", "gamma", "error")


@dataclass(frozen=True)
class ScoredFrame:
    path: str
    label: str
    location: str
    sequence: str
    score: float | None  # None: the frame could not be decoded (the trap would keep it)
    gamma: float | None
    error: str | None

    @property
    def y(self) -> int:
        return int(self.label != "blank")

    @property
    def burst(self) -> str:
        """Frames of one trigger; a frame without a sequence is a burst of its own."""
        return f"{self.location}|{self.sequence}" if self.sequence else f"frame|{self.path}"


def progress_bar(label: str, enabled: bool = True) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


def score_frames(
    frames: list[LabelledFrame], classifier: Classifier, settings: ImagingSettings, show_progress: bool = True
) -> list[ScoredFrame]:
    scored = []
    with progress_bar("scoring", show_progress) as bar:
        task = bar.add_task("scoring", total=len(frames))
        for frame in frames:
            score = gamma = error = None
            try:
                prepared = prepare_jpeg(frame.path.read_bytes(), classifier.card.input, settings)
                score, gamma = classifier.score(prepared.pixels), prepared.gamma
            except OSError as exc:
                error = f"cannot read: {exc.strerror or exc}"
            except ImageError as exc:
                error = str(exc)
            scored.append(
                ScoredFrame(str(frame.path), frame.label, frame.location, frame.sequence, score, gamma, error)
            )
            bar.advance(task)
    return scored


def usable(scored: Iterable[ScoredFrame]) -> list[ScoredFrame]:
    """Frames with a score. The others would be kept by the trap (fail open); metrics leave them
    out and the reports count them."""
    return [f for f in scored if f.score is not None]


def write_scores(scored: list[ScoredFrame], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(SCORE_COLUMNS)
        for f in scored:
            writer.writerow([f.path, f.label, f.location, f.sequence, f.score, f.gamma, f.error or ""])


def read_scores(path: Path) -> list[ScoredFrame]:
    """Scores written by `write_scores` (or by hand: path,label,score at least)."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            score = float(row["score"]) if row.get("score") not in (None, "", "None") else None
            gamma = float(row["gamma"]) if row.get("gamma") not in (None, "", "None") else None
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}:{line}: bad score row ({exc})") from None
        out.append(
            ScoredFrame(
                row.get("path", ""),
                (row.get("label") or "").strip().lower(),
                row.get("location") or "",
                row.get("sequence") or "",
                score,
                gamma,
                row.get("error") or None,
            )
        )
    return out
