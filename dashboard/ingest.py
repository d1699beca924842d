"""One MQTT message in: checked against the trap's contract, stored, pushed to the open pages.

Whatever fails a check is counted by reason (the page shows the counts) and logged (rate-limited,
values repr()-escaped and cut short), never stored or shown: a payload over the size cap, not JSON,
not valid for its schema, a trap id in the payload other than the topic's, a topic the traps do not
publish. A thumbnail that is not base64, over its cap or not a whole JPEG is dropped and counted; the
event itself is kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dashboard import contracts
from dashboard.fieldrecall import FieldRecall
from dashboard.jpeg import jpeg_size
from dashboard.reviews import Reviews
from dashboard.store import MALFORMED, THUMBNAIL_DROPPED, Store, now_iso, parse_time

log = logging.getLogger(__name__)

Notify = Callable[[str, Any], None]  # (kind, data) -> pushed to the pages: event, trap, counters


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int = 512 * 1024
    max_thumbnail_bytes: int = 64 * 1024  # decoded; the trap sends at most mqtt.thumbnail_max_kb (12 KB)
    max_thumbnail_side: int = 1024
    max_audit_thumbnail_bytes: int = 256 * 1024  # store.audit_thumbnail_px (640) is big enough to spot a mouse
    max_audit_thumbnail_side: int = 2048


class Refused(Exception):
    """A message that fails a check; `reason` is a short, bounded key (it becomes a counter)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _validator(name: str) -> Any:
    import jsonschema  # the `dashboard` extra

    schema = contracts.load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_reason(kind: str, error: Any) -> str:
    """`event schema: frames/*/sha256 (pattern)`: the field and the rule, never the value."""
    path = "/".join("*" if isinstance(p, int) else str(p) for p in error.absolute_path) or "(top)"
    return f"{kind} schema: {path} ({error.validator})"[:120]


class Ingestor:
    def __init__(
        self,
        store: Store,
        notify: Notify | None = None,
        prefix: str = contracts.DEFAULT_PREFIX,
        limits: Limits | None = None,
        field_recall: FieldRecall | None = None,
    ) -> None:
        self.store, self.prefix, self.limits = store, prefix, limits or Limits()
        self.notify: Notify = notify or (lambda _kind, _data: None)
        self.recall = field_recall or FieldRecall(store, Reviews(store))
        self.event_validator = _validator(contracts.EVENT_SCHEMA_FILE)
        self.status_validator = _validator(contracts.STATUS_SCHEMA_FILE)
        self.audit_validator = _validator(contracts.AUDIT_SCHEMA_FILE)
        self._last_log: dict[str, tuple[float, int]] = {}  # reason -> (monotonic time logged, suppressed since)
        # Publishes to a trap without waiting (this runs in the MQTT client's own thread): set by the
        # CLI once the subscriber exists; None: confirmed cutoffs are not sent again.
        self.resend: Callable[[str, bytes], None] | None = None

    # -- the one entry point ----------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, retained: bool = False) -> str:
        """Process one message; returns what happened (for tests and debug logs)."""
        log.debug("message on %.120r: %d bytes%s", topic, len(payload), ", retained" if retained else "")
        try:
            return self._handle(topic, payload)
        except Refused as exc:
            self._refuse(exc.reason, topic, exc.detail)
            return f"malformed: {exc.reason}"

    def _handle(self, topic: str, payload: bytes) -> str:
        parsed = contracts.parse_topic(topic, self.prefix)
        if parsed is None:
            raise Refused("topic", "not <prefix>/<trap>/<leaf>")
        if parsed.leaf == contracts.TO_TRAP:
            return "ignored: sent to a trap"
        if not contracts.is_trap_id(parsed.trap):
            raise Refused("trap id in topic")
        if parsed.leaf in contracts.SHOWN_ELSEWHERE and not parsed.rest:
            return "ignored: the event carries it"
        if parsed.leaf not in contracts.LEAVES or parsed.rest:
            raise Refused("unknown topic")
        if len(payload) > self.limits.max_payload_bytes:
            raise Refused("too large", f"{len(payload)} bytes > {self.limits.max_payload_bytes}")
        if not payload and parsed.leaf != contracts.EVENT:
            return "ignored: empty (a retained message cleared)"
        if parsed.leaf == contracts.AVAILABILITY:
            return self._availability(parsed.trap, payload)
        data = self._json(payload)
        if parsed.leaf == contracts.EVENT:
            return self._event(parsed.trap, data)
        if parsed.leaf == contracts.STATUS:
            return self._status(parsed.trap, data)
        if parsed.leaf == contracts.AUDIT:
            return self._audit(parsed.trap, data)
        return self._config(parsed.trap, data)

    # -- per topic --------------------------------------------------------------------------------
    @staticmethod
    def _json(payload: bytes) -> Any:
        try:
            return json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Refused("not JSON") from None

    def _check(self, kind: str, validator: Any, data: Any, trap: str, key: str = "trap_id") -> None:
        error = next(iter(validator.iter_errors(data)), None)
        if error is not None:
            raise Refused(schema_reason(kind, error), str(error.message))
        if data[key] != trap:
            raise Refused(f"{kind}: trap_id is not the topic's")

    def _event(self, trap: str, event: Any) -> str:
        self._check("event", self.event_validator, event, trap)
        for key in ("first_frame_at", "last_frame_at"):
            if parse_time(event[key]) is None:
                raise Refused(f"event schema: {key} (date-time)")
        thumbnail = self._thumbnail(event.get("thumbnail"))
        if not self.store.add_event(event, thumbnail):
            log.debug("event %s from %s: already stored (a resend)", event["event_id"], trap)
            self.notify("counters", self.store.counters())
            return "duplicate"
        log.info("event %s from %s at %s", event["event_id"], trap, event["first_frame_at"])
        self.notify("event", self.store.event(event["event_id"]))
        self.notify("trap", self.store.trap(trap))
        return "event"

    def _audit(self, trap: str, audit: Any) -> str:
        """An audited burst (discarded, kept in the trap's audit/ sample): into the review queue."""
        self._check("audit", self.audit_validator, audit, trap, key="trap")
        for key in ("first_capture", "last_capture"):
            if parse_time(audit[key]) is None:
                raise Refused(f"audit schema: {key} (date-time)")
        limit, side = self.limits.max_audit_thumbnail_bytes, self.limits.max_audit_thumbnail_side
        thumbnail = self._thumbnail(audit.get("thumbnail"), limit, side)
        if not self.recall.reviews.add_audit(audit, thumbnail):
            log.debug("audit %s from %s: already stored (a resend)", audit["id"], trap)
            self.notify("counters", self.store.counters())
            return "duplicate"
        log.info("audit %s from %s camera %.80r", audit["id"], trap, audit["camera"])
        self.notify("audit", {"trap": trap, "camera": audit["camera"], "id": audit["id"]})
        self.notify("recall", {"trap": trap, "cameras": self.recall.cameras(trap)})
        return "audit"

    def _thumbnail(self, thumb: dict[str, Any] | None, limit: int = 0, side: int = 0) -> bytes | None:
        if thumb is None:
            return None
        reason = ""
        data = b""
        limit = limit or self.limits.max_thumbnail_bytes
        text = thumb["jpeg_base64"]
        if len(text) > (limit * 4) // 3 + 4:
            reason = "too large"
        else:
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                reason = "not base64"
        if not reason and len(data) > limit:
            reason = "too large"
        if not reason and jpeg_size(data, side or self.limits.max_thumbnail_side) is None:
            reason = "not a JPEG"
        if reason:
            self.store.count(THUMBNAIL_DROPPED, reason)
            self._log_limited(f"thumbnail {reason}", "thumbnail dropped (%s); the event is kept", reason)
            self.notify("counters", self.store.counters())
            return None
        return data

    def _status(self, trap: str, status: Any) -> str:
        self._check("status", self.status_validator, status, trap)
        self.store.set_status(trap, status)
        self.recall.reviews.set_counts(trap, status)
        self.notify("trap", self.store.trap(trap))
        self.notify("recall", {"trap": trap, "cameras": self.recall.cameras(trap)})
        return "status"

    def _availability(self, trap: str, payload: bytes) -> str:
        value = payload.decode("utf-8", "replace").strip()
        if value not in contracts.AVAILABILITY_VALUES:
            raise Refused("availability: not online/offline/stopped")
        self.store.set_availability(trap, value)
        log.info("trap %s is %s", trap, value)
        self.notify("trap", self.store.trap(trap))
        return "availability"

    def _config(self, trap: str, config: Any) -> str:
        cutoff = config.get("cutoff") if isinstance(config, dict) else None
        if not _is_cutoff(cutoff):
            raise Refused("config: no cutoff in [0, 1]")
        source = config.get("source")
        kept: dict[str, Any] = {"cutoff": cutoff, "source": source if source in ("start", "remote") else None}
        cameras = config.get("camera_cutoffs")
        if isinstance(cameras, dict) and len(cameras) <= 1000:
            kept["camera_cutoffs"] = {str(c)[:200]: v for c, v in cameras.items() if _is_cutoff(v)}
        if isinstance(config.get("remote_cutoff"), bool):
            kept["remote_cutoff"] = config["remote_cutoff"]
        self.store.set_config(trap, kept)
        self.recall.reviews.cutoffs_echoed(trap, kept.get("camera_cutoffs") or {})
        if kept["source"] == "start" and kept.get("remote_cutoff") is True:
            self._send_waiting_cutoffs(trap)
        self.notify("trap", self.store.trap(trap))
        self.notify("recall", {"trap": trap, "cameras": self.recall.cameras(trap)})
        return "config"

    def _send_waiting_cutoffs(self, trap: str) -> None:
        """The trap just connected (its echo says `start`): a camera cutoff the operator confirmed while
        it was away never reached it (its session is clean, and a retained cutoff it ignores on
        purpose), so it goes again, once per connect, until an echo shows it in force."""
        if self.resend is None:
            return
        for camera, request in self.recall.reviews.waiting_cutoffs(trap).items():
            topic = contracts.set_cutoff_topic(self.prefix, trap, camera)
            self.resend(topic, contracts.cutoff_payload(request["cutoff"]))
            log.info("trap %s is back: camera %.80r's cutoff %.4g (confirmed by %.100r at %s) sent again",
                     trap, camera, request["cutoff"], request["who"], request["at"])  # fmt: skip

    # -- refusals ---------------------------------------------------------------------------------
    def _refuse(self, reason: str, topic: str, detail: str) -> None:
        self.store.count(MALFORMED, reason, now_iso())
        self._log_limited(
            reason, "malformed payload on %.120r: %s%s", topic, reason, f" ({detail[:160]!r})" * bool(detail)
        )
        self.notify("counters", self.store.counters())

    def _log_limited(self, key: str, fmt: str, *args: Any) -> None:
        """At most one line per reason every 10 s, saying how many were not logged in between."""
        now = time.monotonic()
        last, suppressed = self._last_log.get(key, (-1e9, 0))
        if now - last < 10:
            self._last_log[key] = (last, suppressed + 1)
            return
        self._last_log[key] = (now, 0)
        log.warning(fmt + (f" (and {suppressed} more like it not logged)" if suppressed else ""), *args)


def _is_cutoff(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
