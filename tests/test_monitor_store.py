"""`blankfilter monitor`: the store and the ingestor without MQTT or HTTP: de-duplication on event_id,
malformed payloads counted (never stored), thumbnails checked, hour of day on the trap's clock, CSV
safe for spreadsheets. Payloads are made by the trap's own code (firmware_app.events.payloads)."""

from __future__ import annotations

import ast
import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FRAMES

from dashboard import contracts, csvexport
from dashboard.ingest import Ingestor, Limits
from dashboard.jpeg import jpeg_size
from dashboard.store import DUPLICATE, MALFORMED, THUMBNAIL_DROPPED, Store
from firmware_app.events.payloads import EventFrame, Topics, build_event, build_status, dumps, event_id
from firmware_app.events.thumbnail import make_thumbnail

T0 = 1_139_591_203.0  # 2006-02-10T17:06:43Z


def thumbnail() -> tuple[bytes, int, int]:
    thumb = make_thumbnail(FRAMES / "speciesnet" / "ocelot.jpg", 160, 12 * 1024)
    assert thumb is not None
    return thumb


def make_event(
    trap: str = "trap-01",
    burst: str = "b1",
    ts: float = T0,
    file: str = "kept/cam1/ocelot.jpg",
    thumb: tuple[bytes, int, int] | None = None,
    frames: int = 1,
) -> dict[str, Any]:
    """An event exactly as a trap builds it."""
    items = [
        EventFrame(file if i == 0 else f"kept/cam1/f{i}.jpg", f"{i:x}" * 64, ts + i, 0.9, 1.0) for i in range(frames)
    ]
    return build_event(trap, burst, items, 0.077102, ("blankfilter-cellnet", "1.1.0"), thumb)


def make_status(
    trap: str = "trap-01", model: str = "blankfilter-cellnet", depth: int = 0, now: float = T0
) -> dict[str, Any]:
    """A status heartbeat exactly as a trap builds it."""
    today = {"seen": 310, "kept": 41, "discarded": 268, "failed": 1}
    health = {"disk_free_mb": 25031.4, "cpu_temperature_c": 51.1, "throttled": "0x0"}
    return build_status(trap, now - 3600, now, today, today, (depth, None), health, (model, "1.1.0"), 0.077102, None)


def publish(ingestor: Ingestor, trap: str, leaf: str, payload: dict[str, Any] | bytes | str) -> str:
    data = payload if isinstance(payload, bytes) else (payload if isinstance(payload, str) else dumps(payload)).encode()
    return ingestor.handle(f"blankfilter/{trap}/{leaf}", data)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "monitor.db")


@pytest.fixture
def ingestor(store: Store) -> Ingestor:
    return Ingestor(store)


def test_topic_layout_is_the_traps() -> None:
    topics = Topics("blankfilter", "trap-01")
    for leaf in contracts.LEAVES:
        parsed = contracts.parse_topic(getattr(topics, leaf))
        assert parsed == contracts.Topic("trap-01", leaf)
    assert contracts.parse_topic(topics.set_cutoff) == contracts.Topic("trap-01", contracts.TO_TRAP, ("cutoff",))
    assert contracts.subscription() == "blankfilter/+/#"


def test_the_trap_and_the_monitor_do_not_import_each_other() -> None:
    """dashboard/ shares only the schema files and the topic layout; firmware_app never imports dashboard."""
    repo = Path(__file__).resolve().parent.parent

    def imports(folder: str) -> set[str]:
        names: set[str] = set()
        for path in (repo / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
        return names

    assert "firmware_app" not in imports("dashboard")
    assert "dashboard" not in imports("firmware_app")


def test_events_are_deduplicated_on_event_id(store: Store, ingestor: Ingestor) -> None:
    event = make_event()
    assert publish(ingestor, "trap-01", "event", event) == "event"
    assert publish(ingestor, "trap-01", "event", event) == "duplicate"  # a resend after a reconnect
    assert publish(ingestor, "trap-01", "event", make_event(burst="b2", ts=T0 + 60)) == "event"
    assert [e["event_id"] for e in store.events()] == [event_id("trap-01", "b2"), event_id("trap-01", "b1")]
    assert store.counters()[DUPLICATE]["event_id"]["count"] == 1
    assert store.traps()[0]["events"] == 2
    # The same store reopened: still there, still de-duplicated.
    store.close()
    again = Store(store.path)
    assert again.add_event(event, None) is False and len(again.events()) == 2


def test_malformed_payloads_are_counted_by_reason_and_never_stored(store: Store, ingestor: Ingestor) -> None:
    marker = "<script>alert('raw')</script>"
    bad_sha = make_event()
    bad_sha["frames"][0]["sha256"] = marker
    extra = make_event(burst="b3") | {"note": marker}
    outcomes = [
        publish(ingestor, "trap-01", "event", "{not json " + marker),
        publish(ingestor, "trap-01", "event", bad_sha),
        publish(ingestor, "trap-01", "event", extra),
        publish(ingestor, "trap-02", "event", make_event(trap="trap-01", burst="b4")),  # speaks for another trap
        publish(ingestor, "trap-01", "status", {"schema": "blankfilter-status/1", "trap_id": "trap-01"}),
        publish(ingestor, "trap-01", "availability", marker),
        publish(ingestor, "trap-01", "config", {"cutoff": "high"}),
        publish(ingestor, "trap-01", "firmware", "{}"),
        publish(ingestor, "bad trap!", "status", make_status()),
        publish(ingestor, "trap-01", "event", b"\xff\xfe" + b"x" * 100),
        ingestor.handle("blankfilter/trap-01/event", b"{" + b" " * (512 * 1024) + b"}"),
    ]
    assert all(o.startswith("malformed") for o in outcomes), outcomes
    assert publish(ingestor, "trap-01", "set/cutoff", "0.3") == "ignored: sent to a trap"  # the dashboard's own
    assert publish(ingestor, "trap-01", "status", b"") == "ignored: empty (a retained message cleared)"
    counts = {reason: c["count"] for reason, c in store.counters()[MALFORMED].items()}
    assert counts == {
        "not JSON": 2,
        "event schema: frames/*/sha256 (pattern)": 1,
        "event schema: (top) (additionalProperties)": 1,
        "event: trap_id is not the topic's": 1,
        "status schema: (top) (required)": 1,
        "availability: not online/offline/stopped": 1,
        "config: no cutoff in [0, 1]": 1,
        "unknown topic": 1,
        "trap id in topic": 1,
        "too large": 1,
    }
    assert store.events() == [] and store.traps() == []
    store.close()
    raw = b"".join(p.read_bytes() for p in Path(store.path).parent.glob("monitor.db*"))
    assert b"alert('raw')" not in raw  # never stored: the page cannot show it


def test_thumbnails_are_checked_and_bad_ones_dropped_not_the_event(store: Store, ingestor: Ingestor) -> None:
    jpeg, width, height = thumbnail()
    assert jpeg_size(jpeg) == (width, height)
    assert jpeg_size(jpeg[: len(jpeg) // 2]) is None  # truncated
    assert jpeg_size(b"\x89PNG\r\n\x1a\n" + jpeg) is None

    publish(ingestor, "trap-01", "event", make_event(burst="ok", thumb=(jpeg, width, height)))
    png = make_event(burst="png", thumb=(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 10, 10))
    not_b64 = make_event(burst="b64")
    not_b64["thumbnail"] = {"jpeg_base64": "@@not base64@@", "width": 10, "height": 10}
    for event in (png, not_b64):
        assert publish(ingestor, "trap-01", "event", event) == "event"
    small = Ingestor(store, limits=Limits(max_thumbnail_bytes=len(jpeg) - 1))
    assert publish(small, "trap-01", "event", make_event(burst="big", thumb=(jpeg, width, height))) == "event"

    stored = {e["burst"]: e for e in store.events()}
    assert set(stored) == {"ok", "png", "b64", "big"}
    assert stored["ok"]["thumbnail"] == {"url": f"api/thumbnails/{stored['ok']['event_id']}.jpg", "width": width,
                                         "height": height}  # fmt: skip
    assert store.thumbnail(stored["ok"]["event_id"]) == jpeg
    assert all(stored[b]["thumbnail"] is None and store.thumbnail(stored[b]["event_id"]) is None
               for b in ("png", "b64", "big"))  # fmt: skip
    dropped = {reason: c["count"] for reason, c in store.counters()[THUMBNAIL_DROPPED].items()}
    assert dropped == {"not a JPEG": 1, "not base64": 1, "too large": 1}
    # The base64 text is not kept in the stored payload (the bytes are in their own column).
    assert base64.b64encode(jpeg).decode()[:40] not in json.dumps(store.events())


def test_hour_of_day_and_days_come_from_the_traps_clock(store: Store, ingestor: Ingestor) -> None:
    publish(ingestor, "trap-01", "event", make_event(burst="a", ts=T0))  # 17:06Z
    publish(ingestor, "trap-01", "event", make_event(burst="b", ts=T0 + 40 * 60))  # 17:46Z
    publish(ingestor, "trap-01", "event", make_event(burst="c", ts=T0 + 10 * 3600))  # 03:06Z the next day
    publish(ingestor, "trap-02", "event", make_event(trap="trap-02", burst="a", ts=T0))
    # A trap that writes its local time with an offset: 23:30 where it stands, whatever UTC says.
    local = make_event(trap="trap-02", burst="tz")
    local["first_frame_at"] = local["last_frame_at"] = "2006-02-11T23:30:00+02:00"
    assert publish(ingestor, "trap-02", "event", local) == "event"

    hours = store.hour_of_day()
    assert hours["trap-01"][17] == 2 and hours["trap-01"][3] == 1 and sum(hours["trap-01"]) == 3
    assert hours["trap-02"][17] == 1 and hours["trap-02"][23] == 1 and sum(hours["trap-02"]) == 2
    assert store.hour_of_day(trap="trap-01", since="2006-02-11") == {"trap-01": [0, 0, 0, 1] + [0] * 20}
    assert store.per_day() == [
        {"day": "2006-02-10", "trap": "trap-01", "count": 2},
        {"day": "2006-02-10", "trap": "trap-02", "count": 1},
        {"day": "2006-02-11", "trap": "trap-01", "count": 1},
        {"day": "2006-02-11", "trap": "trap-02", "count": 1},
    ]
    assert [e["burst"] for e in store.events(trap="trap-02", until="2006-02-10")] == ["a"]


def test_status_availability_and_config_make_the_card(store: Store, ingestor: Ingestor) -> None:
    assert publish(ingestor, "trap-01", "status", make_status(depth=3)) == "status"
    assert publish(ingestor, "trap-01", "availability", "online") == "availability"
    assert publish(ingestor, "trap-01", "config", {"cutoff": 0.2, "source": "remote", "at": "x"}) == "config"
    card = store.trap("trap-01")
    assert card is not None
    assert card["availability"] == "online" and card["outbox_depth"] == 3 and card["blank_ratio_today"] == 0.8673
    # The remote cutoff came after the heartbeat: it is the one in force.
    assert card["model"] == {"name": "blankfilter-cellnet", "version": "1.1.0"} and card["cutoff"] == 0.2
    assert card["cutoff_source"] == "remote" and card["disk_free_mb"] == 25031.4 and card["cpu_temperature_c"] == 51.1
    assert card["heartbeat_at"] == "2006-02-10T17:06:43.000Z"
    publish(ingestor, "trap-01", "status", make_status(depth=0))  # the next heartbeat says what is in force
    assert store.trap("trap-01")["cutoff"] == 0.077102  # type: ignore[index]
    publish(ingestor, "trap-01", "availability", "offline")  # the last will
    assert store.trap("trap-01")["availability"] == "offline"  # type: ignore[index]


def test_notifications_go_to_the_pages(store: Store) -> None:
    seen: list[tuple[str, Any]] = []
    ingestor = Ingestor(store, lambda kind, data: seen.append((kind, data)))
    publish(ingestor, "trap-01", "event", make_event())
    publish(ingestor, "trap-01", "event", make_event())
    publish(ingestor, "trap-01", "event", "nope")
    kinds = [k for k, _ in seen]
    assert kinds == ["event", "trap", "counters", "counters"]
    assert seen[0][1]["event_id"] == event_id("trap-01", "b1") and seen[1][1]["trap"] == "trap-01"


def test_csv_export_is_safe_for_spreadsheets(store: Store, ingestor: Ingestor) -> None:
    publish(ingestor, "trap-01", "event", make_event(burst='=HYPERLINK("http://x")', file="+cmd|' /C calc'!A0"))
    publish(ingestor, "trap-01", "event", make_event(burst="-2+3", ts=T0 + 1, file="@SUM(A1)"))
    publish(ingestor, "trap-01", "event", make_event(burst='plain, "quoted"', ts=T0 + 2, file="kept/a.jpg"))
    text = csvexport.to_text(store.export_rows())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(csvexport.COLUMNS)
    assert [r["burst"] for r in rows] == ['\'=HYPERLINK("http://x")', "'-2+3", 'plain, "quoted"']
    assert [r["first_file"] for r in rows] == ["'+cmd|' /C calc'!A0", "'@SUM(A1)", "kept/a.jpg"]
    assert rows[0]["hour"] == "17" and rows[0]["trap_id"] == "trap-01" and rows[0]["max_score"] == "0.9"
    assert csvexport.to_text([]) == ",".join(csvexport.COLUMNS) + "\r\n"
    assert [csvexport.safe_cell(v) for v in ("\tx", "\rx", "a=b", 0.5, None)] == ["'\tx", "'\rx", "a=b", "0.5", ""]


FORMULAS = [" =1+1", "\n=1+1", "\r\n-1", "  @SUM(A1)", "\u3000=1+1", "\u00a0+1", "\ufeff=1+1",
            "＝1+1", "＋1", "－1", "＠SUM(A1)", " ＝1+1", "﹦1+1"]  # fmt: skip
NOT_FORMULAS = ["a=b", "kept/a.jpg", " x", "1-2", "0.5", "trap-01", "", "x＝1", "2006-02-10T17:06:43Z"]


@pytest.mark.parametrize("text", FORMULAS, ids=ascii)
def test_csv_cell_read_as_a_formula_after_whitespace_or_in_full_width_forms_gets_a_quote(text: str) -> None:
    assert csvexport.safe_cell(text) == "'" + text


@pytest.mark.parametrize("text", NOT_FORMULAS, ids=ascii)
def test_csv_cell_that_is_no_formula_is_left_as_it_is(text: str) -> None:
    assert csvexport.safe_cell(text) == text


def test_csv_export_guards_formulas_hidden_behind_whitespace_newlines_and_full_width_signs(
    store: Store, ingestor: Ingestor
) -> None:
    for i, file in enumerate(FORMULAS):
        assert publish(ingestor, "trap-01", "event", make_event(burst=f"b{i}", ts=T0 + i, file=file)) == "event"
    rows = list(csv.DictReader(io.StringIO(csvexport.to_text(store.export_rows()))))
    assert [r["first_file"] for r in rows] == ["'" + f for f in FORMULAS]


@pytest.mark.parametrize("trap", ["trap-01\n", "trap-01\r", "trap-01\n\n"], ids=ascii)
def test_a_trap_id_with_a_trailing_newline_is_refused(store: Store, ingestor: Ingestor, trap: str) -> None:
    assert not contracts.is_trap_id(trap)
    assert publish(ingestor, trap, "event", make_event(trap=trap)) == "malformed: trap id in topic"
    assert publish(ingestor, trap, "status", make_status(trap=trap)) == "malformed: trap id in topic"
    assert store.traps() == [] and not list(store.export_rows())


@pytest.mark.parametrize("cutoff", ['"٠.٥"', "٠.٥", '"0.5"', "0.٥", '"²"', "NaN", "Infinity", '"0.5\\n"'], ids=ascii)
def test_a_remote_cutoff_not_written_in_ascii_digits_is_refused(store: Store, ingestor: Ingestor, cutoff: str) -> None:
    payload = ('{"cutoff": ' + cutoff + ', "source": "remote"}').encode()
    assert publish(ingestor, "trap-01", "status", make_status()) == "status"
    assert publish(ingestor, "trap-01", "config", payload).startswith("malformed"), payload
    card = store.trap("trap-01")
    assert card is not None and card["cutoff"] == 0.077102 and card["cutoff_source"] != "remote"
