"""The Labels CSV contract: `path,label[,location,sequence]`, paths relative to the CSV.

`label` is one of blank, animal, human, vehicle; anything but blank is non-blank. Extra columns
are ignored. Rows that cannot be used are errors naming the file and line, never silently dropped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from firmware_app.errors import BlankfilterError

LABELS = ("blank", "animal", "human", "vehicle")


class LabelsError(BlankfilterError, ValueError):
    """A labels CSV row or header is wrong; the message names the file and the line."""


@dataclass(frozen=True)
class LabelledFrame:
    path: Path
    label: str
    location: str
    sequence: str  # burst id; empty when the dataset has none
    camera: str = ""  # camera id, when the dataset has one (camera-context replay groups by it)
    taken: str = ""  # capture time (the `datetime` column), when known: the replay's time order

    @property
    def nonblank(self) -> bool:
        return self.label != "blank"


def read_labels(csv_path: Path) -> list[LabelledFrame]:
    try:
        handle = csv_path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise LabelsError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise LabelsError(
                f"{csv_path}: header lacks {', '.join(sorted(missing))} (expected path,label[,location,sequence])"
            )
        frames = []
        for line, row in enumerate(reader, start=2):
            label = (row.get("label") or "").strip().lower()
            if label not in LABELS:
                raise LabelsError(f"{csv_path}:{line}: label {row.get('label')!r}; expected one of {', '.join(LABELS)}")
            rel = (row.get("path") or "").strip()
            if not rel:
                raise LabelsError(f"{csv_path}:{line}: empty path")
            frames.append(
                LabelledFrame(
                    path=csv_path.parent / rel,
                    label=label,
                    location=(row.get("location") or "").strip(),
                    sequence=(row.get("sequence") or "").strip(),
                    camera=(row.get("camera") or "").strip(),
                    taken=(row.get("datetime") or "").strip(),
                )
            )
    if not frames:
        raise LabelsError(f"{csv_path}: no rows")
    return frames
