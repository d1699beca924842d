"""The names the trap writes into its ledger: what happened to a frame, and where it stands.

One place for each: the store, the ledger (its SQL included), both loops and `stats` use these
members, so a new action cannot be written in one place and missed in another. They are `StrEnum`s,
so the ledger's text columns hold exactly these values and old ledgers read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A frame's row moves through these, each committed before the next file operation."""

    SCORED = "scored"  # hashed and scored (or failed); the file is still in the inbox, untouched
    DECIDED = "decided"  # its burst was decided; action and destination are durable before any file moves
    DONE = "done"  # the file operation finished (or there was none)


class Verdict(StrEnum):
    """The judge's call on one frame (the ledger's `decision` column)."""

    BLANK = "blank"
    NONBLANK = "nonblank"
    UNKNOWN = "unknown"  # could not be decoded or scored: kept (fail open)


class Action(StrEnum):
    """What the trap did with a frame (the ledger's `action` column)."""

    KEPT = "kept"  # non-blank: kept/
    FAILED_KEPT = "failed_kept"  # could not be scored: kept/ (fail open)
    AUDIT = "audit"  # blank, in the audit sample: audit/
    QUARANTINED = "quarantined"  # blank, held back a while: quarantine/
    BLANK_KEPT = "blank_kept"  # blank, store.discard = keep: blank/
    DELETED = "deleted"  # blank, removed from the inbox
    NOT_WRITTEN = "not_written"  # blank from a camera source: never written to the card
    VANISHED = "vanished"  # someone else removed the file before its action could finish
    SUPERSEDED = "superseded"  # its file changed after it was read (an upload not finished): judged again, anew
    QUARANTINE_EXPIRED = "quarantine_expired"  # was quarantined; pruned by age, size or free space


class ContextState(StrEnum):
    """What camera context made of a frame (the ledger's `context_state` column)."""

    MATCHED = "matched"  # compared with references: the context score decides
    VETOED = "vetoed"  # matched, but the classifier is sure of an animal and trusted here: it decides
    DRIFT = "drift"  # the whole scene differs from the references: the classifier decides
    INCONSISTENT = "inconsistent"  # the references disagree with each other: the classifier decides
    NO_REFERENCES = "no_references"  # none for this camera and lighting mode yet
    CAPTURED = "captured"  # taken as a reference by the deployment capture step
    FAILED = "failed"  # the extractor failed on this frame: the classifier decides


# Where each action puts the frame, under store.root; actions missing here write no file.
FOLDERS: dict[Action, str] = {
    Action.KEPT: "kept",
    Action.FAILED_KEPT: "kept",
    Action.AUDIT: "audit",
    Action.QUARANTINED: "quarantine",
    Action.BLANK_KEPT: "blank",
}

# What `run --dry-run` says it would do with a frame (it moves, deletes and records nothing).
WOULD: dict[Action, str] = {
    Action.KEPT: "would keep",
    Action.FAILED_KEPT: "would keep (could not be scored)",
    Action.AUDIT: "would keep for the audit",
    Action.QUARANTINED: "would quarantine",
    Action.BLANK_KEPT: "would keep as blank",
    Action.DELETED: "would delete",
    Action.NOT_WRITTEN: "would not write",
}

KEPT_ACTIONS = (Action.KEPT, Action.FAILED_KEPT)
DISCARD_ACTIONS = (
    Action.DELETED,
    Action.NOT_WRITTEN,
    Action.QUARANTINED,
    Action.BLANK_KEPT,
    Action.AUDIT,
    Action.QUARANTINE_EXPIRED,
)


def sql_list(actions: tuple[Action, ...]) -> str:
    """`('kept', 'failed_kept')` for an SQL `IN`: the members are fixed names, never user input."""
    return "(" + ", ".join(f"'{a.value}'" for a in actions) + ")"
