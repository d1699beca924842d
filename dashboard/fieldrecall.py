"""The field-recall figure per trap and camera, its series over time, the proposals that close the
loop, and the exports (CSV, JSON, a Labels CSV for `blankfilter tune/eval`).

A proposal is made when a camera's upper bound on the share of discarded bursts that held an
animal passes the monitor's limit (`--recall-limit`): the camera's cutoff lowered below its lowest
missed burst's best score (`--cutoff-margin`). It is only a proposal: the operator confirms it on the
page, and the monitor publishes `<base>/set/cutoff/<camera>` only when the trap said (its retained
`<base>/config`) that it takes remote cutoffs.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from dashboard import recall
from dashboard.csvexport import safe_cell
from dashboard.reviews import MISSED, Reviews
from dashboard.store import Store

CSV_COLUMNS = ("trap", "camera", "day", "discarded", "audited", "kept", "received", "reviewed", "misses", "share",
               "share_upper", "recall_lower", "recall_estimate")  # fmt: skip
LABEL_COLUMNS = ("path", "label", "location", "sequence", "camera", "datetime")


@dataclass(frozen=True)
class Settings:
    limit: float = 0.05  # a camera whose upper bound passes this gets a proposal
    margin: float = 0.1  # the proposal sits this share below the lowest missed burst's best score


class FieldRecall:
    def __init__(self, store: Store, reviews: Reviews, settings: Settings | None = None) -> None:
        self.store, self.reviews, self.settings = store, reviews, settings or Settings()

    def cameras(self, trap: str | None = None) -> list[dict[str, Any]]:
        """One entry per trap and camera: the figure now, the alarm and the proposal."""
        out, waiting = [], {}  # waiting: trap -> its cutoffs not in force yet (one query per trap)
        for t in self.reviews.tallies():
            if trap is not None and t["trap"] != trap:
                continue
            counts = self.reviews.latest_counts(t["trap"], t["camera"])
            entry = {"trap": t["trap"], "camera": t["camera"],
                     **recall.figure(*_counts(counts), t["received"], t["reviewed"], t["misses"])}  # fmt: skip
            entry.update(self._alarm(t["trap"], t["camera"], entry))
            if t["trap"] not in waiting:
                waiting[t["trap"]] = self.reviews.waiting_cutoffs(t["trap"])
            entry["cutoff_waiting"] = waiting[t["trap"]].get(t["camera"])
            out.append(entry)
        return out

    def camera(self, trap: str, camera: str) -> dict[str, Any] | None:
        return next((c for c in self.cameras(trap) if c["camera"] == camera), None)

    def _alarm(self, trap: str, camera: str, entry: dict[str, Any]) -> dict[str, Any]:
        limit = self.settings.limit
        upper = entry["share_upper"]
        more = max(0, recall.reviews_needed(limit) - entry["reviewed"]) if entry["misses"] == 0 else None
        over = upper is not None and upper > limit
        alarm: dict[str, Any] = {"limit": limit, "over_limit": over, "reviews_needed": more, "proposal": None}
        if not over or entry["misses"] == 0:
            return alarm
        config = self.store.config(trap) or {}
        current = self.current_cutoff(trap, camera, config)
        p = recall.propose_cutoff(self.reviews.missed_scores(trap, camera), current, self.settings.margin)
        alarm["proposal"] = {
            "cutoff": p.cutoff,
            "current": p.current,
            "lowest_missed_score": p.lowest_missed_score,
            "why": p.why,
            "remote_cutoff": remote_cutoff_on(config),
        }
        return alarm

    def current_cutoff(self, trap: str, camera: str, config: dict[str, Any]) -> float | None:
        """The camera's own cutoff the trap echoed, else the one its latest audit was judged with,
        else the trap's cutoff."""
        own = (config.get("camera_cutoffs") or {}).get(camera)
        if isinstance(own, int | float):
            return float(own)
        latest = self.reviews.latest_cutoff(trap, camera)
        if latest is not None:
            return latest
        card = self.store.trap(trap)
        return card["cutoff"] if card else None

    def series(self, trap: str, camera: str) -> list[dict[str, Any]]:
        """The figure day by day (the trap's clock): audits captured up to the day, counts reported by then."""
        return [{"day": day, **recall.figure(*_counts(counts), received, reviewed, misses)}
                for day, received, reviewed, misses, counts in self.reviews.days(trap, camera)]  # fmt: skip

    # -- exports ----------------------------------------------------------------------------------
    def export(self, trap: str | None = None) -> dict[str, Any]:
        cameras = [{**c, "series": self.series(c["trap"], c["camera"])} for c in self.cameras(trap)]
        return {"confidence": recall.CONFIDENCE, "limit": self.settings.limit, "cameras": cameras}

    def csv_text(self, trap: str | None = None) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for c in self.cameras(trap):
            for point in self.series(c["trap"], c["camera"]):
                row = {"trap": c["trap"], "camera": c["camera"], **point}
                writer.writerow([safe_cell(_cell(row[k])) for k in CSV_COLUMNS])
        return buf.getvalue()

    def labels_csv(self, trap: str | None = None) -> str:
        """One row per frame of every reviewed audit: `path` relative to the trap's store.root (put the
        file there, next to audit/), `label` blank or animal, the trap as `location`, the burst as
        `sequence`: the Labels CSV of `blankfilter tune` and `eval`."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(LABEL_COLUMNS)
        for audit, verdict in self.reviews.labelled(trap):
            label = "animal" if verdict == MISSED else "blank"
            for frame in audit["frames"]:
                path = PurePosixPath(frame["file"])
                if path.is_absolute() or ".." in path.parts:
                    continue  # a path outside the store cannot be a row relative to it
                writer.writerow([safe_cell(v) for v in (frame["file"], label, audit["trap"], audit["burst"],
                                                        audit["camera"], audit["first_capture"])])  # fmt: skip
        return buf.getvalue()


def remote_cutoff_on(config: dict[str, Any]) -> bool:
    """The trap echoes its config only when it takes remote cutoffs; a newer trap also says so."""
    return bool(config) and config.get("remote_cutoff", True) is True


def _counts(row: sqlite3.Row | None) -> tuple[int | None, int | None, int | None]:
    if row is None:
        return None, None, None
    return row["discarded"], row["audited"], row["kept"]


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
