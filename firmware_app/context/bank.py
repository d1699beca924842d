"""The reference bank: each camera's known-empty frames, per lighting mode, as feature maps in SQLite.

Stored beside the ledger (`references.db`), small (about 92 KB a reference at fp16) and bounded per
camera and mode. References come from three places: `blankfilter reference add` (origin `manual`),
the deployment `capture` step (`capture`), and automatic top-up with frames both the context score
and the classifier called blank (`auto`). Top-up only ever replaces other `auto` references, so the
frames a person chose stay. Features are tied to the extractor that made them: a new extractor
starts from an empty bank instead of comparing apples with pears.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from firmware_app.context.score import Baseline, baseline
from firmware_app.errors import BlankfilterError
from firmware_app.sqlite_tx import connect_ro, immediate

log = logging.getLogger(__name__)

ORIGINS = ("manual", "capture", "auto")
MODES = ("day", "ir")
ANY_CAMERA = "*"
SCHEMA = """
CREATE TABLE IF NOT EXISTS refs (
    id          INTEGER PRIMARY KEY,
    camera      TEXT NOT NULL,      -- the inbox sub-folder (or the source's camera name)
    mode        TEXT NOT NULL,      -- day | ir
    origin      TEXT NOT NULL,      -- manual | capture | auto
    source      TEXT NOT NULL,      -- the frame it came from
    sha256      TEXT NOT NULL,
    burst       TEXT,               -- never used to score its own burst
    captured_ts REAL,
    added_at    TEXT NOT NULL,
    extractor   TEXT NOT NULL,      -- name version of the model that made the features
    score       REAL,               -- the classifier's p(non-blank) for it, when known
    shape       TEXT NOT NULL,      -- h,w,c
    features    BLOB NOT NULL       -- float16, unit-length cells
);
CREATE INDEX IF NOT EXISTS refs_camera ON refs(camera, mode, extractor);
CREATE TABLE IF NOT EXISTS capture (camera TEXT PRIMARY KEY, remaining INTEGER NOT NULL, requested_at TEXT NOT NULL);
-- How each camera's frames are cut before the extractor (its own info bars, context/bars.py): its
-- references' features depend on it, so it is fixed when the camera gets its first references and
-- forgotten with them. A camera with references but no row here uses the extractor card's crop.
CREATE TABLE IF NOT EXISTS views (
    camera      TEXT NOT NULL,
    extractor   TEXT NOT NULL,
    crop_top    REAL NOT NULL,      -- share of the frame height cut off at the top
    crop_bottom REAL NOT NULL,
    found_at    TEXT NOT NULL,
    PRIMARY KEY (camera, extractor)
);
"""


class BankError(BlankfilterError):
    pass


@dataclass(frozen=True)
class Reference:
    id: int
    camera: str
    mode: str
    origin: str
    source: str
    burst: str | None
    captured_ts: float | None
    added_at: str


@dataclass(frozen=True)
class BankView:
    """The references of one camera and mode, ready to compare against."""

    ids: tuple[int, ...]
    bursts: tuple[str | None, ...]
    features: np.ndarray  # [k, h, w, c] float32
    baseline: Baseline
    scores: tuple[float | None, ...] = ()  # the classifier's p(non-blank) for each, when known

    @property
    def highest_score(self) -> float | None:
        """The classifier's highest p(non-blank) among these known-empty frames: how sure it can be
        of nothing at this camera (a tunnel floor scores p 0.9-1.0 empty). None: never scored."""
        known = [s for s in self.scores if s is not None]
        return max(known) if known else None

    def excluding_burst(self, burst: str | None) -> BankView:
        """References never include the scored frame's own burst (its neighbours share the animal)."""
        if burst is None or burst not in self.bursts:
            return self
        keep = [i for i, b in enumerate(self.bursts) if b != burst]
        feats = self.features[keep]
        scores = tuple(self.scores[i] for i in keep) if self.scores else ()
        return BankView(tuple(self.ids[i] for i in keep), tuple(self.bursts[i] for i in keep), feats, baseline(feats),
                        scores)  # fmt: skip


class ReferenceBank:
    def __init__(self, path: Path, extractor: str, max_references: int = 12) -> None:
        self.path, self.extractor, self.max_references = path, extractor, max_references
        try:
            self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            if "score" not in {r[1] for r in self.db.execute("PRAGMA table_info(refs)")}:
                self.db.execute("ALTER TABLE refs ADD COLUMN score REAL")  # banks made before it was kept
        except sqlite3.Error as exc:
            raise BankError(f"cannot open the reference bank {path}: {exc}") from exc
        self._cache: dict[tuple[str, str], BankView | None] = {}
        self._version = -1

    @classmethod
    def read_only(cls, path: Path, extractor: str) -> ReferenceBank | None:
        """The bank opened for reading only (`reference list`): no schema, no migration, no write,
        and never made: None when there is no bank yet."""
        if not path.is_file():
            return None
        bank = cls.__new__(cls)
        bank.path, bank.extractor, bank.max_references = path, extractor, 0
        try:
            bank.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            bank.db.execute("SELECT COUNT(*) FROM refs").fetchone()
        except sqlite3.Error as exc:
            raise BankError(f"cannot read the reference bank {path}: {exc}") from exc
        bank._cache, bank._version = {}, -1
        return bank

    def close(self) -> None:
        self.db.close()

    # -- reading ----------------------------------------------------------------------------
    def view(self, camera: str, mode: str) -> BankView | None:
        """The camera's references for this mode, or None. Cached until the bank changes (also when
        another process, `blankfilter reference`, changes it: SQLite's data_version says so)."""
        version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._cache.clear()
            self._version = version
        key = (camera, mode)
        if key not in self._cache:
            self._cache[key] = self._load(camera, mode)
        return self._cache[key]

    def _load(self, camera: str, mode: str) -> BankView | None:
        rows = self.db.execute(
            "SELECT id, burst, shape, features, score FROM refs WHERE camera = ? AND mode = ? AND extractor = ?"
            " ORDER BY id",
            (camera, mode, self.extractor),
        ).fetchall()
        if not rows:
            return None
        shapes = {r[2] for r in rows}
        if len(shapes) != 1:
            raise BankError(f"{self.path}: references of {camera}/{mode} have different shapes {sorted(shapes)}")
        shape = tuple(int(v) for v in rows[0][2].split(","))
        feats = np.stack([np.frombuffer(r[3], np.float16).reshape(shape) for r in rows]).astype(np.float32)
        return BankView(
            tuple(r[0] for r in rows), tuple(r[1] for r in rows), feats, baseline(feats), tuple(r[4] for r in rows)
        )

    def has_camera(self, camera: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM refs WHERE camera = ? AND extractor = ? LIMIT 1", (camera, self.extractor)
        ).fetchone()
        return row is not None

    def crops(self) -> dict[str, tuple[float, float]]:
        """(top, bottom) crop per camera, for the cameras whose bars were found."""
        rows = self.db.execute("SELECT camera, crop_top, crop_bottom FROM views WHERE extractor = ?", (self.extractor,))
        return {r[0]: (float(r[1]), float(r[2])) for r in rows}

    def set_crop(self, camera: str, top: float, bottom: float) -> None:
        if not (0 <= top < 0.5 and 0 <= bottom < 0.5):
            raise BankError(f"crop of camera {camera}: top {top}, bottom {bottom}; expected shares under 0.5")
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO views VALUES (?, ?, ?, ?, ?)", (camera, self.extractor, top, bottom, _now())
            )

    def list(self, camera: str | None = None) -> list[Reference]:
        sql = "SELECT id, camera, mode, origin, source, burst, captured_ts, added_at FROM refs"
        rows = self.db.execute(sql + (" WHERE camera = ?" if camera else "") + " ORDER BY camera, mode, id",
                               (camera,) if camera else ()).fetchall()  # fmt: skip
        return [Reference(*r) for r in rows]

    def stale(self) -> int:
        """References made by another extractor (ignored until `reference reset`)."""
        return int(self.db.execute("SELECT COUNT(*) FROM refs WHERE extractor != ?", (self.extractor,)).fetchone()[0])

    def last_auto_ts(self, camera: str, mode: str) -> float | None:
        row = self.db.execute(
            "SELECT MAX(captured_ts) FROM refs WHERE camera = ? AND mode = ? AND origin = 'auto'", (camera, mode)
        ).fetchone()
        return row[0] if row else None

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        camera: str,
        mode: str,
        features: np.ndarray,
        *,
        origin: str,
        source: str,
        sha256: str,
        burst: str | None = None,
        captured_ts: float | None = None,
        score: float | None = None,
    ) -> int | None:
        """Add one reference; the oldest `auto` one goes when the camera's mode is full. None when an
        automatic top-up finds the bank full of references a person chose (those are never replaced)."""
        if origin not in ORIGINS or mode not in MODES:
            raise BankError(f"reference origin {origin!r} / mode {mode!r}: expected {ORIGINS} / {MODES}")
        if features.ndim != 3:
            raise BankError(f"features of {source} have shape {features.shape}; expected [h, w, c]")
        blob = np.ascontiguousarray(features, np.float16).tobytes()
        with self._transaction() as db:
            if db.execute(
                "SELECT 1 FROM refs WHERE camera = ? AND mode = ? AND sha256 = ? AND extractor = ?",
                (camera, mode, sha256, self.extractor),
            ).fetchone():
                return None  # the same frame twice adds nothing
            if not self._make_room(db, camera, mode, origin):
                return None
            cursor = db.execute(
                "INSERT INTO refs (camera, mode, origin, source, sha256, burst, captured_ts, added_at, extractor,"
                " shape, features, score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (camera, mode, origin, source, sha256, burst, captured_ts, _now(), self.extractor,
                 ",".join(str(v) for v in features.shape), blob, score),
            )  # fmt: skip
        return int(cursor.lastrowid or 0)

    def _make_room(self, db: sqlite3.Connection, camera: str, mode: str, origin: str) -> bool:
        where = "camera = ? AND mode = ? AND extractor = ?"
        args = (camera, mode, self.extractor)
        count = db.execute(f"SELECT COUNT(*) FROM refs WHERE {where}", args).fetchone()[0]
        while count >= self.max_references:
            victim = db.execute(f"SELECT id FROM refs WHERE {where} AND origin = 'auto' ORDER BY id LIMIT 1", args)
            row = victim.fetchone()
            if row is None and origin != "auto":  # a person's choice replaces the oldest of any origin
                row = db.execute(f"SELECT id FROM refs WHERE {where} ORDER BY id LIMIT 1", args).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM refs WHERE id = ?", (row[0],))
            count -= 1
        return True

    def reset(self, camera: str | None = None, mode: str | None = None) -> int:
        """Forget references: after the camera was moved, re-aimed or serviced. All cameras when None."""
        clauses, args = [], []
        if camera:
            clauses.append("camera = ?")
            args.append(camera)
        if mode:
            clauses.append("mode = ?")
            args.append(mode)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._transaction() as db:
            removed = db.execute("DELETE FROM refs" + where, args).rowcount
            db.execute("DELETE FROM capture" + (" WHERE camera = ?" if camera else ""), (camera,) if camera else ())
            # The crop goes with the camera's last reference: the next ones may see a re-aimed view.
            db.execute("DELETE FROM views WHERE camera NOT IN (SELECT DISTINCT camera FROM refs)")
        return int(removed)

    # -- the deployment capture step --------------------------------------------------------
    def request_capture(self, camera: str, count: int) -> None:
        """The next `count` frames of `camera` (ANY_CAMERA: of any camera) become references."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO capture VALUES (?, ?, ?)", (camera, count, _now()))

    def captures(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.db.execute("SELECT camera, remaining FROM capture")}

    def take_capture(self, camera: str) -> bool:
        """True (and one less to take) when the next frame of this camera is to become a reference."""
        if not self.captures():  # the common case: one cheap read, no write
            return False
        with self._transaction() as db:
            for key in (camera, ANY_CAMERA):
                row = db.execute("SELECT remaining FROM capture WHERE camera = ?", (key,)).fetchone()
                if row and row[0] > 0:
                    if row[0] == 1:
                        db.execute("DELETE FROM capture WHERE camera = ?", (key,))
                    else:
                        db.execute("UPDATE capture SET remaining = remaining - 1 WHERE camera = ?", (key,))
                    return True
        return False

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self.db, lambda exc: BankError(f"cannot write the reference bank {self.path}: {exc}"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def freshness(path: Path) -> list[dict[str, object]]:
    """Per camera and lighting mode: how many references, by whom, and how old the newest is (when
    it was added, and the capture time of its frame when known): `stats` shows it, so a person sees
    a camera whose references no longer cover the light of the season. Read-only; [] without a bank."""
    if not path.exists():
        return []
    try:
        db = connect_ro(path, timeout=5)  # works on a full card too
        try:
            rows = db.execute(
                "SELECT camera, mode, COUNT(*), SUM(origin = 'manual'), SUM(origin = 'capture'), SUM(origin = 'auto'),"
                " MAX(added_at), MAX(captured_ts) FROM refs GROUP BY camera, mode ORDER BY camera, mode"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise BankError(f"cannot read the reference bank {path}: {exc}") from exc
    keys = ("camera", "mode", "references", "manual", "capture", "auto", "newest_added_at", "newest_captured_ts")
    return [dict(zip(keys, r, strict=True)) for r in rows]
