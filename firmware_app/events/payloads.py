"""The event and status payloads (pure: no I/O) and the topics they go to.

Event `blankfilter-event/1`, one per kept burst (a single frame is a burst of one); subscribers
de-duplicate on `event_id`, which is stable across restarts and resends; one sent long after its
decision (a backlog) carries `"late": true`. Status
`blankfilter-status/1`, retained, every mqtt.status_interval_s. JSON Schemas: firmware_app/schemas/.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from firmware_app import __version__
from firmware_app.hashing import sha256_text

EVENT_SCHEMA = "blankfilter-event/1"
# A remote cutoff (<base>/set/cutoff, per camera too) must lie here. The floor is under every model
# card's cutoff (1.2.0's is 0.003: a floor over it would refuse the card's own value and every lower
# one a field audit proposes); a lower cutoff only keeps more. The ceiling refuses a value that
# would discard nearly everything.
CUTOFF_RANGE = (0.001, 0.99)
STATUS_SCHEMA = "blankfilter-status/1"


@dataclass(frozen=True)
class Topics:
    prefix: str
    trap_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.trap_id}"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def config(self) -> str:
        return f"{self.base}/config"

    @property
    def set_cutoff(self) -> str:
        return f"{self.base}/set/cutoff"

    @property
    def audit(self) -> str:
        return f"{self.base}/audit"

    def set_camera_cutoff(self, camera: str) -> str:
        return f"{self.set_cutoff}/{camera}"

    @property
    def thumbnail(self) -> str:
        return f"{self.base}/thumbnail"

    @property
    def animal(self) -> str:
        return f"{self.base}/animal"


@dataclass(frozen=True)
class EventFrame:
    file: str  # where the frame is now, relative to store.root (or its inbox path, if it stayed there)
    sha256: str
    captured_ts: float
    score: float | None  # None: it could not be scored (kept)
    gamma: float | None
    context_score: float | None = None


def event_id(trap_id: str, burst_key: str) -> str:
    """Stable for a burst: the same after a restart or a resend, different between traps."""
    return sha256_text(f"{trap_id}|{burst_key}")[:32]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_event(
    trap_id: str,
    burst_key: str,
    frames: list[EventFrame],
    cutoff: float,
    model: tuple[str, str],
    thumbnail: tuple[bytes, int, int] | None = None,
) -> dict[str, Any]:
    scores = [f.score for f in frames if f.score is not None]
    event: dict[str, Any] = {
        "schema": EVENT_SCHEMA,
        "event_id": event_id(trap_id, burst_key),
        "trap_id": trap_id,
        "burst": burst_key,
        "first_frame_at": iso(min(f.captured_ts for f in frames)),
        "last_frame_at": iso(max(f.captured_ts for f in frames)),
        "frames": [_frame(f) for f in frames],
        "max_score": _round(max(scores)) if scores else None,
        "unscored_frames": sum(1 for f in frames if f.score is None),
        "cutoff": round(cutoff, 6),
        "model": {"name": model[0], "version": model[1]},
        "software": __version__,
    }
    if thumbnail is not None:
        data, width, height = thumbnail
        event["thumbnail"] = {"jpeg_base64": base64.b64encode(data).decode(), "width": width, "height": height}
    return event


def as_published(payload: str, created_at: str, now: float, late_after_s: float) -> tuple[str, dict[str, Any]]:
    """An outbox event as it goes out, and its fields: marked `"late": true` when it was decided
    (created_at, the outbox's UTC ISO time) late_after_s or longer before now, e.g. a backlog sent
    after an outage; otherwise its stored bytes, unchanged. A payload that is not a JSON object (the
    trap never writes one) goes as it is, with no fields: it must not stop delivery."""
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        return payload, {}
    if not isinstance(event, dict):
        return payload, {}
    try:
        age = now - datetime.fromisoformat(created_at).timestamp()
    except ValueError:  # an unreadable time: the event still goes, as it is
        return payload, event
    if age < late_after_s:
        return payload, event
    event["late"] = True
    return dumps(event), event


def thumbnail_jpeg(event: dict[str, Any]) -> bytes | None:
    """The event's thumbnail as raw JPEG bytes (None: it has none)."""
    thumbnail = event.get("thumbnail")
    if not isinstance(thumbnail, dict) or not isinstance(thumbnail.get("jpeg_base64"), str):
        return None
    try:
        return base64.b64decode(thumbnail["jpeg_base64"], validate=True)
    except ValueError:
        return None


AUDIT_SCHEMA = "blankfilter-audit/1"


@dataclass(frozen=True)
class AuditFrame:
    file: str  # in audit/, relative to store.root
    score: float | None
    context_score: float | None
    context_state: str | None
    action: str
    captured_ts: float


def audit_id(trap_id: str, burst_key: str) -> str:
    """Stable for a burst, and never an event_id (an audited burst has no event, but the outbox is one)."""
    return sha256_text(f"audit|{trap_id}|{burst_key}")[:32]


def build_audit(
    trap_id: str,
    camera: str,
    burst_key: str,
    frames: list[AuditFrame],
    cutoffs: tuple[float, float | None],
    thumbnail: tuple[bytes, int, int] | None = None,
) -> dict[str, Any]:
    """`blankfilter-audit/1`: an audited burst (discarded, kept in audit/) for people to review."""
    states = {f.context_state for f in frames}
    audit: dict[str, Any] = {
        "schema": AUDIT_SCHEMA,
        "id": audit_id(trap_id, burst_key),
        "trap": trap_id,
        "camera": camera,
        "burst": burst_key,
        "first_capture": iso(min(f.captured_ts for f in frames)),
        "last_capture": iso(max(f.captured_ts for f in frames)),
        "frames": [_audit_frame(f) for f in frames],
        "context_state": states.pop() if len(states) == 1 else "mixed",
        "cutoffs": {"cutoff": round(cutoffs[0], 6), "context_cutoff": _round(cutoffs[1])},
    }
    if thumbnail is not None:
        data, width, height = thumbnail
        audit["thumbnail"] = {"jpeg_base64": base64.b64encode(data).decode(), "width": width, "height": height}
    return audit


def _audit_frame(f: AuditFrame) -> dict[str, Any]:
    return {
        "file": f.file,
        "score": _round(f.score),
        "context_score": _round(f.context_score),
        "context_state": f.context_state,
        "action": f.action,
    }


def _frame(f: EventFrame) -> dict[str, Any]:
    return {
        "file": f.file,
        "sha256": f.sha256,
        "captured_at": iso(f.captured_ts),
        "score": _round(f.score),
        "gamma": f.gamma,
        "context_score": _round(f.context_score),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=False)


def build_status(
    trap_id: str,
    started_at: float,
    now: float,
    since_start: dict[str, int],
    today: dict[str, int],
    outbox: tuple[int, str | None],
    health: dict[str, Any],
    model: tuple[str, str],
    cutoff: float,
    last_event_at: str | None,
    references: dict[str, dict[str, dict[str, Any]]] | None = None,
    publisher: dict[str, Any] | None = None,
    bursts: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """`references` (reference_freshness()): left out when the trap cannot say (no bank, a broken one).
    `publisher`: left out until the MQTT publisher dropped a message or was restarted."""
    depth, oldest = outbox
    oldest_age = None
    if oldest:
        oldest_age = max(0.0, now - datetime.fromisoformat(oldest).timestamp())
    decided = today["kept"] + today["discarded"]
    status: dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "trap_id": trap_id,
        "at": iso(now),
        "uptime_s": round(now - started_at, 1),
        "frames_since_start": since_start,
        "frames_today": today,
        "blank_ratio_today": round(today["discarded"] / decided, 4) if decided else None,
        "outbox": {"depth": depth, "oldest_age_s": None if oldest_age is None else round(oldest_age, 1)},
        "last_event_at": last_event_at,
        "model": {"name": model[0], "version": model[1], "cutoff": round(cutoff, 6)},
        "software": __version__,
        **health,
    }
    if references is not None:
        status["references"] = references
    if publisher is not None:
        status["publisher"] = publisher
    for key, per_camera in (bursts or {}).items():  # Ledger.bursts_by_camera: discarded, audited, kept
        status[f"{key}_bursts"] = per_camera
    return status


def reference_freshness(rows: list[dict[str, Any]], now: float) -> dict[str, dict[str, dict[str, Any]]]:
    """context.bank.freshness() rows, compact for the status: {camera: {mode: {count, age_s}}}, age_s
    the seconds since the camera's newest reference of that mode was added (the trap's clock, as `at`)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        try:
            added = datetime.fromisoformat(str(row["newest_added_at"])).timestamp()
            age: float | None = round(max(0.0, now - added), 1)
        except ValueError:
            age = None
        out.setdefault(str(row["camera"]), {})[str(row["mode"])] = {"count": int(row["references"]), "age_s": age}
    return out
