"""Home Assistant MQTT discovery: the configs the trap publishes (option names as Home Assistant 2025.4
reads them), and what stays retained on a real mosquitto after runs with discovery on, with the
remote cutoff off, and with discovery off (nothing: Home Assistant then removes the device).
tests/test_home_assistant.py runs a real Home Assistant against the same configs."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.publish as single
from mqtt_broker import Broker, Subscriber, wait_until
from test_mqtt import STATUS_SCHEMA, TOPIC, mqtt_args

from firmware_app import __version__
from firmware_app.events import discovery
from firmware_app.events.payloads import Topics

TOPICS = Topics("blankfilter", "trap-01")
MODEL = ("blankfilter-cellnet", "1.2.0")
COMPONENTS = {
    "blank_ratio": "sensor", "frames_today": "sensor", "last_event": "sensor", "outbox_depth": "sensor",
    "cpu_temperature": "sensor", "disk_free": "sensor", "cutoff": "sensor", "animal": "binary_sensor",
    "animal_event": "event", "thumbnail": "image", "set_cutoff": "number",
}  # fmt: skip
DIAGNOSTIC = {"outbox_depth", "cpu_temperature", "disk_free", "cutoff"}


def by_key(remote_cutoff: bool) -> dict[str, dict[str, Any] | None]:
    out = discovery.configs("homeassistant", TOPICS, "trap-01", MODEL, remote_cutoff)
    return {topic.split("/")[3]: config for topic, config in out.items()}


def test_every_entity_has_its_config_topic_unique_id_device_origin_and_availability() -> None:
    configs = by_key(remote_cutoff=True)
    assert set(configs) == set(COMPONENTS)
    for key, config in configs.items():
        assert config is not None
        assert discovery.config_topic("homeassistant", "trap-01", key) == \
            f"homeassistant/{COMPONENTS[key]}/trap-01/{key}/config"  # fmt: skip
        assert config["unique_id"] == f"blankfilter_trap-01_{key}"
        assert config["device"]["identifiers"] == ["blankfilter_trap-01"]
        assert config["origin"]["name"] == "blankfilter" and config["origin"]["sw_version"] == __version__
        assert config["origin"].get("support_url", "https://").startswith(("https://", "http://"))
        assert config["availability"] == [{
            "topic": f"{TOPIC}/availability", "value_template": discovery.AVAILABILITY_TEMPLATE,
            "payload_available": "online", "payload_not_available": "offline",
        }]  # fmt: skip
        assert ("entity_category" in config and config["entity_category"] == "diagnostic") == (key in DIAGNOSTIC)


def test_the_event_image_number_and_binary_sensor_use_home_assistants_option_names() -> None:
    configs = by_key(remote_cutoff=True)
    event, image, number, animal = (configs[k] for k in ("animal_event", "thumbnail", "set_cutoff", "animal"))
    assert event is not None and image is not None and number is not None and animal is not None
    assert event["state_topic"] == f"{TOPIC}/event" and event["event_types"] == ["animal"]
    assert "'event_type': 'animal'" in event["value_template"] and "| to_json" in event["value_template"]
    for attribute in ("event_id", "frames", "max_score", "late"):
        assert f"'{attribute}':" in event["value_template"]
    assert image["image_topic"] == f"{TOPIC}/thumbnail" and image["content_type"] == "image/jpeg"
    assert "state_topic" not in image
    assert number["command_topic"] == f"{TOPIC}/set/cutoff" and number["state_topic"] == f"{TOPIC}/config"
    assert (number["min"], number["max"]) == (0.001, 0.99) and number["entity_category"] == "config"
    assert number["step"] >= 0.001  # Home Assistant refuses a finer step, and then the whole number entity
    assert number["value_template"] == "{{ value_json.cutoff }}"
    assert animal["state_topic"] == f"{TOPIC}/animal"
    assert (animal["payload_on"], animal["payload_off"]) == ("ON", "OFF") and "off_delay" not in animal


def test_the_number_entity_exists_only_with_the_remote_cutoff() -> None:
    assert by_key(remote_cutoff=False)["set_cutoff"] is None
    assert all(c is not None for k, c in by_key(remote_cutoff=False).items() if k != "set_cutoff")


def test_blank_ratio_shows_one_decimal_or_none_and_missing_readings_are_none() -> None:
    blank = by_key(remote_cutoff=False)["blank_ratio"]
    assert blank is not None and blank["suggested_display_precision"] == 1
    assert "| round(1)" in blank["value_template"] and "'None'" in blank["value_template"]
    assert "is number" in blank["value_template"], "null (no frame decided today) renders None, not 0"
    for key in ("cpu_temperature", "disk_free"):
        config = by_key(remote_cutoff=False)[key]
        assert config is not None and config["value_template"].endswith("else 'None' }}")


def test_every_status_field_a_template_reads_is_in_the_status_schema() -> None:
    """A typo in a template would leave the entity unknown for ever: each value_json path read from the
    status must be a field of status-1."""
    for key, config in by_key(remote_cutoff=False).items():
        if config is None or config.get("state_topic") != f"{TOPIC}/status":
            continue
        for path in re.findall(r"value_json\.([a-z_.]+)", config["value_template"]):
            node: dict[str, Any] = STATUS_SCHEMA
            for part in path.split("."):
                node = node["properties"][part]
                node = STATUS_SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
            assert node, f"{key}: value_json.{path}"


# -- against a broker ---------------------------------------------------------------------------------
def retained(port: int) -> dict[str, bytes]:
    """What the broker holds retained under homeassistant/ now: a marker published after subscribing
    arrives after every retained message (the broker sends those first)."""
    sub = Subscriber(port, "homeassistant/#").ready()
    marker = f"homeassistant/marker-{uuid.uuid4().hex}"
    single.single(marker, "x", qos=1, hostname="127.0.0.1", port=port)
    wait_until(lambda: bool(sub.on(marker)), 10, "the marker")
    with sub.lock:
        out = {t: p for t, p, was_retained in sub.messages if was_retained}
    sub.close()
    return out


def test_discovery_on_then_without_remote_cutoff_then_off_leaves_exactly_the_configs_it_should(
    tmp_path: Path, broker: Broker, run_cli: Any, store_args: Callable[..., list[str]]
) -> None:
    (tmp_path / "inbox").mkdir()
    on = mqtt_args(store_args, broker.port, mqtt__ha_discovery="true", mqtt__remote_cutoff="true")
    run_cli("run", "--once", *on, check_rc=0)
    configs = retained(broker.port)
    assert set(configs) == {f"homeassistant/{c}/trap-01/{k}/config" for k, c in COMPONENTS.items()}
    assert all(json.loads(p)["unique_id"].startswith("blankfilter_trap-01_") for p in configs.values())

    run_cli("run", "--once", *mqtt_args(store_args, broker.port, mqtt__ha_discovery="true"), check_rc=0)
    configs = retained(broker.port)
    assert "homeassistant/number/trap-01/set_cutoff/config" not in configs, "no remote cutoff: no number entity"
    assert len(configs) == len(COMPONENTS) - 1

    run_cli("run", "--once", *mqtt_args(store_args, broker.port), check_rc=0)  # discovery off (the default)
    assert retained(broker.port) == {}, "no config stays retained: Home Assistant removes the device"
    later = Subscriber(broker.port, f"{TOPIC}/availability").ready()
    wait_until(lambda: later.on(f"{TOPIC}/availability") == [b"stopped"], 5, "the retained availability")
    later.close()
