"""What the monitor shares with the trap: the JSON schemas and the topic layout. Nothing else.

The schema files are read from the installed `firmware_app/schemas/` folder as data: the trap's
modules are never imported (`find_spec` locates a package without running it). The topic layout is
docs/events.md's: `<prefix>/<trap_id>/<leaf>`; tests/test_monitor_store.py checks it against the
trap's own `Topics`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

EVENT_SCHEMA_FILE = "event-1.schema.json"
STATUS_SCHEMA_FILE = "status-1.schema.json"
AUDIT_SCHEMA_FILE = "audit-1.schema.json"
DEFAULT_PREFIX = "blankfilter"
EVENT, STATUS, AVAILABILITY, CONFIG, AUDIT = "event", "status", "availability", "config", "audit"
LEAVES = (EVENT, STATUS, AVAILABILITY, CONFIG, AUDIT)
# The trap's accepted range for a remote cutoff (firmware_app.events.payloads.CUTOFF_RANGE, and
# docs/events.md); tests/test_audit_review.py checks the two are the same.
CUTOFF_RANGE = (0.001, 0.99)
TO_TRAP = "set"  # <prefix>/<trap>/set/...: sent *to* a trap (remote cutoff), not from it: ignored


def cutoff_payload(cutoff: float) -> bytes:
    """A cutoff as the trap reads it on set/cutoff: ASCII digits (docs/events.md)."""
    return f"{cutoff:.6g}".encode()


def set_cutoff_topic(prefix: str, trap: str, camera: str) -> str:
    """Where a camera's own cutoff is sent: `<prefix>/<trap>/set/cutoff/<camera>`."""
    return f"{prefix}/{trap}/{TO_TRAP}/cutoff/{camera}"


AVAILABILITY_VALUES = ("online", "offline", "stopped")  # stopped: a clean stop; offline: the last will
SHOWN_ELSEWHERE = ("thumbnail", "animal")  # raw JPEG and ON/OFF for Home Assistant: the event carries both


class SchemaMissing(RuntimeError):
    """The trap's schema files cannot be found (blankfilter is not installed next to the monitor)."""


def schemas_dir() -> Path:
    spec = importlib.util.find_spec("firmware_app")
    candidates = [Path(p) / "schemas" for p in (spec.submodule_search_locations or [])] if spec else []
    candidates.append(Path(__file__).resolve().parent.parent / "firmware_app" / "schemas")  # a source checkout
    for folder in candidates:
        if (folder / EVENT_SCHEMA_FILE).is_file() and (folder / STATUS_SCHEMA_FILE).is_file():
            return folder
    raise SchemaMissing(f"no {EVENT_SCHEMA_FILE} / {STATUS_SCHEMA_FILE} in {', '.join(map(str, candidates))}")


@cache
def load_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schemas_dir() / name).read_text(encoding="utf-8"))
    return schema


@cache
def trap_id_pattern() -> re.Pattern[str]:
    """A trap id as the event schema allows it (and the trap's config enforces): also used for topics.

    Use it through `is_trap_id`: the schema's pattern ends in `$`, which in Python also matches
    before a trailing newline, so only a full match is a trap id.
    """
    return re.compile(load_schema(EVENT_SCHEMA_FILE)["properties"]["trap_id"]["pattern"], re.ASCII)


def is_trap_id(text: str) -> bool:
    """The whole text is a trap id: "trap-01\\n" is not (it would end up in headers and file names)."""
    return trap_id_pattern().fullmatch(text) is not None


@dataclass(frozen=True)
class Topic:
    trap: str
    leaf: str  # event, status, availability, config, or the first level below the trap for others
    rest: tuple[str, ...] = ()


def subscription(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/+/#"


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> Topic | None:
    """`<prefix>/<trap>/<leaf>[/...]` -> Topic, None when the topic is not under the prefix at all."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) < 2:
        return None
    return Topic(parts[0], parts[1], tuple(parts[2:]))
