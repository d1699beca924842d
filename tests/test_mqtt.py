"""MQTT events against a real mosquitto started by the test: every kept burst arrives, schema-valid,
across broker outages, restarts and kill -9; availability, status, remote cutoff, discovery."""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from conftest import ALL_FRAMES, BURSTS, FRAMES, MODELS
from mqtt_broker import Broker, Subscriber, free_port, wait_until
from PIL import Image, ImageEnhance
from test_cli_run import log_has, started

from firmware_app.config import load_config
from firmware_app.context.bank import ReferenceBank
from firmware_app.events import mqtt as mqtt_module
from firmware_app.events.mqtt import Hooks, Publisher, parse_cutoff
from firmware_app.events.payloads import EventFrame, build_event, dumps, event_id
from firmware_app.events.thumbnail import make_thumbnail
from firmware_app.ledger import Ledger, OutboxEvent

SCHEMAS = Path(__file__).resolve().parent.parent / "firmware_app" / "schemas"
EVENT_SCHEMA = json.loads((SCHEMAS / "event-1.schema.json").read_text())
STATUS_SCHEMA = json.loads((SCHEMAS / "status-1.schema.json").read_text())
TOPIC = "blankfilter/trap-01"


def query(store: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows, or None while the daemon has not created its ledger yet (the file exists before its tables)."""
    db = sqlite3.connect(store / "ledger.db")
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()


def kept_bursts(store: Path) -> set[str]:
    rows = query(store, "SELECT DISTINCT burst FROM frames WHERE action IN ('kept', 'failed_kept')")
    return {r[0] for r in rows or []}


def undelivered(store: Path) -> int:
    rows = query(store, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
    return int(rows[0][0]) if rows is not None else 10**9  # not created yet: certainly not all delivered


def received_bursts(sub: Subscriber) -> dict[str, dict[str, Any]]:
    """Events by event_id: de-duplicated, as a subscriber must."""
    return {e["event_id"]: e for e in sub.json_on(f"{TOPIC}/event")}


@pytest.fixture
def sub(broker: Broker) -> Iterator[Subscriber]:
    s = Subscriber(broker.port, "#")
    yield s
    s.close()


def mqtt_args(store_args: Callable[..., list[str]], port: int, **sets: object) -> list[str]:
    base: dict[str, object] = {"mqtt__host": "127.0.0.1", "mqtt__port": port, "mqtt__drain_s": 10,
                               "decision__burst_gap_s": 5, "context__enabled": "false"}  # fmt: skip
    return store_args(**(base | sets))


# -- payloads -------------------------------------------------------------------------------------
def test_event_payload_is_schema_valid_and_its_id_stable() -> None:
    thumb = make_thumbnail(FRAMES / "speciesnet" / "ocelot.jpg", 160, 12 * 1024)
    assert thumb is not None and len(thumb[0]) <= 12 * 1024 and max(thumb[1:]) <= 160
    frames = [EventFrame("kept/cam/a.jpg", "a" * 64, 1_700_000_000.5, 0.91, 1.0),
              EventFrame("kept/cam/b.jpg", "b" * 64, 1_700_000_001.0, None, None, 0.4)]  # fmt: skip
    event = build_event("trap-01", "burst-7", frames, 0.08, ("m", "1.0"), thumb)
    jsonschema.validate(event, EVENT_SCHEMA)
    assert event["event_id"] == event_id("trap-01", "burst-7") != event_id("trap-02", "burst-7")
    assert event["max_score"] == 0.91 and event["unscored_frames"] == 1
    assert event["first_frame_at"] == "2023-11-14T22:13:20.500Z"


def test_thumbnail_fits_a_tiny_cap_or_is_left_out(tmp_path: Path) -> None:
    assert make_thumbnail(FRAMES / "speciesnet" / "ocelot.jpg", 160, 1500) is not None  # shrinks to fit
    assert make_thumbnail(FRAMES / "speciesnet" / "ocelot.jpg", 160, 50) is None  # cannot: no thumbnail
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert make_thumbnail(tmp_path / "bad.jpg", 160, 12000) is None


@pytest.mark.parametrize(
    ("payload", "value"),
    [(b"0.3", 0.3), (b'{"cutoff": 0.05}', 0.05), (b"0.003", 0.003), (b"0.0005", None), (b"1.5", None), (b"nan", None),
     (b"abc", None), (b"", None), (b"\xff\xfe", None), (b'{"cut": 0.3}', None)],
)  # fmt: skip
def test_remote_cutoff_parsing(payload: bytes, value: float | None) -> None:
    parsed, why = parse_cutoff(payload)
    assert parsed == value
    assert bool(why) == (value is None)


# -- a run against a broker -----------------------------------------------------------------------
def test_run_once_publishes_every_kept_burst_with_status_and_availability(
    tmp_path: Path, broker: Broker, sub: Subscriber, make_inbox: Callable[..., Path], run_cli: Any,
    store_args: Callable[..., list[str]],
) -> None:  # fmt: skip
    make_inbox()
    done = run_cli("run", "--once", *mqtt_args(store_args, broker.port), check_rc=0)
    store = tmp_path / "store"
    kept = kept_bursts(store)
    assert kept, "the fixture set must keep some bursts"
    wait_until(lambda: len(received_bursts(sub)) >= len(kept), 10, "the events")
    events = received_bursts(sub)
    assert {e["burst"] for e in events.values()} == kept
    for event in events.values():
        jsonschema.validate(event, EVENT_SCHEMA)
        assert event["trap_id"] == "trap-01" and "thumbnail" in event
        assert "late" not in event, "decided a moment ago: not late"
        assert all((store / f["file"]).is_file() for f in event["frames"])  # the files are where it says
    assert undelivered(store) == 0
    statuses = sub.json_on(f"{TOPIC}/status")
    assert statuses
    jsonschema.validate(statuses[-1], STATUS_SCHEMA)
    assert statuses[-1]["model"]["cutoff"] > 0
    assert sub.on(f"{TOPIC}/availability")[0] == b"online"
    wait_until(lambda: sub.on(f"{TOPIC}/availability")[-1] == b"stopped", 5, "stopped on a clean stop")
    late = Subscriber(broker.port, f"{TOPIC}/#")  # retained: what a dashboard sees when it connects later
    wait_until(lambda: bool(late.on(f"{TOPIC}/status")) and bool(late.on(f"{TOPIC}/availability")), 5, "retained")
    assert late.on(f"{TOPIC}/availability") == [b"stopped"]
    assert not late.on(f"{TOPIC}/event")  # events are not retained
    late.close()
    assert "MQTT: connected" in done.stderr


def test_no_broker_keeps_events_and_a_later_run_sends_them(
    tmp_path: Path, make_inbox: Callable[..., Path], run_cli: Any, store_args: Callable[..., list[str]]
) -> None:
    make_inbox()
    port = free_port()  # nothing listens there yet
    done = run_cli("run", "--once", *mqtt_args(store_args, port, mqtt__drain_s=1), check_rc=0)
    store = tmp_path / "store"
    waiting = undelivered(store)
    assert waiting == len(kept_bursts(store)) > 0
    assert done.stderr.count("cannot reach the broker") == 1  # one line, not one per retry
    assert f"{waiting} event(s) wait in the outbox" in done.stderr
    # restarted while the broker is still down: nothing lost, nothing doubled
    run_cli("run", "--once", *mqtt_args(store_args, port, mqtt__drain_s=1), check_rc=0)
    assert undelivered(store) == waiting

    b = Broker(tmp_path / "broker", port=port).start()
    try:
        s = Subscriber(port)
        run_cli("run", "--once", *mqtt_args(store_args, port), check_rc=0)  # no new frames: only the backlog
        wait_until(lambda: len(received_bursts(s)) >= waiting, 10, "the backlog")
        assert {e["burst"] for e in received_bursts(s).values()} == kept_bursts(store)
        assert undelivered(store) == 0
        s.close()
    finally:
        b.stop()


def test_no_broker_configured_is_normal(
    tmp_path: Path, make_inbox: Callable[..., Path], run_cli: Any, store_args: Callable[..., list[str]]
) -> None:
    make_inbox()
    done = run_cli("run", "--once", *store_args(), check_rc=0)
    assert "no broker (mqtt.host is empty): events are kept in the outbox" in done.stderr
    assert undelivered(tmp_path / "store") == len(kept_bursts(tmp_path / "store")) > 0


# -- the daemon: outages, restarts, kill -9 ---------------------------------------------------------
def add_bursts(inbox: Path, tag: str, base: float) -> None:
    """The fixture bursts again, under a new camera folder (new files, new bursts)."""
    for b, (folder, names) in enumerate(BURSTS):
        for i, name in enumerate(names):
            dest = inbox / f"{tag}-{folder}" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((FRAMES / folder / name).read_bytes())
            os.utime(dest, (base + b * 600 + i, base + b * 600 + i))


def daemon_args(store_args: Callable[..., list[str]], port: int, **sets: object) -> list[str]:
    return ["run", *mqtt_args(store_args, port, source__poll_s=0.5, decision__burst_gap_s=1, **sets)]


def test_broker_outage_and_restart_lose_no_event(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    inbox, store, log = tmp_path / "inbox", tmp_path / "store", tmp_path / "daemon.log"
    inbox.mkdir()
    with started(daemon_args(store_args, broker.port), log) as proc:
        add_bursts(inbox, "a", 1_700_000_000)
        wait_until(lambda: store.joinpath("ledger.db").exists() and len(kept_bursts(store)) > 0
                   and undelivered(store) == 0 and len(received_bursts(sub)) == len(kept_bursts(store)),
                   60, "the first bursts' events")  # fmt: skip
        broker.stop()
        before = len(kept_bursts(store))
        add_bursts(inbox, "b", 1_700_100_000)  # decided while the broker is down
        wait_until(lambda: len(kept_bursts(store)) > before, 60, "bursts decided during the outage")
        wait_until(lambda: not list(inbox.rglob("*.JPG")) and not list(inbox.rglob("*.jpg")), 60, "inbox emptied")
        assert undelivered(store) > 0
        broker.start()
        s2 = Subscriber(broker.port)  # the broker forgot the first subscriber's session
        wait_until(lambda: undelivered(store) == 0, 60, "the outage's events after the restart")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    everything = received_bursts(sub) | received_bursts(s2)
    assert {e["burst"] for e in everything.values()} == kept_bursts(store)
    assert log_has(log, "lost the broker") and log_has(log, "connected to 127.0.0.1")
    s2.close()


def test_kill_9_keeps_undelivered_events_and_the_last_will_says_offline(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    # Decided while no broker is reachable: kill -9 lands between decision and PUBACK for every event.
    dead = free_port()
    with started(daemon_args(store_args, dead), tmp_path / "a.log") as proc:
        add_bursts(inbox, "a", 1_700_000_000)
        wait_until(lambda: store.joinpath("ledger.db").exists() and not list(inbox.rglob("*.[jJ][pP][gG]")),
                   60, "the bursts decided")  # fmt: skip
        proc.kill()
        proc.wait(timeout=10)
    waiting = undelivered(store)
    assert waiting == len(kept_bursts(store)) > 0
    # Restarted with the broker up: the outbox drains; then kill -9 while connected: the will.
    with started(daemon_args(store_args, broker.port), tmp_path / "b.log") as proc:
        wait_until(lambda: undelivered(store) == 0, 30, "the outbox drained after the restart")
        wait_until(lambda: bool(sub.on(f"{TOPIC}/availability")), 10, "online")
        assert sub.on(f"{TOPIC}/availability")[-1] == b"online"
        proc.kill()
        proc.wait(timeout=10)
    wait_until(lambda: sub.on(f"{TOPIC}/availability")[-1] == b"offline", 15, "the last will")
    assert {e["burst"] for e in received_bursts(sub).values()} == kept_bursts(store)


# -- remote cutoff and Home Assistant ---------------------------------------------------------------
def publish(port: int, topic: str, payload: str | bytes, retain: bool = False) -> None:
    import paho.mqtt.publish as single

    single.single(topic, payload, qos=1, retain=retain, hostname="127.0.0.1", port=port)


def test_remote_cutoff_is_applied_persisted_echoed_and_bad_values_ignored(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    (tmp_path / "inbox").mkdir()
    log = tmp_path / "daemon.log"
    args = daemon_args(store_args, broker.port, mqtt__remote_cutoff="true")
    with started(args, log) as proc:
        wait_until(lambda: bool(sub.on(f"{TOPIC}/config")), 15, "the config echo at start")
        publish(broker.port, f"{TOPIC}/set/cutoff", "abc")
        publish(broker.port, f"{TOPIC}/set/cutoff", "1.5")
        publish(broker.port, f"{TOPIC}/set/cutoff", "0.3")
        wait_until(lambda: any(json.loads(p)["cutoff"] == 0.3 for p in sub.on(f"{TOPIC}/config")), 15, "the echo")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    text = log.read_text()
    assert "remote cutoff ignored: not a number" in text and "remote cutoff ignored: 1.5 is outside" in text
    echo = json.loads(sub.on(f"{TOPIC}/config")[-1])
    assert echo["source"] == "remote"
    late = Subscriber(broker.port, f"{TOPIC}/config")
    wait_until(lambda: bool(late.on(f"{TOPIC}/config")), 5, "the retained config")
    late.close()
    # persisted: the next start uses it (and says so)
    with started(args, tmp_path / "again.log") as proc:
        wait_until(lambda: log_has(tmp_path / "again.log", "set remotely earlier"), 20, "the persisted cutoff")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "cutoff 0.3: set remotely earlier" in (tmp_path / "again.log").read_text()


def test_remote_cutoff_is_off_by_default(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    (tmp_path / "inbox").mkdir()
    with started(daemon_args(store_args, broker.port), tmp_path / "d.log") as proc:
        wait_until(lambda: bool(sub.on(f"{TOPIC}/status")), 15, "connected")
        publish(broker.port, f"{TOPIC}/set/cutoff", "0.3")
        wait_until(lambda: len(sub.on(f"{TOPIC}/set/cutoff")) == 1, 5, "the set message on the broker")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not sub.on(f"{TOPIC}/config")
    db = sqlite3.connect(tmp_path / "store" / "ledger.db")
    assert db.execute("SELECT COUNT(*) FROM meta WHERE key = 'remote_cutoff'").fetchone()[0] == 0


def test_home_assistant_discovery_and_republish_on_ha_restart(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    (tmp_path / "inbox").mkdir()
    with started(daemon_args(store_args, broker.port, mqtt__ha_discovery="true"), tmp_path / "d.log") as proc:
        config_topic = "homeassistant/sensor/trap-01/blank_ratio/config"
        wait_until(lambda: bool(sub.on(config_topic)), 15, "discovery configs")
        cfg = json.loads(sub.on(config_topic)[0])
        assert cfg["state_topic"] == f"{TOPIC}/status"
        assert [a["topic"] for a in cfg["availability"]] == [f"{TOPIC}/availability"]
        assert cfg["unique_id"] == "blankfilter_trap-01_blank_ratio"
        assert sub.on("homeassistant/binary_sensor/trap-01/animal/config")
        publish(broker.port, "homeassistant/status", "online")
        wait_until(lambda: len(sub.on(config_topic)) >= 2, 15, "the configs again after HA's restart")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


# -- reference freshness in the status ------------------------------------------------------------
def jpeg_file(path: Path, image: Image.Image) -> Path:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    path.write_bytes(out.getvalue())
    return path


def test_status_carries_each_cameras_reference_count_and_age(
    tmp_path: Path, broker: Broker, sub: Subscriber, run_cli: Any, store_args: Callable[..., list[str]]
) -> None:
    """Per camera and lighting mode: how many references, and seconds since the newest was added, so
    a dashboard sees a camera that stopped learning. cam2's only reference is made two days old."""
    args = mqtt_args(store_args, broker.port, context__enabled="true",
                     context__extractor=MODELS / "tiny_features.tflite")  # fmt: skip
    blank = Image.open(FRAMES / "speciesnet" / "blank.jpg").convert("RGB")
    reshot = jpeg_file(tmp_path / "reshot.jpg", ImageEnhance.Brightness(blank).enhance(1.05))
    night = jpeg_file(tmp_path / "night.jpg", blank.convert("L").convert("RGB"))
    before = time.time()
    added = run_cli("reference", "add", FRAMES / "speciesnet" / "blank.jpg", reshot, night, "--camera", "cam1",
                    *args, check_rc=0).stdout  # fmt: skip
    assert added.count("added as a day reference") == 2 and added.count("added as an IR reference") == 1, added
    run_cli("reference", "add", FRAMES / "speciesnet" / "ocelot.jpg", "--camera", "cam2", *args, check_rc=0)
    db = sqlite3.connect(tmp_path / "store" / "references.db")
    two_days_ago = datetime.fromtimestamp(time.time() - 2 * 86400, UTC).isoformat(timespec="seconds")
    with db:
        db.execute("UPDATE refs SET added_at = ? WHERE camera = 'cam2'", (two_days_ago,))
    db.close()
    (tmp_path / "inbox").mkdir()
    run_cli("run", "--once", *args, check_rc=0)  # nothing new to decide: the status at connect still goes out
    wait_until(lambda: bool(sub.on(f"{TOPIC}/status")), 10, "the status")
    status = sub.json_on(f"{TOPIC}/status")[-1]
    jsonschema.validate(status, STATUS_SCHEMA)
    refs = status["references"]
    assert {cam: {mode: f["count"] for mode, f in modes.items()} for cam, modes in refs.items()} == {
        "cam1": {"day": 2, "ir": 1},
        "cam2": {"day": 1},
    }
    since = time.time() - before
    assert 0 <= refs["cam1"]["day"]["age_s"] <= since + 1 and 0 <= refs["cam1"]["ir"]["age_s"] <= since + 1
    assert abs(refs["cam2"]["day"]["age_s"] - 2 * 86400) <= since + 2


def test_a_broken_reference_bank_leaves_freshness_out_of_the_status_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(None, [f"store.root={tmp_path}", "mqtt.host=127.0.0.1"])
    ledger = Ledger(config.ledger_path)
    publisher = Publisher(config, Hooks(("m", "1.0"), lambda: 0.1))
    assert "references" not in publisher.status(ledger)  # no bank yet: nothing to say, nothing logged
    config.bank_path.write_bytes(b"this is not a database " * 200)
    with caplog.at_level(logging.WARNING, logger="firmware_app.events.mqtt"):
        statuses = [publisher.status(ledger) for _ in range(3)]
    for status in statuses:
        jsonschema.validate(status, STATUS_SCHEMA)
        assert "references" not in status
    problems = [r for r in caplog.records if "reference freshness left out" in r.getMessage()]
    assert len(problems) == 1, "one line per new problem, not one per heartbeat"
    config.bank_path.unlink()
    bank = ReferenceBank(config.bank_path, "extractor 1")  # mended: the next status carries it again
    bank.add("cam1", "day", np.zeros((2, 2, 4), np.float32), origin="manual", source="a.jpg", sha256="a" * 64)
    bank.close()
    status = publisher.status(ledger)
    jsonschema.validate(status, STATUS_SCHEMA)
    assert status["references"]["cam1"]["day"]["count"] == 1
    ledger.close()


# -- hostile messages and a failing publisher (issue 15, item 4) -------------------------------------
DEEP = b'{"cutoff": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # RecursionError in json.loads


@pytest.mark.parametrize(
    ("payload", "words"),
    [(DEEP, "over the 256-byte limit"), (b"0" * 300, "over the 256-byte limit"),
     ("٠.٥".encode(), "not ASCII"), ('{"cutoff": "٠.٥"}'.encode(), "not ASCII"),
     (b"\x00\xff" * 50, "not ASCII"), (b"0.3\x00", "not text"), (b"1_0e-1", "not a number"),
     (b"0x1p-2", "not a number"), (b'{"cutoff": true}', "not a number"), (b'{"cutoff": [0.3]}', "not a number"),
     (b"[0.3]", "not a number"), (b'{"cutoff": ' + b"[" * 100 + b"]" * 100 + b"}", "not a number")],
    ids=["deep", "huge", "arabic-indic", "arabic-indic-json", "binary", "nul", "underscores", "hex", "bool", "list",
         "bare-list", "nested"],
)  # fmt: skip
def test_remote_cutoff_refuses_deep_huge_binary_and_non_ascii_payloads_with_a_short_reason(
    payload: bytes, words: str
) -> None:
    parsed, why = parse_cutoff(payload)
    assert parsed is None
    assert words in why and len(why) < 200, why


@pytest.mark.parametrize(("payload", "value"), [(b" 0.3\n", 0.3), (b"3e-1", 0.3), (b'{"cutoff": "0.25"}', 0.25),
                                                (b".5", 0.5), (b"1", None)])  # fmt: skip
def test_remote_cutoff_takes_plain_ascii_decimals(payload: bytes, value: float | None) -> None:
    assert parse_cutoff(payload)[0] == value


def test_a_deeply_nested_huge_binary_or_non_ascii_cutoff_message_does_not_stop_event_delivery(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    inbox, store, log = tmp_path / "inbox", tmp_path / "store", tmp_path / "daemon.log"
    inbox.mkdir()
    with started(daemon_args(store_args, broker.port, mqtt__remote_cutoff="true"), log) as proc:
        wait_until(lambda: bool(sub.on(f"{TOPIC}/config")), 15, "the config echo at start")
        for payload in (DEEP, "٠.٥".encode(), b"\x00\xff" * 500_000):
            publish(broker.port, f"{TOPIC}/set/cutoff", payload)
        publish(broker.port, f"{TOPIC}/set/cutoff", "0.3")  # a good one after them is still taken
        wait_until(lambda: any(json.loads(p)["cutoff"] == 0.3 for p in sub.on(f"{TOPIC}/config")), 15, "the echo")
        add_bursts(inbox, "a", 1_700_000_000)  # a later event is still delivered
        wait_until(lambda: store.joinpath("ledger.db").exists() and len(kept_bursts(store)) > 0
                   and undelivered(store) == 0 and len(received_bursts(sub)) == len(kept_bursts(store)),
                   60, "the events decided after the hostile messages")  # fmt: skip
        assert proc.poll() is None, "the daemon is still running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    text = log.read_text()
    assert f"remote cutoff ignored: {len(DEEP)} bytes, over the 256-byte limit" in text
    assert "remote cutoff ignored: 1000000 bytes, over the 256-byte limit" in text
    assert "remote cutoff ignored: not ASCII" in text
    assert "Traceback" not in text and "publisher stopped" not in text


def mqtt_config(tmp_path: Path, port: int, *sets: str) -> Any:
    return load_config(None, [f"store.root={tmp_path / 'store'}", "mqtt.host=127.0.0.1", f"mqtt.port={port}",
                              "context.enabled=false", *sets])  # fmt: skip


def add_event(ledger: Ledger, tag: str) -> str:
    """One undelivered event in the outbox, built as the pipeline builds it; its event_id."""
    frames = [EventFrame(f"kept/cam/{tag}.jpg", "c" * 64, 1_700_000_000.0, 0.9, None)]
    event = build_event("trap-01", f"cam/{tag}", frames, 0.1, ("m", "1.0"))
    ledger.decide([], [OutboxEvent(event["event_id"], dumps(event))])
    return str(event["event_id"])


def test_an_exception_in_a_message_handler_is_logged_once_the_message_dropped_and_delivery_goes_on(
    tmp_path: Path, broker: Broker, sub: Subscriber, caplog: pytest.LogCaptureFixture
) -> None:
    config = mqtt_config(tmp_path, broker.port, "mqtt.remote_cutoff=true")
    config.store.root.mkdir()
    ledger = Ledger(config.ledger_path)
    calls: list[float] = []

    def broken_set_cutoff(value: float) -> None:
        calls.append(value)
        raise RuntimeError("the judge is broken")

    publisher = Publisher(config, Hooks(("m", "1.0"), lambda: 0.1, broken_set_cutoff))
    with caplog.at_level(logging.INFO, logger="firmware_app.events.mqtt"):
        publisher.start()
        try:
            wait_until(lambda: bool(sub.on(f"{TOPIC}/config")), 15, "connected and subscribed")
            publish(broker.port, f"{TOPIC}/set/cutoff", "0.3")
            publish(broker.port, f"{TOPIC}/set/cutoff", "0.4")
            wait_until(lambda: len(calls) == 2, 15, "both messages handled")
            later = add_event(ledger, "later")
            publisher.wake()
            wait_until(lambda: later in received_bursts(sub), 15, "the event sent after the broken messages")
            status = publisher.status(ledger)
        finally:
            publisher.stop(drain_s=2)
    jsonschema.validate(status, STATUS_SCHEMA)
    assert status["publisher"]["dropped_messages"] == 2 and status["publisher"]["restarts"] == 0
    assert "the judge is broken" in status["publisher"]["last_problem"]
    lines = [r for r in caplog.records if "the judge is broken" in r.getMessage() and r.levelno >= logging.ERROR]
    assert len(lines) == 1, "one line per new problem, not one per message"
    assert publisher.failed == ""
    ledger.close()


def test_a_failed_publisher_session_is_restarted_and_the_status_says_so(
    tmp_path: Path, broker: Broker, sub: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_module, "RESTART_BACKOFF_S", 0.2)
    config = mqtt_config(tmp_path, broker.port)
    config.store.root.mkdir()
    ledger = Ledger(config.ledger_path)
    faults = [RuntimeError("the status is broken")]

    def cutoff() -> float:  # read for every status: the first one fails, the session with it
        if faults:
            raise faults.pop()
        return 0.1

    publisher = Publisher(config, Hooks(("m", "1.0"), cutoff))
    publisher.start()
    try:
        wait_until(lambda: any(s.get("publisher", {}).get("restarts") == 1 for s in sub.json_on(f"{TOPIC}/status")),
                   20, "a status that says the publisher was restarted")  # fmt: skip
        later = add_event(ledger, "after-restart")
        publisher.wake()
        wait_until(lambda: later in received_bursts(sub), 15, "an event sent after the restart")
    finally:
        publisher.stop(drain_s=2)
    status = next(s for s in sub.json_on(f"{TOPIC}/status") if "publisher" in s)
    jsonschema.validate(status, STATUS_SCHEMA)
    assert "RuntimeError: the status is broken" in status["publisher"]["last_problem"]
    assert publisher.failed == ""
    ledger.close()


def test_a_publisher_that_keeps_failing_gives_up_and_tells_the_trap_so_the_process_exits(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_module, "RESTART_BACKOFF_S", 0.1)
    monkeypatch.setattr(mqtt_module, "RESTART_LIMIT", 3)
    config = mqtt_config(tmp_path, broker.port)
    config.store.root.mkdir()
    Ledger(config.ledger_path).close()

    def cutoff() -> float:
        raise RuntimeError("the status is always broken")

    told = threading.Event()
    publisher = Publisher(config, Hooks(("m", "1.0"), cutoff))
    publisher.on_failure = told.set  # the trap stops its loop, and `run` exits 1: systemd restarts it
    publisher.start()
    try:
        assert told.wait(30), "the trap was told the publisher gave up"
        assert "the status is always broken" in publisher.failed
        assert publisher.restarts == 2, "restarted twice, then given up at the third failure in a row"
    finally:
        publisher.stop()


def test_run_exits_1_when_the_publisher_gives_up_so_systemd_restarts_it(
    tmp_path: Path, broker: Broker, store_args: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon in this process (a fault needs a seam): every status fails, the publisher gives up,
    and `run` stops its loop and exits 1 instead of running on with no delivery. Before the fix it
    ran on; the SIGTERM after 60 s then ended it with 0."""
    from firmware_app.cli import main

    def broken_status(self: Publisher, ledger: Ledger) -> dict[str, Any]:
        raise RuntimeError("the status cannot be built")

    monkeypatch.setattr(Publisher, "status", broken_status)
    monkeypatch.setattr(mqtt_module, "RESTART_BACKOFF_S", 0.1)
    monkeypatch.setattr(mqtt_module, "RESTART_LIMIT", 2)
    (tmp_path / "inbox").mkdir()
    done = threading.Event()
    guard = threading.Timer(60, lambda: done.is_set() or os.kill(os.getpid(), signal.SIGTERM))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    guard.start()
    try:
        started_at = time.monotonic()
        rc = main(daemon_args(store_args, broker.port))
    finally:
        done.set()
        guard.cancel()
        root.handlers[:] = handlers
        root.setLevel(level)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert rc == 1
    assert time.monotonic() - started_at < 60


# -- status after decisions, availability `stopped`, thumbnail, animal (issue 19) ----------------------
def status_seen(payload: bytes) -> int:
    return int(json.loads(payload)["frames_since_start"]["seen"])


def test_the_status_retained_after_run_once_counts_the_frames_of_that_run_and_comes_before_stopped(
    tmp_path: Path, broker: Broker, sub: Subscriber, make_inbox: Callable[..., Path], run_cli: Any,
    store_args: Callable[..., list[str]],
) -> None:  # fmt: skip
    make_inbox()
    run_cli("run", "--once", *mqtt_args(store_args, broker.port), check_rc=0)
    wait_until(lambda: sub.on(f"{TOPIC}/availability")[-1:] == [b"stopped"], 10, "stopped")
    later = Subscriber(broker.port, f"{TOPIC}/status").ready()
    wait_until(lambda: bool(later.on(f"{TOPIC}/status")), 5, "the retained status")
    status = later.json_on(f"{TOPIC}/status")[-1]
    later.close()
    jsonschema.validate(status, STATUS_SCHEMA)
    rows = query(tmp_path / "store", "SELECT COUNT(*) FROM frames")
    assert rows is not None and status["frames_since_start"]["seen"] == rows[0][0] == len(ALL_FRAMES)
    assert status["frames_since_start"]["kept"] > 0 and status["frames_since_start"]["discarded"] > 0
    with sub.lock:
        order = [(t, p) for t, p, _ in sub.messages if t in (f"{TOPIC}/status", f"{TOPIC}/availability")]
    assert order[-1] == (f"{TOPIC}/availability", b"stopped")
    assert order[-2][0] == f"{TOPIC}/status" and status_seen(order[-2][1]) == len(ALL_FRAMES), "a last status"


def test_the_daemon_publishes_the_status_after_decided_bursts_at_most_once_per_min_interval(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    inbox, log = tmp_path / "inbox", tmp_path / "daemon.log"
    inbox.mkdir()
    with started(daemon_args(store_args, broker.port, mqtt__status_min_interval_s=1), log) as proc:
        wait_until(lambda: bool(sub.on(f"{TOPIC}/status")), 15, "the status at connect")
        add_bursts(inbox, "a", 1_700_000_000)  # the heartbeat is 300 s away: only the bursts can bring one
        wait_until(lambda: any(status_seen(p) == len(ALL_FRAMES) for p in sub.on(f"{TOPIC}/status")), 60,
                   "a status that counts every frame, while the daemon runs")  # fmt: skip
        running = sub.json_on(f"{TOPIC}/status")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    times = [datetime.fromisoformat(s["at"].replace("Z", "+00:00")).timestamp() for s in running]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= 0.95, f"statuses {gaps} s apart: mqtt.status_min_interval_s = 1 allows 1 s"
    assert sub.on(f"{TOPIC}/availability")[-1] == b"stopped"


def test_kept_bursts_leave_their_thumbnail_retained_as_a_raw_jpeg_and_animal_goes_on_then_off_at_the_stop(
    tmp_path: Path, broker: Broker, sub: Subscriber, make_inbox: Callable[..., Path], run_cli: Any,
    store_args: Callable[..., list[str]],
) -> None:  # fmt: skip
    make_inbox()
    run_cli("run", "--once", *mqtt_args(store_args, broker.port), check_rc=0)
    wait_until(lambda: sub.on(f"{TOPIC}/availability")[-1:] == [b"stopped"], 10, "stopped")
    later = Subscriber(broker.port, f"{TOPIC}/#").ready()
    wait_until(lambda: bool(later.on(f"{TOPIC}/thumbnail")) and bool(later.on(f"{TOPIC}/animal")), 5, "retained")
    thumbnail, animal = later.on(f"{TOPIC}/thumbnail")[-1], later.on(f"{TOPIC}/animal")
    later.close()
    with Image.open(io.BytesIO(thumbnail)) as image:
        assert image.format == "JPEG" and max(image.size) <= 160
        image.load()  # the whole picture decodes
    newest = sub.json_on(f"{TOPIC}/event")[-1]  # sent oldest first: the last one is the latest burst
    assert thumbnail == base64.b64decode(newest["thumbnail"]["jpeg_base64"])
    assert b"ON" in sub.on(f"{TOPIC}/animal"), "ON with the events"
    assert sub.on(f"{TOPIC}/animal")[-1] == b"OFF" and animal == [b"OFF"], "OFF at the clean stop"


def test_animal_goes_off_after_the_off_delay_without_another_kept_burst(
    tmp_path: Path, broker: Broker, sub: Subscriber, store_args: Callable[..., list[str]]
) -> None:
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    with started(daemon_args(store_args, broker.port, mqtt__animal_off_delay_s=1), tmp_path / "d.log") as proc:
        wait_until(lambda: sub.on(f"{TOPIC}/animal") == [b"OFF"], 15, "OFF at connect")
        add_bursts(inbox, "a", 1_700_000_000)
        wait_until(lambda: b"ON" in sub.on(f"{TOPIC}/animal"), 60, "ON with the first kept burst's event")
        on_at = time.monotonic()
        wait_until(lambda: len(kept_bursts(store)) > 0 and undelivered(store) == 0
                   and sub.on(f"{TOPIC}/animal")[-1] == b"OFF", 60, "OFF after the delay")  # fmt: skip
        assert time.monotonic() - on_at >= 0.9, "not before mqtt.animal_off_delay_s"
        assert proc.poll() is None, "OFF while the daemon still runs: the delay, not the stop"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_an_outbox_payload_that_is_not_a_json_object_goes_as_it_is_and_delivery_goes_on(
    tmp_path: Path, broker: Broker, sub: Subscriber
) -> None:
    """The publisher reads each event (for `late` and the thumbnail); one it cannot read, which the
    trap never writes, is sent unchanged rather than failing the session again and again."""
    config = mqtt_config(tmp_path, broker.port)
    config.store.root.mkdir()
    ledger = Ledger(config.ledger_path)
    ledger.decide([], [OutboxEvent("f" * 32, "not json {"), OutboxEvent("e" * 32, "[1, 2]")])
    after = add_event(ledger, "after-the-odd-ones")
    publisher = Publisher(config, Hooks(("m", "1.0"), lambda: 0.1))
    publisher.start()
    try:
        wait_until(lambda: any(after.encode() in p for p in sub.on(f"{TOPIC}/event")), 15, "the event after them")
    finally:
        publisher.stop(drain_s=2)
    assert sub.on(f"{TOPIC}/event")[:2] == [b"not json {", b"[1, 2]"]
    assert publisher.restarts == 0 and ledger.outbox_state()[0] == 0
    ledger.close()
