"""Home Assistant MQTT discovery: one device per trap with its sensors, an "animal" binary sensor, an
event entity for each kept burst, an image entity with the latest thumbnail and, with the remote
cutoff on, a number entity to set the cutoff.

Configs are retained under <ha_prefix>/<component>/<trap_id>/<key>/config and published again when
Home Assistant says `online` on <ha_prefix>/status (it forgets devices when it restarts). With
discovery off, the trap empties those topics at connect, so Home Assistant removes the device. Option
names are Home Assistant's (MQTT discovery, 2025.4); unique ids are `blankfilter_<trap_id>_<key>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from firmware_app import __version__
from firmware_app.events.payloads import CUTOFF_RANGE, Topics

# Only `online` is available: `stopped` (a clean stop) and `offline` (the last will) are not.
AVAILABILITY_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"


def optional(field_name: str) -> str:
    """A status reading the machine may not offer: HA's `None` (unknown) when it is absent or null."""
    return f"{{{{ value_json.{field_name} if value_json.{field_name} is number else 'None' }}}}"


@dataclass(frozen=True)
class Entity:
    component: str  # sensor, binary_sensor, event, image, number
    name: str
    source: str  # the Topics attribute its state comes from
    options: dict[str, Any] = field(default_factory=dict)
    needs_remote_cutoff: bool = False

    def state_option(self) -> str:
        return "image_topic" if self.component == "image" else "state_topic"


DIAGNOSTIC = {"entity_category": "diagnostic"}
EVENT_TEMPLATE = (
    "{{ {'event_type': 'animal', 'event_id': value_json.event_id, 'frames': value_json.frames | count,"
    " 'max_score': value_json.max_score, 'late': value_json.late | default(false)} | to_json }}"
)

ENTITIES: dict[str, Entity] = {
    "blank_ratio": Entity("sensor", "Blank ratio today", "status", {
        "value_template": "{{ (value_json.blank_ratio_today * 100) | round(1) if value_json.blank_ratio_today "
                          "is number else 'None' }}",
        "unit_of_measurement": "%", "state_class": "measurement", "suggested_display_precision": 1,
        "icon": "mdi:image-off"}),
    "frames_today": Entity("sensor", "Frames today", "status", {
        "value_template": "{{ value_json.frames_today.seen }}", "state_class": "total_increasing",
        "icon": "mdi:camera-burst"}),
    "last_event": Entity("sensor", "Last animal", "status", {
        "value_template": "{{ value_json.last_event_at }}", "device_class": "timestamp"}),
    "outbox_depth": Entity("sensor", "Events waiting", "status", {
        "value_template": "{{ value_json.outbox.depth }}", "state_class": "measurement", "icon": "mdi:tray-full",
        **DIAGNOSTIC}),
    "cpu_temperature": Entity("sensor", "CPU temperature", "status", {
        "value_template": optional("cpu_temperature_c"), "device_class": "temperature",
        "unit_of_measurement": "°C", "state_class": "measurement", "suggested_display_precision": 1, **DIAGNOSTIC}),
    "disk_free": Entity("sensor", "Disk free", "status", {
        "value_template": optional("disk_free_mb"), "device_class": "data_size", "unit_of_measurement": "MB",
        "state_class": "measurement", "suggested_display_precision": 0, **DIAGNOSTIC}),
    "cutoff": Entity("sensor", "Cutoff", "status", {
        "value_template": "{{ value_json.model.cutoff }}", "icon": "mdi:tune-vertical", **DIAGNOSTIC}),
    "animal": Entity("binary_sensor", "Animal detected", "animal", {
        "payload_on": "ON", "payload_off": "OFF", "device_class": "motion"}),
    "animal_event": Entity("event", "Animal", "event", {
        "event_types": ["animal"], "value_template": EVENT_TEMPLATE, "icon": "mdi:paw"}),
    "thumbnail": Entity("image", "Latest animal", "thumbnail", {"content_type": "image/jpeg"}),
    "set_cutoff": Entity("number", "Cutoff", "config", {
        "command_topic": "", "value_template": "{{ value_json.cutoff }}", "min": CUTOFF_RANGE[0],
        "max": CUTOFF_RANGE[1], "step": 0.001, "mode": "box", "entity_category": "config",
        "icon": "mdi:tune-vertical"}, needs_remote_cutoff=True),
}  # fmt: skip


@cache
def support_url() -> str | None:
    """The project's address from the installed package's metadata (None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("blankfilter").get_all("Project-URL") or []
    except PackageNotFoundError:
        return None
    return next((u.partition(",")[2].strip() for u in urls if u.startswith("Source,")), None)


def origin() -> dict[str, str]:
    out = {"name": "blankfilter", "sw_version": __version__}
    url = support_url()
    if url:
        out["support_url"] = url
    return out


def config_topic(prefix: str, trap_id: str, key: str) -> str:
    return f"{prefix}/{ENTITIES[key].component}/{trap_id}/{key}/config"


def configs(
    prefix: str, topics: Topics, trap_id: str, model: tuple[str, str], remote_cutoff: bool
) -> dict[str, dict[str, Any] | None]:
    """Every discovery config topic of the trap, with its config, or None: to be emptied (the number
    entity without the remote cutoff)."""
    device = {
        "identifiers": [f"blankfilter_{trap_id}"],
        "name": f"Camera trap {trap_id}",
        "manufacturer": "blankfilter",
        "model": f"{model[0]} {model[1]}",
        "sw_version": __version__,
    }
    availability = [{"topic": topics.availability, "value_template": AVAILABILITY_TEMPLATE,
                     "payload_available": "online", "payload_not_available": "offline"}]  # fmt: skip
    out: dict[str, dict[str, Any] | None] = {}
    for key, entity in ENTITIES.items():
        topic = config_topic(prefix, trap_id, key)
        if entity.needs_remote_cutoff and not remote_cutoff:
            out[topic] = None
            continue
        options = dict(entity.options)
        if "command_topic" in options:
            options["command_topic"] = topics.set_cutoff
        out[topic] = {
            "name": entity.name,
            "unique_id": f"blankfilter_{trap_id}_{key}",
            entity.state_option(): getattr(topics, entity.source),
            "availability": availability,
            "device": device,
            "origin": origin(),
            **options,
        }
    return out


def publish(
    client: Any, prefix: str, topics: Topics, trap_id: str, model: tuple[str, str], *, enabled: bool,
    remote_cutoff: bool,
) -> None:  # fmt: skip
    """Retained configs; an empty retained payload where there must be none (discovery off: all), which
    makes Home Assistant remove the entity and the broker forget the config."""
    for topic, payload in configs(prefix, topics, trap_id, model, remote_cutoff).items():
        body = json.dumps(payload) if enabled and payload is not None else ""
        client.publish(topic, body, qos=1, retain=True)
