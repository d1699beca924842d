"""What scripts/demo shows after its run: each burst's decision and why, as the trap recorded it in its
ledger (nothing is decided again here), the decisions against the fixture labels, and where it all went.

    python scripts/demo_report.py --config examples/demo.toml --labels tests/fixtures/frames/labels.csv
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from convert.labels import LabelledFrame, read_labels
from firmware_app.actions import FOLDERS, KEPT_ACTIONS, Action, ContextState, Verdict
from firmware_app.config import Config, load_config
from firmware_app.context.bank import freshness
from firmware_app.context.extractor import default_extractor_path
from firmware_app.decision import camera_of, frame_decision
from firmware_app.ledger import name_from_db, printable
from firmware_app.modelcard import load_card
from firmware_app.sqlite_tx import connect_ro


@dataclass(frozen=True)
class Row:
    """One frame as the run recorded it (the ledger's `frames` table)."""

    path: str
    burst: str
    score: float | None
    context_score: float | None
    context_state: str | None
    cutoff: float
    decision: str
    action: str
    dest: str | None
    captured_at: str
    time_source: str
    error: str | None

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def kept(self) -> bool:
        return self.action in KEPT_ACTIONS


@dataclass(frozen=True)
class Context:
    """What camera context was set to in the run: its cutoff and the classifier's veto."""

    cutoff: float
    veto: float


def read_rows(ledger: Path) -> list[Row]:
    db = connect_ro(ledger)
    try:
        rows = db.execute(
            "SELECT path, burst, score, context_score, context_state, cutoff, decision, action, dest, captured_at,"
            " time_source, error FROM frames WHERE burst IS NOT NULL ORDER BY captured_ts, path"
        ).fetchall()
    finally:
        db.close()
    return [row_of(tuple(r)) for r in rows]


def row_of(r: tuple[Any, ...]) -> Row:
    path, dest = name_from_db(r[0]) or "", name_from_db(r[8])  # a name that is not UTF-8: shown escaped
    return Row(printable(path), r[1], r[2], r[3], r[4], r[5], r[6], r[7], printable(dest) if dest else None,
               r[9], r[10], r[11])  # fmt: skip


def bursts_of(rows: list[Row]) -> list[list[Row]]:
    """The bursts as the trap grouped them (the ledger's `burst` column), camera by camera, in time order."""
    by_burst: dict[str, list[Row]] = {}
    for row in rows:
        by_burst.setdefault(row.burst, []).append(row)
    return sorted(by_burst.values(), key=lambda b: (camera_of(b[0].path), b[0].captured_at))


def context_in_force(config: Config) -> Context:
    cutoff = config.context.cutoff
    if cutoff is None:
        extractor = Path(config.context.extractor) if config.context.extractor else default_extractor_path()
        cutoff = load_card(extractor).cutoff
    return Context(cutoff, config.context.veto)


# -- why ---------------------------------------------------------------------------------------------
def frame_reason(row: Row, ctx: Context) -> str:
    """Why the judge called this frame non-blank, from what it recorded for it."""
    if row.decision == Verdict.UNKNOWN:
        return f"could not be scored ({row.error}), and what cannot be seen is never discarded"
    classifier = f"scores {row.score:.3f} against the cutoff {row.cutoff:.3f}"
    state = row.context_state
    if state == ContextState.MATCHED:
        return (f"differs from the camera's empty references where an animal would: context score "
                f"{row.context_score:.3f} against its cutoff {ctx.cutoff:.3f} (context matched)")  # fmt: skip
    if state == ContextState.VETOED:
        return (f"{classifier}; context matched (context score {row.context_score:.3f} against its cutoff "
                f"{ctx.cutoff:.3f}), but the classifier is sure of an animal here (p over {ctx.veto:.2f}, well clear "
                "of this camera's empty frames), so it decides")  # fmt: skip
    if state in (ContextState.DRIFT, ContextState.INCONSISTENT):
        why = (
            "the whole scene differs from the references" if state == ContextState.DRIFT else "its references disagree"
        )
        return (f"{classifier}, context score {row.context_score:.3f} against {ctx.cutoff:.3f}; {why} ({state}), "
                "so a frame is empty only if both say so")  # fmt: skip
    return f"{classifier} (no references for this camera: the classifier decides alone)"


def surest(kept: Sequence[Row]) -> Row:
    """The frame that kept the burst: the one furthest over its cutoff (unscored frames first)."""

    def margin(row: Row) -> float:
        if row.score is None:
            return float("inf")
        if row.context_state == ContextState.MATCHED and row.context_score is not None:
            return row.context_score  # the context score decided this frame
        return row.score

    return max(kept, key=margin)


def where(burst: Sequence[Row], store: Path) -> str:
    folders = sorted({str(PurePosixPath(r.dest).parent) for r in burst if r.dest})
    if not folders:
        return "deleted" if any(r.action == Action.DELETED for r in burst) else "left in the inbox"
    return ", ".join(rel(store / folder) + "/" for folder in folders)


def decision_line(burst: Sequence[Row], ctx: Context, store: Path) -> str:
    """One plain line: what was decided, why, and where the frames went."""
    nonblank = [r for r in burst if r.decision != Verdict.BLANK]
    whole = " whole" if len(burst) > 1 else ""
    if any(r.kept for r in burst):
        best = surest(nonblank)
        shows = "one frame shows an animal" if len(nonblank) == 1 else f"{len(nonblank)} frames may show an animal"
        lead = f"{shows}: {best.name}" if len(burst) > 1 else best.name
        return f"KEPT{whole}: {lead} {frame_reason(best, ctx)} -> {where(burst, store)}"
    audited = any(r.action == Action.AUDIT for r in burst)
    verb = (
        f"AUDITED: discarded{whole} as empty, and kept as the audit sample" if audited else f"DISCARDED{whole} as empty"
    )
    return f"{verb}: {empty_reason(burst, ctx)} -> {where(burst, store)}"


def empty_reason(burst: Sequence[Row], ctx: Context) -> str:
    scores = [r.score for r in burst if r.score is not None]
    if all(r.context_state == ContextState.MATCHED for r in burst):
        top = max(r.context_score or 0.0 for r in burst)
        alone = [frame_decision(r.score, r.cutoff) for r in burst]  # the trap's own rule, without context
        would = "would have kept it" if Verdict.NONBLANK in alone else "would have discarded it too"
        return (f"every frame matches the camera's empty references (context scores at most {top:.3f}, under its "
                f"cutoff {ctx.cutoff:.3f}); the classifier alone {would} (best {max(scores):.3f} against "
                f"{burst[0].cutoff:.3f})")  # fmt: skip
    return f"every frame scores under the cutoff {burst[0].cutoff:.3f} (highest {max(scores):.3f})"


def heading(index: int, burst: Sequence[Row]) -> str:
    first, last = burst[0], burst[-1]
    names = first.path if len(burst) == 1 else f"{first.path} .. {last.name}"
    clock = "camera clock (EXIF)" if first.time_source == "exif" else "file time"
    taken = first.captured_at[:16].replace("T", " ")
    frames = "1 frame" if len(burst) == 1 else f"{len(burst)} frames"
    return f"{index}. {names} ({frames}, taken {taken}, {clock})"


# -- against the labels ------------------------------------------------------------------------------
@dataclass
class Tally:
    """The decisions against the labels, per burst."""

    animal_kept: int = 0
    animal: int = 0
    empty_discarded: int = 0
    empty: int = 0
    unlabelled: int = 0

    def add(self, burst: Sequence[Row], labels: dict[str, LabelledFrame]) -> None:
        known = [labels[r.path] for r in burst if r.path in labels]
        kept = any(r.kept for r in burst)
        if not known:
            self.unlabelled += 1
        elif any(f.nonblank for f in known):
            self.animal, self.animal_kept = self.animal + 1, self.animal_kept + kept
        else:
            self.empty, self.empty_discarded = self.empty + 1, self.empty_discarded + (not kept)

    def line(self) -> str:
        right, labelled = self.animal_kept + self.empty_discarded, self.animal + self.empty
        lost = self.animal - self.animal_kept
        return (f"Against labels.csv: {right} of {labelled} labelled bursts right, {labelled - right} wrong: "
                f"{self.animal_kept} of {self.animal} animal bursts kept ({lost} lost), {self.empty_discarded} of "
                f"{self.empty} empty bursts discarded; {self.unlabelled} burst(s) not labelled.")  # fmt: skip


def label_line(burst: Sequence[Row], labels: dict[str, LabelledFrame]) -> str:
    """The burst's label (animal if any of its frames is) against the decision: RIGHT or WRONG."""
    known = [labels[r.path] for r in burst if r.path in labels]
    if not known:
        return "labels.csv: not labelled"
    animal = any(f.nonblank for f in known)
    kept = any(r.kept for r in burst)
    empties = sum(not f.nonblank for f in known)
    if animal and kept:
        extra = f" ({empties} of its frames are empty: kept with it, a burst is kept whole)" if empties else ""
        return f"labels.csv: animal -> RIGHT{extra}"
    if not animal and not kept:
        return "labels.csv: empty -> RIGHT"
    if animal:
        return "labels.csv: animal -> WRONG: an animal burst was discarded"
    return "labels.csv: empty -> WRONG: an empty burst was kept (it costs storage; no animal is lost)"


def label_index(csv_path: Path) -> dict[str, LabelledFrame]:
    return {f.path.relative_to(csv_path.parent).as_posix(): f for f in read_labels(csv_path)}


# -- the report --------------------------------------------------------------------------------------
def rel(path: Path) -> str:
    text = os.path.relpath(path)
    return text if not text.startswith("..") else str(path)


def context_section(config: Config, rows: list[Row]) -> list[str]:
    refs = freshness(config.bank_path)
    lines = ["== Camera context (references: empty frames of a camera, given once at set-up)"]
    with_refs = sorted({str(r["camera"]) for r in refs})
    for r in refs:
        lines.append(f"{r['camera']} ({r['mode']}): {r['references']} reference(s): {r['manual']} added by hand, "
                     f"{r['auto']} learned from bursts it discarded, {r['capture']} captured")  # fmt: skip
    others = sorted({camera_of(r.path) for r in rows} - set(with_refs))
    if others:
        lines.append(f"{', '.join(others)}: no references, so the classifier decides alone there")
    return lines


def summary(config: Config, bursts: list[list[Row]], outbox: int, tally: Tally) -> list[str]:
    store = config.store.root
    kept = [b for b in bursts if any(r.kept for r in b)]
    audited = [b for b in bursts if b not in kept and any(r.action == Action.AUDIT for r in b)]
    discarded = [b for b in bursts if b not in kept and b not in audited]
    frames = sum(len(b) for b in bursts)

    def n(group: list[list[Row]]) -> str:
        return f"{sum(len(b) for b in group)} frame(s) in {len(group)} burst(s)"

    discard_to = rel(store / FOLDERS[Action.QUARANTINED]) + "/" if config.store.discard == "quarantine" else ""
    lines = [
        "== In short",
        f"{frames} frames in {len(bursts)} bursts were looked at.",
        f"Kept:      {n(kept)}, in {rel(store / 'kept')}/: an animal, or maybe one.",
        f"Discarded: {n(discarded)} as empty"
        + (f", set aside in {discard_to} (store.discard = \"quarantine\"; a field trap set to \"delete\" removes them)"
           if discard_to else f" ({config.store.discard})"),
        f"Audited:   {n(audited)}: empty bursts kept anyway in {rel(store / 'audit')}/ "
        f"(a share of store.audit_rate = {config.store.audit_rate}) so a person can check what is discarded",
        f"Events:    {outbox} event(s) wait in the ledger's outbox for an MQTT broker; to send them: "
        f"blankfilter run --once --config {rel(Path(config.origin))} --set mqtt.host=BROKER",
        f"Ledger:    {rel(config.ledger_path)}: every frame's score, decision and destination "
        f"(blankfilter stats --config {rel(Path(config.origin))})",
        tally.line(),
    ]  # fmt: skip
    return lines


def report(config: Config, labels_csv: Path) -> list[str]:
    rows = read_rows(config.ledger_path)
    bursts, ctx, labels = bursts_of(rows), context_in_force(config), label_index(labels_csv)
    lines = [*context_section(config, rows), "", f"== Burst by burst (from {rel(config.ledger_path)})"]
    tally = Tally()
    for index, burst in enumerate(bursts, start=1):
        tally.add(burst, labels)
        lines += [heading(index, burst), "   " + decision_line(burst, ctx, config.store.root),
                  "   " + label_line(burst, labels)]  # fmt: skip
    lines.append("")
    return lines + summary(config, bursts, outbox_waiting(config.ledger_path), tally)


def outbox_waiting(ledger: Path) -> int:
    db = connect_ro(ledger)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0])
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True, help="the labels of the frames (path,label,...)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    try:
        lines = report(config, args.labels)
    except sqlite3.Error as exc:
        print(f"cannot read {config.ledger_path}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
