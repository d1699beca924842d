"""The trap's MQTT discovery and the shipped deploy/dashboards/home-assistant.yaml in the real Home
Assistant (2025.4, tests/home_assistant.py), through a real mosquitto with the shipped ACL and a
password per user (the trap as trap-01, Home Assistant as homeassistant), with the real trap as a
subprocess on the fixture frames. Each test starts its own Home Assistant (about 10 s; the first run
builds HA's venv, a few minutes) and ends with HA's log free of warnings and errors."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from home_assistant import REPO, Events, HomeAssistant, ha_venv
from mqtt_broker import Broker, Subscriber, free_port, wait_until
from test_cli_run import started
from test_mqtt import mqtt_args
from test_mqtt_tls import password_file

TRAP = "trap-01"
BASE = f"blankfilter/{TRAP}"
DEVICE = f"Camera trap {TRAP}"
HA_USER, HA_PASSWORD, TRAP_PASSWORD = "homeassistant", "ha-password", "trap-password"
PACKAGE = REPO / "deploy" / "dashboards" / "home-assistant.yaml"
# discovery key -> (entity id, friendly name without the device's name)
ENTITIES = {
    "blank_ratio": ("sensor.camera_trap_trap_01_blank_ratio_today", "Blank ratio today"),
    "frames_today": ("sensor.camera_trap_trap_01_frames_today", "Frames today"),
    "last_event": ("sensor.camera_trap_trap_01_last_animal", "Last animal"),
    "outbox_depth": ("sensor.camera_trap_trap_01_events_waiting", "Events waiting"),
    "cpu_temperature": ("sensor.camera_trap_trap_01_cpu_temperature", "CPU temperature"),
    "disk_free": ("sensor.camera_trap_trap_01_disk_free", "Disk free"),
    "cutoff": ("sensor.camera_trap_trap_01_cutoff", "Cutoff"),
    "animal": ("binary_sensor.camera_trap_trap_01_animal_detected", "Animal detected"),
    "animal_event": ("event.camera_trap_trap_01_animal", "Animal"),
    "thumbnail": ("image.camera_trap_trap_01_latest_animal", "Latest animal"),
}
NUMBER = ("set_cutoff", "number.camera_trap_trap_01_cutoff", "Cutoff")
CATEGORY = {"outbox_depth": "diagnostic", "cpu_temperature": "diagnostic", "disk_free": "diagnostic",
            "cutoff": "diagnostic", "set_cutoff": "config"}  # fmt: skip
StoreArgs = Callable[..., list[str]]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """The shipped ACL (deploy/mosquitto/acl) with a password for the trap and for Home Assistant."""
    ha_venv()  # before the broker: skips without Python 3.13, builds the venv on the first run
    folder, port = tmp_path / "broker", free_port()
    folder.mkdir()
    passwd = password_file(folder, {TRAP: TRAP_PASSWORD, HA_USER: HA_PASSWORD})
    acl = REPO / "deploy" / "mosquitto" / "acl"
    b = Broker(folder, f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
                       f"acl_file {acl}\n", port=port).start()  # fmt: skip
    yield b
    b.stop()


@pytest.fixture
def sub(broker: Broker) -> Iterator[Subscriber]:
    """What Home Assistant's user may read, as the broker gives it."""
    s = Subscriber(broker.port, "#", username=HA_USER, password=HA_PASSWORD).ready()
    yield s
    s.close()


def start_ha(tmp_path: Path, broker: Broker, packages: dict[str, Path] | None = None) -> HomeAssistant:
    return HomeAssistant(tmp_path / "ha", broker.port, HA_USER, HA_PASSWORD).start(packages)


@pytest.fixture
def ha(tmp_path: Path, broker: Broker) -> Iterator[HomeAssistant]:
    h = start_ha(tmp_path, broker)
    yield h
    h.stop()


def trap_args(store_args: StoreArgs, tmp_path: Path, port: int, **sets: object) -> list[str]:
    secret = tmp_path / "mqtt_password"
    secret.write_text(TRAP_PASSWORD + "\n")
    return mqtt_args(store_args, port, mqtt__username=TRAP, mqtt__password_file=secret,
                     mqtt__status_min_interval_s=1, **sets)  # fmt: skip


def daemon(store_args: StoreArgs, tmp_path: Path, port: int, **sets: object) -> list[str]:
    return ["run", *trap_args(store_args, tmp_path, port, source__poll_s=0.5, decision__burst_gap_s=1, **sets)]


# -- what Home Assistant has ----------------------------------------------------------------------
def trap_devices(ha: HomeAssistant) -> list[dict[str, Any]]:
    return [d for d in ha.devices() if ["mqtt", f"blankfilter_{TRAP}"] in d["identifiers"]]


def trap_entities(ha: HomeAssistant) -> dict[str, dict[str, Any]]:
    """Registry entries of the trap's discovery, by discovery key."""
    prefix = f"blankfilter_{TRAP}_"
    return {e["unique_id"].removeprefix(prefix): e for e in ha.entities()
            if e["platform"] == "mqtt" and e["unique_id"].startswith(prefix)}  # fmt: skip


def wait_for_entities(ha: HomeAssistant, keys: set[str]) -> dict[str, dict[str, Any]]:
    wait_until(lambda: set(trap_entities(ha)) >= keys, 30, f"the trap's entities {sorted(keys)}", step=0.5)
    return trap_entities(ha)


def state(ha: HomeAssistant, entity_id: str) -> str:
    return str(ha.states().get(entity_id, {}).get("state"))


def assert_one_device_with(ha: HomeAssistant, expected: dict[str, tuple[str, str]]) -> None:
    """One device named after the trap, holding exactly these entities, with these ids and names."""
    devices = trap_devices(ha)
    assert [(d["name"], d["manufacturer"]) for d in devices] == [(DEVICE, "blankfilter")], devices
    entities = trap_entities(ha)
    assert set(entities) == set(expected)
    states = ha.states()
    for key, (entity_id, name) in expected.items():
        entry = entities[key]
        assert entry["entity_id"] == entity_id and entry["device_id"] == devices[0]["id"], entry
        assert states[entity_id]["attributes"]["friendly_name"] == f"{DEVICE} {name}"
        assert entry["entity_category"] == CATEGORY.get(key), entry


def trap_states(ha: HomeAssistant) -> dict[str, str]:
    states = ha.states()
    return {key: str(states.get(entity_id, {}).get("state")) for key, (entity_id, _) in ENTITIES.items()}


def assert_clean(ha: HomeAssistant) -> None:
    """No warning or error in HA's log, and no entity named after a device without a name (HA calls
    the device None then: sensor.none_cpu_temperature)."""
    assert ha.problems() == [], "\n".join(ha.problems())
    assert not [e for e in ha.states() if ".none_" in e], "an entity of a device without a name"


# -- the trap's discovery -------------------------------------------------------------------------
def test_discovery_makes_one_device_named_after_the_trap_whose_entities_follow_its_status_events_and_picture(
    tmp_path: Path, broker: Broker, sub: Subscriber, ha: HomeAssistant, make_inbox: Any, store_args: StoreArgs
) -> None:
    make_inbox()
    with started(daemon(store_args, tmp_path, broker.port, mqtt__ha_discovery="true"), tmp_path / "trap.log") as proc:
        wait_for_entities(ha, set(ENTITIES))
        wait_until(lambda: len(sub.on(f"{BASE}/event")) >= 2 and bool(sub.on(f"{BASE}/thumbnail")), 60, "events")
        assert_one_device_with(ha, ENTITIES)
        wait_until(lambda: agrees_with_status(ha, sub), 30, "Home Assistant's states to show the last status")
        events = {e["event_id"] for e in sub.json_on(f"{BASE}/event")}
        shown = ha.states()[ENTITIES["animal_event"][0]]
        assert shown["attributes"]["event_type"] == "animal" and shown["attributes"]["event_id"] in events, shown
        datetime.fromisoformat(shown["state"])  # when it fired
        assert state(ha, ENTITIES["animal"][0]) == "on"
        wait_until(lambda: shows_the_latest_thumbnail(ha, sub), 15, "the image entity showing the latest thumbnail")
        assert "unavailable" not in trap_states(ha).values(), "available while the trap is online"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert sub.on(f"{BASE}/availability")[-1] == b"stopped"
    wait_until(lambda: set(trap_states(ha).values()) == {"unavailable"}, 15, "every entity unavailable after the stop")
    assert_clean(ha)


def shows_the_latest_thumbnail(ha: HomeAssistant, sub: Subscriber) -> bool:
    try:
        picture = ha.raw("GET", f"/api/image_proxy/{ENTITIES['thumbnail'][0]}")
    except AssertionError:  # HTTP 500 until HA has a picture
        return False
    return picture[:2] == b"\xff\xd8" and picture == sub.on(f"{BASE}/thumbnail")[-1]


def agrees_with_status(ha: HomeAssistant, sub: Subscriber) -> bool:
    """Frames today, last animal, blank ratio, disk free and CPU temperature as the trap's last status
    says (a number, or unknown where the status has none: the ratio before the day's first decision,
    the temperature on a machine without a thermal zone)."""
    status = sub.json_on(f"{BASE}/status")[-1]
    shown = trap_states(ha)
    if shown["frames_today"] != str(status["frames_today"]["seen"]):
        return False
    last = status["last_event_at"]
    if (shown["last_event"] == "unknown") != (last is None):
        return False
    if last is not None and datetime.fromisoformat(shown["last_event"]) != datetime.fromisoformat(last):
        return False
    ratio = status["blank_ratio_today"]
    return (
        shows(shown["blank_ratio"], None if ratio is None else round(ratio * 100, 1))
        and shows(shown["disk_free"], status.get("disk_free_mb"))
        and shows(shown["cpu_temperature"], status.get("cpu_temperature_c"))
        and shows(shown["cutoff"], status["model"]["cutoff"])
    )


def shows(state: str, value: float | None) -> bool:
    if value is None:
        return state == "unknown"
    return state not in ("unknown", "unavailable") and float(state) == value


def test_with_the_remote_cutoff_a_cutoff_number_set_in_home_assistant_reaches_the_trap(
    tmp_path: Path, broker: Broker, sub: Subscriber, ha: HomeAssistant, store_args: StoreArgs
) -> None:
    (tmp_path / "inbox").mkdir()
    expected = ENTITIES | {NUMBER[0]: NUMBER[1:]}
    args = daemon(store_args, tmp_path, broker.port, mqtt__ha_discovery="true", mqtt__remote_cutoff="true")
    with started(args, tmp_path / "trap.log") as proc:
        wait_for_entities(ha, set(expected))
        assert_one_device_with(ha, expected)
        start = json.loads(sub.on(f"{BASE}/config")[-1])["cutoff"]
        wait_until(lambda: bool(sub.on(f"{BASE}/status")), 15, "the status")
        assert sub.json_on(f"{BASE}/status")[-1]["blank_ratio_today"] is None, "nothing decided yet"
        wait_until(lambda: agrees_with_status(ha, sub), 15, "the states of a trap that has decided nothing")
        assert trap_states(ha)["blank_ratio"] == "unknown"
        wait_until(lambda: state(ha, NUMBER[1]) == str(start), 15, "the number showing the trap's cutoff")
        ha.call("number", "set_value", entity_id=NUMBER[1], value=0.42)
        wait_until(lambda: sub.on(f"{BASE}/set/cutoff")[-1:] == [b"0.42"], 15, "Home Assistant's set/cutoff")
        wait_until(lambda: json.loads(sub.on(f"{BASE}/config")[-1])["cutoff"] == 0.42, 15, "the trap's echo")
        assert json.loads(sub.on(f"{BASE}/config")[-1])["source"] == "remote"
        wait_until(lambda: state(ha, NUMBER[1]) == "0.42", 15, "the number showing the new cutoff")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert "cutoff set remotely to 0.42 (persisted" in (tmp_path / "trap.log").read_text()
    assert_clean(ha)


def test_run_once_leaves_the_device_unavailable_and_a_run_with_discovery_off_removes_it(
    tmp_path: Path, broker: Broker, sub: Subscriber, ha: HomeAssistant, make_inbox: Any, run_cli: Any,
    store_args: StoreArgs,
) -> None:  # fmt: skip
    make_inbox()
    run_cli("run", "--once", *trap_args(store_args, tmp_path, broker.port, mqtt__ha_discovery="true"), check_rc=0)
    wait_for_entities(ha, set(ENTITIES))
    assert_one_device_with(ha, ENTITIES)
    assert sub.on(f"{BASE}/availability")[-1] == b"stopped"
    wait_until(lambda: set(trap_states(ha).values()) == {"unavailable"}, 15, "every entity unavailable after --once")
    run_cli("run", "--once", *trap_args(store_args, tmp_path, broker.port), check_rc=0)
    wait_until(lambda: not trap_entities(ha) and not trap_devices(ha), 30, "the device and its entities removed")
    assert not [s for s in ha.states() if s.startswith(("sensor.camera_trap", "binary_sensor.camera_trap"))]
    assert_clean(ha)


# -- the shipped package --------------------------------------------------------------------------
def test_the_shipped_package_loads_cleanly_and_notifies_once_per_event_through_resends_and_a_restart(
    tmp_path: Path, broker: Broker, sub: Subscriber, make_inbox: Any, run_cli: Any, store_args: StoreArgs
) -> None:
    """A resend after an outage interleaves events (A, B, A, B): each kept burst runs the automation
    once, and a restart of Home Assistant neither repeats the last one nor forgets what it saw."""
    ha = start_ha(tmp_path, broker, {"blankfilter": PACKAGE})
    try:
        assert_clean(ha)
        assert ha.states()["automation.animal_at_a_camera_trap"]["state"] == "on"
        assert "sensor.blankfilter_last_new_event" in ha.states()
        runs = Events(ha, "automation_triggered")
        first = trap_events(tmp_path, broker, sub, make_inbox, run_cli, store_args, "first")
        assert len(first) >= 2, "the fixture frames give at least two kept bursts"
        wait_until(lambda: notified(ha) == ids(first), 20, "one notification per event")
        resend(broker.port, [first[0], first[1], first[0], first[1], first[-1]])
        second = trap_events(tmp_path, broker, sub, make_inbox, run_cli, store_args, "second")
        wait_until(lambda: notified(ha) == ids(first + second), 20, "the second run's notifications")
        assert ran(runs, len(first) + len(second)), "the resent events ran the automation again"
        runs.close()
        ha.restart()
        runs = Events(ha, "automation_triggered")
        resend(broker.port, first + second)
        third = trap_events(tmp_path, broker, sub, make_inbox, run_cli, store_args, "third")
        wait_until(lambda: notified(ha) == ids(third), 20, "only the new events notified after the restart")
        assert ran(runs, len(third)), "the restart or the resent events ran the automation again"
        runs.close()
        note = next(n for n in ha.notifications() if n["notification_id"] == f"blankfilter_{third[0]['event_id']}")
        assert note["title"] == f"Animal at {TRAP}"
        assert note["message"].startswith(f"{len(third[0]['frames'])} frame(s) at {third[0]['first_frame_at']}")
        assert_clean(ha)
    finally:
        ha.stop()


def trap_events(tmp_path: Path, broker: Broker, sub: Subscriber, make_inbox: Any, run_cli: Any,
                store_args: StoreArgs, camera_set: str) -> list[dict[str, Any]]:  # fmt: skip
    """The new events of one `run --once` on a fresh copy of the fixture frames (new cameras, new
    bursts); the subscriber also hears the test's own resends, which repeat only earlier events."""
    earlier = {json.loads(p)["event_id"] for p in sub.on(f"{BASE}/event")}
    make_inbox(tmp_path / "inbox" / camera_set)
    run_cli("run", "--once", *trap_args(store_args, tmp_path, broker.port, mqtt__ha_discovery="true"), check_rc=0)
    new = {e["event_id"]: e for e in sub.json_on(f"{BASE}/event") if e["event_id"] not in earlier}
    return list(new.values())


def ran(runs: Events, times: int) -> bool:
    """The automation ran exactly `times` times (its bus events may trail the notifications a little)."""
    wait_until(lambda: len(runs.seen) >= times, 5, f"{times} runs of the automation")
    return len(runs.seen) == times


def ids(events: list[dict[str, Any]]) -> set[str]:
    return {f"blankfilter_{e['event_id']}" for e in events}


def notified(ha: HomeAssistant) -> set[str]:
    return {n["notification_id"] for n in ha.notifications()}


def resend(port: int, events: list[dict[str, Any]]) -> None:
    """The events again, as a trap resends what the broker had not acknowledged."""
    import paho.mqtt.publish as publish

    messages = [{"topic": f"{BASE}/event", "payload": json.dumps(e), "qos": 1} for e in events]
    publish.multiple(messages, hostname="127.0.0.1", port=port, auth={"username": TRAP, "password": TRAP_PASSWORD})
