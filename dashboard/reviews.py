"""The audit sample and its reviews, in the monitor's SQLite (the same file and lock as `store`).

- `audits`: one row per audited burst (de-duplicated on its id), the thumbnail in its own column;
- `reviews`: every verdict given, never overwritten: an undo marks a review undone, and a burst's
  verdict is its latest review not undone (who and when are kept for each);
- `camera_counts`: per trap, camera and day (the trap's clock, from the status' `at`), the latest
  counts of discarded, audited and kept bursts the trap reported, for the figure over time;
- `cutoff_requests`: each per-camera cutoff an operator confirmed and the monitor published, and
  when the trap's config echo first showed it (`applied_at`; NULL: not yet, sent again when the trap
  next connects: a trap on a cellular link is offline most of the time, and its MQTT session is clean).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from dashboard.store import DUPLICATE, Store, now_iso, parse_time

BLANK, MISSED = "blank", "missed"
VERDICTS = (BLANK, MISSED)
NOTE_MAX = 500

DDL = """
CREATE TABLE IF NOT EXISTS audits (
    id TEXT PRIMARY KEY,
    trap TEXT NOT NULL,
    camera TEXT NOT NULL,
    burst TEXT NOT NULL,
    first_capture TEXT NOT NULL,    -- as the trap sent it (the camera's clock)
    day TEXT NOT NULL,              -- YYYY-MM-DD of first_capture, same clock
    max_score REAL,                 -- the burst's best classifier score (NULL: none scored)
    payload TEXT NOT NULL,          -- the audit JSON without the thumbnail's bytes
    received_at TEXT NOT NULL,      -- the monitor's clock, UTC
    thumbnail BLOB                  -- a checked JPEG, or NULL
);
CREATE INDEX IF NOT EXISTS audits_trap_camera ON audits (trap, camera);
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_id TEXT NOT NULL REFERENCES audits (id),
    verdict TEXT NOT NULL,          -- blank | missed
    note TEXT NOT NULL,
    who TEXT NOT NULL,              -- token | local, or "<reviewer> (token|local)"
    at TEXT NOT NULL,               -- the monitor's clock, UTC
    undone_at TEXT                  -- set by an undo: the review no longer counts
);
CREATE INDEX IF NOT EXISTS reviews_audit ON reviews (audit_id);
CREATE TABLE IF NOT EXISTS camera_counts (
    trap TEXT NOT NULL,
    camera TEXT NOT NULL,
    day TEXT NOT NULL,              -- the trap's clock (status `at`)
    discarded INTEGER,
    audited INTEGER,
    kept INTEGER,
    PRIMARY KEY (trap, camera, day)
);
CREATE TABLE IF NOT EXISTS cutoff_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trap TEXT NOT NULL,
    camera TEXT NOT NULL,
    cutoff REAL NOT NULL,
    who TEXT NOT NULL,
    at TEXT NOT NULL,
    applied_at TEXT
);
"""

# The current verdict of each audit: its latest review that was not undone.
CURRENT = """
SELECT r.audit_id, r.verdict, r.note, r.who, r.at, r.seq FROM reviews r
WHERE r.undone_at IS NULL AND r.seq = (SELECT MAX(seq) FROM reviews x WHERE x.audit_id = r.audit_id
                                        AND x.undone_at IS NULL)
"""


class Reviews:
    def __init__(self, store: Store) -> None:
        self.store, self.db, self.lock = store, store.db, store.lock
        with self.lock:
            self.db.executescript(DDL)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(cutoff_requests)")}
            if "applied_at" not in columns:  # a monitor database from before the resend
                self.db.execute("ALTER TABLE cutoff_requests ADD COLUMN applied_at TEXT")

    # -- the sample -------------------------------------------------------------------------------
    def add_audit(self, audit: dict[str, Any], thumbnail: bytes | None, received_at: str | None = None) -> bool:
        """Store a checked audit; False when its id is already stored (a resend: counted)."""
        first = parse_time(audit["first_capture"])
        if first is None:
            raise ValueError(f"first_capture {audit['first_capture']!r} is not a time")
        payload = dict(audit)
        if "thumbnail" in payload:
            payload["thumbnail"] = {k: v for k, v in payload["thumbnail"].items() if k != "jpeg_base64"}
        scores = [f["score"] for f in audit["frames"] if f["score"] is not None]
        received_at = received_at or now_iso()
        with self.lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO audits (id, trap, camera, burst, first_capture, day, max_score, payload,"
                " received_at, thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (audit["id"], audit["trap"], audit["camera"], audit["burst"], audit["first_capture"],
                 first.date().isoformat(), max(scores) if scores else None,
                 json.dumps(payload, separators=(",", ":")), received_at, thumbnail),
            )  # fmt: skip
            if cur.rowcount == 0:
                self.store.count(DUPLICATE, "audit id", received_at)
                return False
        return True

    def set_counts(self, trap: str, status: dict[str, Any]) -> None:
        """The status' per-camera counts (optional fields), kept per day of the trap's clock."""
        at = parse_time(status.get("at"))
        fields = {k: status.get(f"{k}_bursts") for k in ("discarded", "audited", "kept")}
        if at is None or not any(isinstance(v, dict) for v in fields.values()):
            return
        cameras = sorted({c for v in fields.values() if isinstance(v, dict) for c in v})
        with self.lock:
            for camera in cameras:
                values = [v.get(camera) if isinstance(v, dict) else None for v in fields.values()]
                self.db.execute(
                    "INSERT INTO camera_counts (trap, camera, day, discarded, audited, kept) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (trap, camera, day) DO UPDATE SET discarded = excluded.discarded,"
                    " audited = excluded.audited, kept = excluded.kept",
                    (trap, camera, at.date().isoformat(), *values),
                )

    def audit(self, audit_id: str) -> dict[str, Any] | None:
        with self.lock:
            r = self.db.execute(
                "SELECT a.rowid AS seq, a.payload, a.received_at, a.thumbnail IS NOT NULL AS has_thumbnail,"
                " c.verdict, c.note, c.who, c.at FROM audits a LEFT JOIN (" + CURRENT + ") c ON c.audit_id = a.id"
                " WHERE a.id = ?",
                (audit_id,),
            ).fetchone()
        return None if r is None else _audit_view(r)

    def thumbnail(self, audit_id: str) -> bytes | None:
        with self.lock:
            r = self.db.execute("SELECT thumbnail FROM audits WHERE id = ?", (audit_id,)).fetchone()
        return None if r is None or r[0] is None else bytes(r[0])

    def queue(self, trap: str | None = None, camera: str | None = None) -> tuple[dict[str, Any] | None, int]:
        """The oldest audit not reviewed yet (of a trap and camera, if given), and how many wait."""
        where, params = _where(trap, camera, "a.")
        unreviewed = f" AND a.id NOT IN (SELECT audit_id FROM ({CURRENT}))"
        with self.lock:
            waiting = self.db.execute(f"SELECT COUNT(*) FROM audits a WHERE 1{where}{unreviewed}", params).fetchone()
            first = self.db.execute(
                f"SELECT a.id FROM audits a WHERE 1{where}{unreviewed} ORDER BY a.rowid LIMIT 1", params
            ).fetchone()
        return (self.audit(first[0]) if first else None), int(waiting[0])

    # -- reviewing --------------------------------------------------------------------------------
    def review(self, audit_id: str, verdict: str, note: str, who: str) -> dict[str, Any]:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
        with self.lock:
            if self.db.execute("SELECT 1 FROM audits WHERE id = ?", (audit_id,)).fetchone() is None:
                raise KeyError(audit_id)
            self.db.execute(
                "INSERT INTO reviews (audit_id, verdict, note, who, at) VALUES (?, ?, ?, ?, ?)",
                (audit_id, verdict, note[:NOTE_MAX], who, now_iso()),
            )
        view = self.audit(audit_id)
        assert view is not None
        return view

    def undo(self, who: str, audit_id: str | None = None) -> str | None:
        """Undo the latest review still counting (of this audit, or this reviewer's latest): its id."""
        clause, params = ("audit_id = ?", [audit_id]) if audit_id else ("who = ?", [who])
        with self.lock:
            r = self.db.execute(
                f"SELECT seq, audit_id FROM reviews WHERE undone_at IS NULL AND {clause} ORDER BY seq DESC LIMIT 1",
                params,
            ).fetchone()
            if r is None:
                return None
            self.db.execute("UPDATE reviews SET undone_at = ? WHERE seq = ?", (now_iso(), r["seq"]))
        return str(r["audit_id"])

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest reviews (undone ones too, marked), newest first."""
        with self.lock:
            rows = self.db.execute(
                "SELECT r.seq, r.audit_id, r.verdict, r.note, r.who, r.at, r.undone_at, a.trap, a.camera"
                " FROM reviews r JOIN audits a ON a.id = r.audit_id ORDER BY r.seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(r) for r in rows]

    def log_cutoff(self, trap: str, camera: str, cutoff: float, who: str) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO cutoff_requests (trap, camera, cutoff, who, at) VALUES (?, ?, ?, ?, ?)",
                (trap, camera, cutoff, who, now_iso()),
            )

    def cutoffs_echoed(self, trap: str, camera_cutoffs: dict[str, float]) -> None:
        """The trap's config echo: every waiting request it shows in force is applied."""
        with self.lock:
            for camera, value in camera_cutoffs.items():
                self.db.execute(
                    "UPDATE cutoff_requests SET applied_at = ? WHERE trap = ? AND camera = ? AND applied_at IS NULL"
                    " AND abs(cutoff - ?) < 1e-9",
                    (now_iso(), trap, camera, value),
                )

    def waiting_cutoffs(self, trap: str) -> dict[str, dict[str, Any]]:
        """Per camera, the operator's latest request when the trap has not shown it yet."""
        with self.lock:
            rows = self.db.execute(
                "SELECT camera, cutoff, who, at FROM cutoff_requests r WHERE trap = ? AND applied_at IS NULL"
                " AND seq = (SELECT MAX(seq) FROM cutoff_requests x WHERE x.trap = r.trap AND x.camera = r.camera)",
                (trap,),
            ).fetchall()
        return {r["camera"]: {"cutoff": r["cutoff"], "who": r["who"], "at": r["at"]} for r in rows}

    # -- what the figure is made of ---------------------------------------------------------------
    def tallies(self) -> list[sqlite3.Row]:
        """Per trap and camera (every one with audits or counts): received, reviewed, misses."""
        with self.lock:
            return self.db.execute(
                "SELECT k.trap, k.camera,"
                " (SELECT COUNT(*) FROM audits a WHERE a.trap = k.trap AND a.camera = k.camera) AS received,"
                f" (SELECT COUNT(*) FROM audits a JOIN ({CURRENT}) c ON c.audit_id = a.id"
                "   WHERE a.trap = k.trap AND a.camera = k.camera) AS reviewed,"
                f" (SELECT COUNT(*) FROM audits a JOIN ({CURRENT}) c ON c.audit_id = a.id"
                "   WHERE a.trap = k.trap AND a.camera = k.camera AND c.verdict = 'missed') AS misses"
                " FROM (SELECT trap, camera FROM audits UNION SELECT trap, camera FROM camera_counts) k"
                " ORDER BY k.trap, k.camera"
            ).fetchall()

    def latest_counts(self, trap: str, camera: str) -> sqlite3.Row | None:
        with self.lock:
            return self.db.execute(
                "SELECT discarded, audited, kept FROM camera_counts WHERE trap = ? AND camera = ?"
                " ORDER BY day DESC LIMIT 1",
                (trap, camera),
            ).fetchone()

    def missed_scores(self, trap: str, camera: str) -> list[float | None]:
        with self.lock:
            rows = self.db.execute(
                f"SELECT a.max_score FROM audits a JOIN ({CURRENT}) c ON c.audit_id = a.id"
                " WHERE a.trap = ? AND a.camera = ? AND c.verdict = 'missed'",
                (trap, camera),
            ).fetchall()
        return [r[0] for r in rows]

    def latest_cutoff(self, trap: str, camera: str) -> float | None:
        """The classifier cutoff the camera's latest audit was judged with."""
        with self.lock:
            r = self.db.execute(
                "SELECT json_extract(payload, '$.cutoffs.cutoff') FROM audits WHERE trap = ? AND camera = ?"
                " ORDER BY rowid DESC LIMIT 1",
                (trap, camera),
            ).fetchone()
        return None if r is None or r[0] is None else float(r[0])

    def days(self, trap: str, camera: str) -> list[tuple[str, int, int, int, sqlite3.Row | None]]:
        """Per day (the trap's clock) with audits or counts: cumulative (day, received, reviewed,
        misses) of the audits captured up to that day, and the latest counts reported by then."""
        with self.lock:
            audits = self.db.execute(
                f"SELECT a.day, c.verdict FROM audits a LEFT JOIN ({CURRENT}) c ON c.audit_id = a.id"
                " WHERE a.trap = ? AND a.camera = ? ORDER BY a.day",
                (trap, camera),
            ).fetchall()
            counts = self.db.execute(
                "SELECT day, discarded, audited, kept FROM camera_counts WHERE trap = ? AND camera = ? ORDER BY day",
                (trap, camera),
            ).fetchall()
        out = []
        for day in sorted({r["day"] for r in audits} | {r["day"] for r in counts}):
            upto = [r for r in audits if r["day"] <= day]
            reviewed = [r for r in upto if r["verdict"] is not None]
            misses = sum(1 for r in reviewed if r["verdict"] == MISSED)
            known = [r for r in counts if r["day"] <= day]
            out.append((day, len(upto), len(reviewed), misses, known[-1] if known else None))
        return out

    def labelled(self, trap: str | None = None) -> list[tuple[dict[str, Any], str]]:
        """(audit payload, verdict) of every reviewed audit, in capture order, for the Labels CSV."""
        where, params = _where(trap, None, "a.")
        with self.lock:
            rows = self.db.execute(
                f"SELECT a.payload, c.verdict FROM audits a JOIN ({CURRENT}) c ON c.audit_id = a.id WHERE 1{where}"
                " ORDER BY a.first_capture, a.id",
                params,
            ).fetchall()
        return [(json.loads(r["payload"]), r["verdict"]) for r in rows]


def _where(trap: str | None, camera: str | None, alias: str) -> tuple[str, list[Any]]:
    clauses, params = "", []
    if trap:
        clauses += f" AND {alias}trap = ?"
        params.append(trap)
    if camera:
        clauses += f" AND {alias}camera = ?"
        params.append(camera)
    return clauses, params


def _audit_view(r: sqlite3.Row) -> dict[str, Any]:
    """What the review page shows of an audit (the thumbnail has its own URL)."""
    audit = json.loads(r["payload"])
    thumb = audit.get("thumbnail") if r["has_thumbnail"] else None
    scores = [f["score"] for f in audit["frames"] if f["score"] is not None]
    return {
        "seq": r["seq"],
        "id": audit["id"],
        "trap": audit["trap"],
        "camera": audit["camera"],
        "burst": audit["burst"],
        "first_capture": audit["first_capture"],
        "last_capture": audit["last_capture"],
        "frames": [{k: f.get(k) for k in ("file", "score", "context_score", "context_state")} for f in audit["frames"]],
        "max_score": max(scores) if scores else None,
        "context_state": audit["context_state"],
        "cutoffs": audit["cutoffs"],
        "received_at": r["received_at"],
        "thumbnail": (
            {"url": f"api/audits/{audit['id']}.jpg", "width": thumb["width"], "height": thumb["height"]}
            if thumb
            else None
        ),
        "review": (
            {"verdict": r["verdict"], "note": r["note"], "who": r["who"], "at": r["at"]} if r["verdict"] else None
        ),
    }
