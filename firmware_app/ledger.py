"""The ledger: one SQLite row per frame, the single source of truth across crashes and power cuts.

A frame moves through states, each committed before the next file operation:

    scored   - hashed and scored (or failed); the file is still in the inbox, untouched
    decided  - its burst was decided; action and destination are durable *before* any file moves
    done     - the file operation finished (moved, deleted, or left where it was)

(`actions.State`; a camera source's frames are written first and recorded `done` at once.)

A row whose file changed after it was read (an upload that stalled past `source.settle_s` and then
went on, a file rewritten in place) is closed `done` as `superseded` before anything is done to the
file: the decision was about other bytes. The file's new bytes are a new frame, with a row of their
own; a path never has two rows waiting at once.

After a crash, `scored` rows rejoin burst assembly and `decided` rows have their file operation
replayed (idempotently), so no frame is lost and none is processed twice.
WAL with synchronous=FULL: a committed decision survives a power cut, because a delete follows it.

File names are kept exactly. A name that is not UTF-8 (Latin-1 from a Windows or FAT card:
b"caf\xe9.jpg"; Python holds it as surrogates, as os.fsdecode gives it) cannot be SQLite text: its
`path` and `dest` are stored as the name's bytes (a BLOB, never equal to any text), and read back as
the same surrogates, so the file is found again. Messages naming such a file are stored escaped.

A damaged ledger (a bad page, a garbled header: SQLite's "malformed" or "not a database") raises
LedgerDamaged, a LedgerUnavailable: nothing is moved or deleted on its word. `run` checks the file
(PRAGMA quick_check) when it opens it and stops with exit code 2 (systemd does not restart it); a
daemon whose ledger goes bad mid-run backs off as for a full card. Read-only commands (`stats`,
`ledger check`) open it read-only (Ledger(path, read_only=True)): no migration, no write, so they
work on a full card; a version-1 ledger is reported as needing one `run` to upgrade it.

`blankfilter ledger recover` sets the damaged file aside (ledger.db.damaged-<UTC time>, with its
-wal and -shm) and starts a fresh ledger with a row per file already in the store (kept/, audit/,
quarantine/, blank/): state done, the folder's action, `decision` = 'recovered' (RECOVERED: the
judgement itself was lost), `path` the inbox-relative name (the store's -<hash> suffix taken off),
`dest` where the file is, its sha256 and size, so it is never judged again. Frames still in the
inbox have no row, and are judged as new by the next `run`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from firmware_app.actions import DISCARD_ACTIONS, KEPT_ACTIONS, Action, State, Verdict, sql_list
from firmware_app.errors import BlankfilterError, LedgerDamaged, LedgerUnavailable
from firmware_app.sqlite_tx import connect_ro, immediate

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: camera context columns; 3: outbox.kind (audit messages besides events)
SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id            INTEGER PRIMARY KEY,
    path          TEXT NOT NULL,      -- relative to the inbox, as found
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    captured_at   TEXT,               -- ISO 8601, from EXIF or the file time
    captured_ts   REAL NOT NULL,      -- seconds, for burst gaps
    time_source   TEXT NOT NULL,      -- exif | mtime | source
    burst_hint    TEXT,               -- burst id given by the source, if any
    burst         TEXT,               -- burst id assigned at decision time
    score         REAL,               -- p(non-blank); NULL when scoring failed
    context_score REAL,               -- camera-context score, when the frame was compared with references
    context_state TEXT,               -- actions.ContextState: matched | vetoed | drift | inconsistent |
                                      --   no_references | captured | failed
    cutoff        REAL,
    gamma         REAL,
    exposure      TEXT,               -- JSON: mean, shadows, highlights, greyscale
    decision      TEXT,               -- actions.Verdict: blank | nonblank | unknown (failed: kept)
    action        TEXT,               -- actions.Action: kept | failed_kept | audit | quarantined | blank_kept |
                                      --   deleted | not_written | vanished | superseded | quarantine_expired
    dest          TEXT,               -- where the file went (relative to store root)
    state         TEXT NOT NULL,      -- actions.State: scored | decided | done
    error         TEXT,               -- why the frame could not be decoded or scored
    store_error   TEXT,               -- why its file operation has not finished yet (cleared when it has)
    model         TEXT,
    model_version TEXT,
    seen_at       TEXT NOT NULL,
    decided_at    TEXT,
    done_at       TEXT,
    UNIQUE (path, sha256)
);
CREATE INDEX IF NOT EXISTS frames_state ON frames(state);
-- (indexes on columns added after version 1 are created after the migration, in Ledger.__init__)
CREATE INDEX IF NOT EXISTS frames_action ON frames(action, done_at);
CREATE TABLE IF NOT EXISTS skipped (
    path   TEXT PRIMARY KEY,
    size   INTEGER,
    mtime  REAL,
    reason TEXT NOT NULL,
    at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Events for MQTT, written in the same transaction as the burst's decision; delivered on PUBACK.
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    payload      TEXT NOT NULL,          -- JSON, as published
    created_at   TEXT NOT NULL,
    delivered_at TEXT,                   -- NULL until the broker acknowledged it (PUBACK)
    attempts     INTEGER NOT NULL DEFAULT 0,
    kind         TEXT NOT NULL DEFAULT 'event'  -- the topic it goes to: event | audit
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(delivered_at, id);
"""


RECOVERED = "recovered"  # `decision` of a row rebuilt by `ledger recover` from a file in the store
DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT "database disk image is malformed", SQLITE_NOTADB "file is not a database"
_F = TypeVar("_F", bound=Callable[..., Any])
NOT_DECIDED = (Action.SUPERSEDED, Action.VANISHED)  # rows that say nothing about their burst's verdict


def is_damage(exc: BaseException) -> bool:
    """Whether SQLite says the file itself is damaged (not full, locked or read-only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and isinstance(code, int) and code & 0xFF in DAMAGE_CODES


def damaged(path: Path | str, why: object) -> LedgerDamaged:
    return LedgerDamaged(
        f"the ledger {path} is damaged ({why}): nothing is moved or deleted while it is. Stop the trap, then "
        "`blankfilter ledger check` says what SQLite finds and `blankfilter ledger recover` sets the file aside "
        "and rebuilds the ledger from kept/, audit/ and quarantine/ (nothing is deleted)."
    )


def _guarded(method: _F) -> _F:
    """SQLite's damage errors, from any read or write of the ledger, become LedgerDamaged."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise damaged(self.path, exc) from None
            raise

    return wrapper  # type: ignore[return-value]


def problems(db: sqlite3.Connection, quick: bool = False) -> list[str]:
    """What SQLite's integrity_check (or quick_check) finds in an open ledger: [] when it is sound."""
    found = [str(r[0]) for r in db.execute(f"PRAGMA {'quick_check' if quick else 'integrity_check'}")]
    return [] if found == ["ok"] else found


def check(path: Path | str, quick: bool = False) -> list[str]:
    """`problems` of a ledger file, opened read-only."""
    try:
        db = connect_ro(path)
        try:
            return problems(db, quick)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return [str(exc)]
        raise


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def name_to_db(name: str | None) -> str | bytes | None:
    """A file name as the ledger stores it: text, or its bytes when it is not UTF-8 (lossless)."""
    if name is None:
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def name_from_db(value: str | bytes | None) -> str | None:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def printable(text: str) -> str:
    """Text safe to store, log or send: a non-UTF-8 name's bytes as escapes (caf\\xe9.jpg)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _text(text: str | None) -> str | None:
    return None if text is None else printable(text)


@dataclass(frozen=True)
class NewFrame:
    path: str
    sha256: str
    size: int
    captured_at: str | None
    captured_ts: float
    time_source: str
    burst_hint: str | None
    score: float | None
    gamma: float | None
    exposure: dict[str, Any] | None
    error: str | None
    model: str
    model_version: str
    context_score: float | None = None
    context_state: str | None = None


@dataclass(frozen=True)
class FrameRow:
    id: int
    path: str
    sha256: str
    size: int
    captured_at: str | None
    captured_ts: float
    burst_hint: str | None
    score: float | None
    decision: str | None
    action: str | None
    dest: str | None
    state: str
    error: str | None
    store_error: str | None
    model: str | None
    model_version: str | None
    context_score: float | None = None
    context_state: str | None = None
    gamma: float | None = None


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    payload: str  # JSON
    kind: str = "event"  # the topic under <base>/: event (a kept burst) | audit (an audited discarded one)


@dataclass(frozen=True)
class PendingEvent:
    id: int
    event_id: str
    payload: str
    created_at: str
    attempts: int
    kind: str = "event"


@dataclass(frozen=True)
class Decision:
    frame_id: int
    burst: str
    decision: Verdict
    action: Action
    dest: str | None
    cutoff: float


class Ledger:
    def __init__(self, path: Path | str, read_only: bool = False, verify: bool = True) -> None:
        """Open (and create, migrate and check) the ledger; `read_only`: as it is, never written;
        `verify=False`: no quick_check, for a second connection of a process that already made one."""
        self.path = path
        try:
            if read_only:
                self.db = connect_ro(path)
                self.db.row_factory = sqlite3.Row
                self._readable_as_is()
                return
            self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if verify and str(path) != ":memory:":
                found = problems(self.db, quick=True)
                if found:
                    self.db.close()
                    raise damaged(path, "; ".join(found[:3]))
            self.db.executescript(SCHEMA)
            self._migrate()
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise damaged(path, exc) from None
            raise

    def _readable_as_is(self) -> None:
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(frames)")}
        if not columns:
            raise BlankfilterError(f"{self.path} holds no ledger (no frames table)")
        if not {"context_score", "context_state"} <= columns:
            raise BlankfilterError(
                f"the ledger {self.path} is of an older version (schema 1): it needs `blankfilter run` once to "
                "upgrade it; this command only reads, so it leaves it as it is"
            )

    def _migrate(self) -> None:
        """Version 1 ledgers (before camera context) gain the context columns, version 2 ones the
        outbox's kind (their rows are all events, the column's default); nothing else changes."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(frames)")}
        for name, kind in (("context_score", "REAL"), ("context_state", "TEXT")):
            if name not in columns:
                self.db.execute(f"ALTER TABLE frames ADD COLUMN {name} {kind}")
                log.info("ledger %s: added column %s (schema version %d)", self.path, name, SCHEMA_VERSION)
        if "kind" not in {r[1] for r in self.db.execute("PRAGMA table_info(outbox)")}:
            self.db.execute("ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'event'")
            log.info("ledger %s: added column outbox.kind (schema version %d)", self.path, SCHEMA_VERSION)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction. A full or read-only card raises LedgerUnavailable: whatever was
        about to happen to a file must not happen, since the ledger could not say so first."""
        return immediate(self.db, self._unavailable, catch=sqlite3.OperationalError)

    def _unavailable(self, exc: sqlite3.Error) -> Exception:
        return LedgerUnavailable(
            f"cannot write the ledger {self.path} ({exc}): frames not yet recorded are left untouched "
            "in the inbox. Free space on the card (store.min_free_mb) or fix its permissions."
        )

    # -- frames -----------------------------------------------------------------------------
    def find(self, path: str, sha256: str) -> FrameRow | None:
        row = self.db.execute(
            "SELECT * FROM frames WHERE path = ? AND sha256 = ?", (name_to_db(path), sha256)
        ).fetchone()
        return _row(row) if row else None

    def find_by_id(self, frame_id: int) -> FrameRow | None:
        row = self.db.execute("SELECT * FROM frames WHERE id = ?", (frame_id,)).fetchone()
        return _row(row) if row else None

    def add(self, frame: NewFrame, supersedes: Iterable[int] = ()) -> int:
        """Record a scored frame; `supersedes`: rows of earlier bytes of its file, still waiting for
        their burst, closed as superseded in the same transaction (a path never waits twice)."""
        exposure = json.dumps(frame.exposure) if frame.exposure is not None else None
        with self.transaction() as db:
            for old in supersedes:
                db.execute(
                    "UPDATE frames SET state = ?, action = ?, done_at = ? WHERE id = ? AND state = ?",
                    (State.DONE, Action.SUPERSEDED, now_iso(), old, State.SCORED),
                )
            cursor = db.execute(
                "INSERT INTO frames (path, sha256, size, captured_at, captured_ts, time_source, burst_hint,"
                " score, gamma, exposure, error, model, model_version, context_score, context_state, state, seen_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name_to_db(frame.path), frame.sha256, frame.size, frame.captured_at, frame.captured_ts,
                    frame.time_source, frame.burst_hint, frame.score, frame.gamma, exposure,
                    _text(frame.error), frame.model, frame.model_version, frame.context_score, frame.context_state,
                    State.SCORED, now_iso(),
                ),
            )  # fmt: skip
        return int(cursor.lastrowid or 0)

    def revive(self, frame_id: int) -> FrameRow | None:
        """A superseded frame's exact bytes are back (a file changed, then changed back): it waits
        for its burst again, as scored (its score is of these very bytes)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE frames SET state = ?, action = NULL, decision = NULL, burst = NULL, dest = NULL,"
                " decided_at = NULL, done_at = NULL, store_error = NULL WHERE id = ? AND action = ?",
                (State.SCORED, frame_id, Action.SUPERSEDED),
            )
        return self.find_by_id(frame_id)

    def in_state(self, state: State) -> list[FrameRow]:
        rows = self.db.execute("SELECT * FROM frames WHERE state = ? ORDER BY captured_ts, path", (state,))
        return [_row(r) for r in rows]

    def decide(self, decisions: Iterable[Decision], events: Iterable[OutboxEvent] = ()) -> None:
        """All frames of a burst in one transaction: the decision is durable before files move, and
        its event is in the outbox exactly when the decision is (a crash cannot keep one without the other)."""
        at = now_iso()
        with self.transaction() as db:
            for event in events:
                db.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, payload, created_at, kind) VALUES (?, ?, ?, ?)",
                    (event.event_id, event.payload, at, event.kind),
                )
            for d in decisions:
                db.execute(
                    "UPDATE frames SET burst = ?, decision = ?, action = ?, dest = ?, cutoff = ?,"
                    " state = ?, decided_at = ? WHERE id = ? AND state = ?",
                    (
                        d.burst,
                        d.decision,
                        d.action,
                        name_to_db(d.dest),
                        d.cutoff,
                        State.DECIDED,
                        at,
                        d.frame_id,
                        State.SCORED,
                    ),
                )

    def record_captured(
        self, frames: list[NewFrame], decisions: list[Decision], events: Iterable[OutboxEvent] = ()
    ) -> list[int]:
        """A camera burst, decided and (where kept) already written: its rows, final, and its event,
        in one transaction."""
        at = now_iso()
        ids = []
        with self.transaction() as db:
            for frame, d in zip(frames, decisions, strict=True):
                exposure = json.dumps(frame.exposure) if frame.exposure is not None else None
                cursor = db.execute(
                    "INSERT INTO frames (path, sha256, size, captured_at, captured_ts, time_source, burst_hint,"
                    " score, gamma, exposure, error, model, model_version, context_score, context_state, state,"
                    " seen_at, burst, decision, action, dest, cutoff, decided_at, done_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name_to_db(frame.path), frame.sha256, frame.size, frame.captured_at, frame.captured_ts,
                        frame.time_source, frame.burst_hint, frame.score, frame.gamma, exposure, _text(frame.error),
                        frame.model, frame.model_version, frame.context_score, frame.context_state, State.DONE, at,
                        d.burst, d.decision, d.action, name_to_db(d.dest), d.cutoff, at, at,
                    ),
                )  # fmt: skip
                ids.append(int(cursor.lastrowid or 0))
            for event in events:
                db.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, payload, created_at, kind) VALUES (?, ?, ?, ?)",
                    (event.event_id, event.payload, at, event.kind),
                )
        return ids

    def add_recovered(self, rows: Iterable[tuple[str, str, str, int, float, Action]]) -> int:
        """`ledger recover`: (inbox path, dest, sha256, size, mtime, action) of files found in the
        store, recorded done with decision 'recovered' (module docstring). Returns rows added."""
        at, added = now_iso(), 0
        with self.transaction() as db:
            for path, dest, sha, size, mtime, action in rows:
                captured = datetime.fromtimestamp(mtime, UTC).isoformat()
                added += db.execute(
                    "INSERT OR IGNORE INTO frames (path, sha256, size, captured_at, captured_ts, time_source, decision,"
                    " action, dest, state, model, model_version, seen_at, decided_at, done_at)"
                    " VALUES (?, ?, ?, ?, ?, 'mtime', ?, ?, ?, ?, ?, '', ?, ?, ?)",
                    (name_to_db(path), sha, size, captured, mtime, RECOVERED, action, name_to_db(dest), State.DONE,
                     RECOVERED, at, at, at),
                ).rowcount  # fmt: skip
        return added

    def done(
        self, frame_id: int, action: Action | None = None, dest: str | None = None, error: str | None = None
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE frames SET state = ?, done_at = ?, action = COALESCE(?, action),"
                " dest = CASE WHEN ? IS NULL THEN dest ELSE ? END,"
                " error = CASE WHEN ? IS NULL THEN error ELSE COALESCE(error || '; ', '') || ? END WHERE id = ?",
                (
                    State.DONE,
                    now_iso(),
                    action,
                    name_to_db(dest),
                    name_to_db(dest),
                    _text(error),
                    _text(error),
                    frame_id,
                ),
            )

    def done_many(self, frame_ids: list[int]) -> None:
        """Mark a burst's frames done in one transaction; their store errors no longer hold."""
        at = now_iso()
        with self.transaction() as db:
            db.executemany(
                "UPDATE frames SET state = ?, done_at = ?, store_error = NULL WHERE id = ?",
                [(State.DONE, at, frame_id) for frame_id in frame_ids],
            )

    def note_store_error(self, frame_id: int, error: str | None) -> None:
        """Why a decided frame's file operation failed (it stays in the inbox); None once it worked."""
        with self.transaction() as db:
            db.execute("UPDATE frames SET store_error = ? WHERE id = ?", (_text(error), frame_id))

    def quarantined(self) -> list[tuple[int, str, str, int]]:
        """(id, dest, done_at, size) of frames still in quarantine, oldest first."""
        rows = self.db.execute(
            "SELECT id, dest, done_at, size FROM frames WHERE action = ? AND state = ? ORDER BY done_at, id",
            (Action.QUARANTINED, State.DONE),
        )
        return [(r["id"], name_from_db(r["dest"]) or "", r["done_at"], r["size"]) for r in rows]

    def expire(self, frame_id: int, why: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE frames SET action = ?, error = COALESCE(error || '; ', '') || ? WHERE id = ?",
                (Action.QUARANTINE_EXPIRED, _text(why), frame_id),
            )

    # -- the event outbox ---------------------------------------------------------------------
    def pending_events(self, limit: int, exclude: Iterable[int] = ()) -> list[PendingEvent]:
        """Undelivered events, oldest first (a backlog drains in order)."""
        skip = set(exclude)
        rows = self.db.execute(
            "SELECT id, event_id, payload, created_at, attempts, kind FROM outbox WHERE delivered_at IS NULL"
            " ORDER BY id LIMIT ?",
            (limit + len(skip),),
        )
        return [PendingEvent(*r) for r in rows if r[0] not in skip][:limit]

    def events_sent(self, ids: Iterable[int]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids])

    def events_delivered(self, ids: Iterable[int]) -> None:
        at = now_iso()
        with self.transaction() as db:
            db.executemany(
                "UPDATE outbox SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL", [(at, i) for i in ids]
            )

    def outbox_state(self) -> tuple[int, str | None]:
        """(undelivered events, creation time of the oldest of them)."""
        row = self.db.execute("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL").fetchone()
        return int(row[0]), row[1]

    def prune_delivered(self, older_than_days: float) -> int:
        """Delivered events are only history: keep a while for `stats`, then free the card."""
        with self.transaction() as db:
            return db.execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < datetime('now', ?)",
                (f"-{older_than_days} days",),
            ).rowcount

    # -- settings kept across restarts --------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def counts_since(self, since_iso: str) -> dict[str, int]:
        """Frames seen, kept, discarded and failed since a time (UTC ISO): for the status heartbeat."""
        row = self.db.execute(
            f"SELECT COUNT(*), SUM(action IN {sql_list(KEPT_ACTIONS)}), SUM(action IN {sql_list(DISCARD_ACTIONS)}),"
            " SUM(score IS NULL) FROM frames WHERE seen_at >= ?",
            (since_iso,),
        ).fetchone()
        return {"seen": row[0] or 0, "kept": row[1] or 0, "discarded": row[2] or 0, "failed": row[3] or 0}

    def bursts_by_camera(self) -> dict[str, dict[str, int]]:
        """Since the ledger began, per camera (a frame's folder under the inbox, as decision.camera_of:
        '.' for the inbox itself): bursts discarded, audited (discarded, kept in audit/) and kept, for
        the status' field-recall counts. One pass in SQL: rtrim(path, <path without its slashes>)
        leaves the folder and its last '/'."""
        rows = self.db.execute(
            "SELECT camera, SUM(kept), SUM(audited AND NOT kept), SUM(discarded AND NOT kept) FROM ("
            " SELECT rtrim(MIN(path), replace(MIN(path), '/', '')) AS camera,"
            f" MAX(action IN {sql_list(KEPT_ACTIONS)}) AS kept, MAX(action = '{Action.AUDIT.value}') AS audited,"
            f" MIN(action IN {sql_list(DISCARD_ACTIONS)}) AS discarded FROM frames"
            f" WHERE burst IS NOT NULL AND action IS NOT NULL AND action NOT IN {sql_list(NOT_DECIDED)}"
            " GROUP BY burst) GROUP BY camera"
        ).fetchall()
        out: dict[str, dict[str, int]] = {"discarded": {}, "audited": {}, "kept": {}}
        for folder, kept, audited, discarded in rows:
            camera = printable(name_from_db(folder) or "").rstrip("/") or "."
            for key, count in (("kept", kept), ("audited", audited), ("discarded", discarded)):
                out[key][camera] = out[key].get(camera, 0) + int(count or 0)
        return out

    def last_event_at(self) -> str | None:
        row = self.db.execute("SELECT MAX(created_at) FROM outbox WHERE kind = 'event'").fetchone()
        return row[0] if row else None

    # -- skipped files ----------------------------------------------------------------------
    def was_skipped(self, path: str, size: int, mtime: float) -> bool:
        row = self.db.execute("SELECT size, mtime FROM skipped WHERE path = ?", (name_to_db(path),)).fetchone()
        return bool(row) and row["size"] == size and row["mtime"] == mtime

    def skip(self, path: str, size: int, mtime: float, reason: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?, ?)",
                (name_to_db(path), size, mtime, _text(reason), now_iso()),
            )

    # -- summaries --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        db = self.db
        by_action = dict(db.execute("SELECT COALESCE(action, state), COUNT(*) FROM frames GROUP BY 1").fetchall())
        by_decision = dict(
            db.execute("SELECT COALESCE(decision, 'pending'), COUNT(*) FROM frames GROUP BY 1").fetchall()
        )
        # By capture day, on the clock that time came from: EXIF is the camera's own clock (no zone), a file
        # time or a camera source's is UTC; a row without a capture time falls back to processing time (UTC).
        days = db.execute(
            "SELECT substr(COALESCE(captured_at, seen_at), 1, 10) AS day,"
            " CASE WHEN captured_at IS NULL THEN 'processed' WHEN time_source = 'exif' THEN 'camera' ELSE 'utc' END,"
            " COUNT(*), SUM(decision = ?), SUM(decision = ?), SUM(decision = ?)"
            " FROM frames GROUP BY 1, 2 ORDER BY 1 DESC, 2",
            (Verdict.BLANK, Verdict.NONBLANK, Verdict.UNKNOWN),
        ).fetchall()
        recent = sorted({row[0] for row in days}, reverse=True)[:14]
        errors = db.execute(
            "SELECT path, COALESCE(store_error, error) FROM frames"
            " WHERE error IS NOT NULL OR store_error IS NOT NULL ORDER BY id DESC LIMIT 10"
        ).fetchall()
        total = sum(by_decision.values())
        decided = by_decision.get(Verdict.BLANK, 0) + by_decision.get(Verdict.NONBLANK, 0)
        return {
            "frames": total,
            "by_decision": by_decision,
            "by_action": by_action,
            "blank_ratio": (by_decision.get(Verdict.BLANK, 0) / decided) if decided else None,
            "bursts": db.execute("SELECT COUNT(DISTINCT burst) FROM frames WHERE burst IS NOT NULL").fetchone()[0],
            "pending": db.execute("SELECT COUNT(*) FROM frames WHERE state != ?", (State.DONE,)).fetchone()[0],
            "skipped": db.execute("SELECT COUNT(*) FROM skipped").fetchone()[0],
            "outbox": dict(zip(("undelivered", "oldest"), self.outbox_state(), strict=True)),
            "models": [tuple(r) for r in db.execute("SELECT model, model_version, COUNT(*) FROM frames GROUP BY 1, 2")],
            "context": dict(
                db.execute(
                    "SELECT COALESCE(context_state, 'not used'), COUNT(*) FROM frames"
                    " WHERE score IS NOT NULL GROUP BY 1"
                ).fetchall()
            ),
            "days": [tuple(r) for r in days if r[0] in recent],  # (day, clock, frames, blank, nonblank, unknown)
            "recent_errors": [(printable(name_from_db(r[0]) or ""), r[1]) for r in errors],
        }


for _name, _method in list(vars(Ledger).items()):
    if callable(_method) and not _name.startswith("_") and _name not in ("transaction", "close"):
        setattr(Ledger, _name, _guarded(_method))


def _row(row: sqlite3.Row) -> FrameRow:
    values = {f.name: row[f.name] for f in fields(FrameRow)}
    values["path"], values["dest"] = name_from_db(values["path"]), name_from_db(values["dest"])
    return FrameRow(**values)
