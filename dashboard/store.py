"""SQLite store of the monitor: events (de-duplicated on event_id), the latest status, availability
and config per trap, and counters of what was refused (malformed payloads, dropped thumbnails,
duplicates).

Only checked payloads get here (dashboard.ingest). Hour of day and day come from the event's
`first_frame_at` as the trap wrote it: the camera's clock, the time the animal passed where it
lives (docs/events.md), never converted to the monitor's or the browser's zone.

One connection shared by the MQTT thread (writes) and the web threads (reads), behind a lock:
the traffic of a fleet of traps is a few messages a minute.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the audit sample and its reviews (dashboard.reviews), added to a version 1 file
MALFORMED, THUMBNAIL_DROPPED, DUPLICATE = "malformed", "thumbnail_dropped", "duplicate"

_DDL = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    trap TEXT NOT NULL,
    first_frame_at TEXT NOT NULL,   -- as the trap sent it (the camera's clock)
    day TEXT NOT NULL,              -- YYYY-MM-DD of first_frame_at, same clock
    hour INTEGER NOT NULL,          -- 0..23 of first_frame_at, same clock
    payload TEXT NOT NULL,          -- the event JSON without the thumbnail's bytes
    received_at TEXT NOT NULL,      -- the monitor's clock, UTC
    thumbnail BLOB                  -- a checked JPEG, or NULL
);
CREATE INDEX IF NOT EXISTS events_trap_day ON events (trap, day);
CREATE INDEX IF NOT EXISTS events_day ON events (day);
CREATE TABLE IF NOT EXISTS traps (
    trap TEXT PRIMARY KEY,
    status TEXT,                    -- the latest status JSON
    status_received_at TEXT,
    availability TEXT,              -- online | offline
    availability_at TEXT,
    config TEXT,                    -- the latest config JSON (remote cutoff)
    config_received_at TEXT
);
CREATE TABLE IF NOT EXISTS counters (
    kind TEXT NOT NULL,             -- malformed | thumbnail_dropped | duplicate
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (kind, reason)
);
"""


def now_iso() -> str:
    """The monitor's clock, UTC, to the microsecond (it orders a trap's status and config)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time as the trap writes it (`...Z` or with an offset), else None."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.lock = threading.RLock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self.db.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: made by a newer monitor (schema {version} > {SCHEMA_VERSION})")
        self.db.executescript(_DDL)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- writes -----------------------------------------------------------------------------------
    def add_event(self, event: dict[str, Any], thumbnail: bytes | None, received_at: str | None = None) -> bool:
        """Store a checked event; False when its event_id is already stored (a resend: counted)."""
        first = parse_time(event["first_frame_at"])
        if first is None:
            raise ValueError(f"first_frame_at {event['first_frame_at']!r} is not a time")
        payload = dict(event)
        if "thumbnail" in payload:  # the bytes are in their own column (or were dropped)
            payload["thumbnail"] = {k: v for k, v in payload["thumbnail"].items() if k != "jpeg_base64"}
        received_at = received_at or now_iso()
        with self.lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO events (event_id, trap, first_frame_at, day, hour, payload, received_at,"
                " thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (event["event_id"], event["trap_id"], event["first_frame_at"], first.date().isoformat(), first.hour,
                 json.dumps(payload, separators=(",", ":")), received_at, thumbnail),
            )  # fmt: skip
            if cur.rowcount == 0:
                self.count(DUPLICATE, "event_id", received_at)
                return False
        return True

    def _upsert_trap(self, trap: str, column: str, value: str, at_column: str, at: str) -> None:
        with self.lock:
            self.db.execute(
                f"INSERT INTO traps (trap, {column}, {at_column}) VALUES (?, ?, ?) "
                f"ON CONFLICT (trap) DO UPDATE SET {column} = excluded.{column}, {at_column} = excluded.{at_column}",
                (trap, value, at),
            )

    def set_status(self, trap: str, status: dict[str, Any], received_at: str | None = None) -> None:
        self._upsert_trap(trap, "status", json.dumps(status), "status_received_at", received_at or now_iso())

    def set_availability(self, trap: str, value: str, received_at: str | None = None) -> None:
        self._upsert_trap(trap, "availability", value, "availability_at", received_at or now_iso())

    def set_config(self, trap: str, config: dict[str, Any], received_at: str | None = None) -> None:
        self._upsert_trap(trap, "config", json.dumps(config), "config_received_at", received_at or now_iso())

    def count(self, kind: str, reason: str, at: str | None = None) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO counters (kind, reason, count, last_at) VALUES (?, ?, 1, ?) ON CONFLICT (kind, reason)"
                " DO UPDATE SET count = count + 1, last_at = excluded.last_at",
                (kind, reason, at or now_iso()),
            )

    # -- reads ------------------------------------------------------------------------------------
    def counters(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {MALFORMED: {}, THUMBNAIL_DROPPED: {}, DUPLICATE: {}}
        with self.lock:
            rows = self.db.execute("SELECT kind, reason, count, last_at FROM counters ORDER BY kind, reason").fetchall()
        for r in rows:
            out.setdefault(r["kind"], {})[r["reason"]] = {"count": r["count"], "last_at": r["last_at"]}
        return out

    def traps(self, only: str | None = None) -> list[dict[str, Any]]:
        """One card per trap that sent anything valid: status, availability, config or an event."""
        where, params = (" WHERE t.trap = ?", [only]) if only is not None else ("", [])
        with self.lock:
            rows = self.db.execute(
                "SELECT t.trap AS trap, s.status, s.status_received_at, s.availability, s.availability_at, s.config,"
                " s.config_received_at,"
                " (SELECT COUNT(*) FROM events e WHERE e.trap = t.trap) AS events,"
                " (SELECT MAX(first_frame_at) FROM events e WHERE e.trap = t.trap) AS last_event_stored"
                " FROM (SELECT trap FROM traps UNION SELECT DISTINCT trap FROM events) t"
                f" LEFT JOIN traps s ON s.trap = t.trap{where} ORDER BY t.trap",
                params,
            ).fetchall()
        return [_card(r) for r in rows]

    def config(self, trap: str) -> dict[str, Any] | None:
        """The latest config the trap echoed (checked by the ingestor), or None."""
        with self.lock:
            r = self.db.execute("SELECT config FROM traps WHERE trap = ?", (trap,)).fetchone()
        return json.loads(r[0]) if r is not None and r[0] else None

    def trap(self, trap: str) -> dict[str, Any] | None:
        return next(iter(self.traps(only=trap)), None)

    def _where(self, trap: str | None, since: str | None, until: str | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if trap:
            clauses.append("trap = ?")
            params.append(trap)
        if since:
            clauses.append("day >= ?")
            params.append(since)
        if until:
            clauses.append("day <= ?")
            params.append(until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def events(
        self,
        trap: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Event summaries, latest arrival first (`seq` is the arrival order; `before` pages back)."""
        where, params = self._where(trap, since, until)
        if before is not None:
            where += (" AND " if where else " WHERE ") + "rowid < ?"
            params.append(before)
        with self.lock:
            rows = self.db.execute(
                "SELECT rowid AS seq, event_id, payload, received_at, thumbnail IS NOT NULL AS has_thumbnail"
                f" FROM events{where} ORDER BY rowid DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [summary(r["seq"], json.loads(r["payload"]), r["received_at"], bool(r["has_thumbnail"])) for r in rows]

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            r = self.db.execute(
                "SELECT rowid AS seq, payload, received_at, thumbnail IS NOT NULL AS has_thumbnail FROM events"
                " WHERE event_id = ?",
                (event_id,),
            ).fetchone()
        return None if r is None else summary(r["seq"], json.loads(r["payload"]), r["received_at"], r["has_thumbnail"])

    def export_rows(
        self, trap: str | None = None, since: str | None = None, until: str | None = None
    ) -> Iterator[tuple[dict[str, Any], str, bool]]:
        """(event payload, received_at, has thumbnail) in capture order, for the CSV export."""
        where, params = self._where(trap, since, until)
        with self.lock:
            rows = self.db.execute(
                f"SELECT payload, received_at, thumbnail IS NOT NULL AS t FROM events{where}"
                " ORDER BY first_frame_at, event_id",
                params,
            ).fetchall()
        for r in rows:
            yield json.loads(r["payload"]), r["received_at"], bool(r["t"])

    def thumbnail(self, event_id: str) -> bytes | None:
        with self.lock:
            r = self.db.execute("SELECT thumbnail FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return None if r is None or r[0] is None else bytes(r[0])

    def hour_of_day(
        self, trap: str | None = None, since: str | None = None, until: str | None = None
    ) -> dict[str, list[int]]:
        """Events per hour of the trap's day (0..23), per trap."""
        where, params = self._where(trap, since, until)
        with self.lock:
            rows = self.db.execute(
                f"SELECT trap, hour, COUNT(*) AS n FROM events{where} GROUP BY trap, hour ORDER BY trap", params
            ).fetchall()
        out: dict[str, list[int]] = {}
        for r in rows:
            out.setdefault(r["trap"], [0] * 24)[r["hour"]] = r["n"]
        return out

    def per_day(
        self, trap: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = self._where(trap, since, until)
        with self.lock:
            rows = self.db.execute(
                f"SELECT day, trap, COUNT(*) AS n FROM events{where} GROUP BY day, trap ORDER BY day, trap", params
            ).fetchall()
        return [{"day": r["day"], "trap": r["trap"], "count": r["n"]} for r in rows]


def summary(seq: int, event: dict[str, Any], received_at: str, has_thumbnail: bool) -> dict[str, Any]:
    """What the page shows of an event (no thumbnail bytes: it has its own URL)."""
    thumb = event.get("thumbnail") if has_thumbnail else None
    return {
        "seq": seq,
        "event_id": event["event_id"],
        "trap": event["trap_id"],
        "burst": event["burst"],
        "first_frame_at": event["first_frame_at"],
        "last_frame_at": event["last_frame_at"],
        "frames": len(event["frames"]),
        "files": [f["file"] for f in event["frames"][:3]],
        "max_score": event["max_score"],
        "unscored_frames": event["unscored_frames"],
        "cutoff": event["cutoff"],
        "model": event["model"],
        "received_at": received_at,
        "thumbnail": (
            {"url": f"api/thumbnails/{event['event_id']}.jpg", "width": thumb["width"], "height": thumb["height"]}
            if thumb
            else None
        ),
    }


def _card(r: sqlite3.Row) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(r["status"]) if r["status"] else {}
    config: dict[str, Any] = json.loads(r["config"]) if r["config"] else {}
    model = status.get("model") or {}
    cutoff = model.get("cutoff")
    if config and (not status or (r["config_received_at"] or "") > (r["status_received_at"] or "")):
        cutoff = config["cutoff"]  # a remote cutoff announced after the last heartbeat
    outbox = status.get("outbox") or {}
    return {
        "trap": r["trap"],
        "availability": r["availability"],  # online | offline | None (never said)
        "availability_at": r["availability_at"],
        "heartbeat_at": status.get("at"),  # the trap's clock
        "status_received_at": r["status_received_at"],
        "uptime_s": status.get("uptime_s"),
        "blank_ratio_today": status.get("blank_ratio_today"),
        "frames_today": status.get("frames_today"),
        "outbox_depth": outbox.get("depth"),
        "outbox_oldest_age_s": outbox.get("oldest_age_s"),
        "disk_free_mb": status.get("disk_free_mb"),
        "cpu_temperature_c": status.get("cpu_temperature_c"),
        "throttled": status.get("throttled"),
        "model": {"name": model["name"], "version": model["version"]} if model else None,
        "cutoff": cutoff,
        "cutoff_source": config.get("source"),
        "camera_cutoffs": config.get("camera_cutoffs") or {},  # cameras with their own (remote) cutoff
        "software": status.get("software"),
        "last_event_at": status.get("last_event_at") or r["last_event_stored"],
        "events": r["events"],
    }
