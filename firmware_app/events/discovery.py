"""Home Assistant MQTT discovery: one device per trap with its sensors and an "animal" sensor.

Configs are retained under <ha_prefix>/<component>/<trap_id>/<key>/config and published again when
Home Assistant says `online` on <ha_prefix>/status (it forgets devices when it restarts).
"""

from __future__ import annotations

import json
from typing import Any

from firmware_app import __version__
from firmware_app.events.payloads import Topics

SENSORS: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    # key: (component, name, state topic attribute, value template, extra)
    "blank_ratio": ("sensor", "Blank ratio today", "status", "{{ (value_json.blank_ratio_today or 0) * 100 }}",
                    {"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:image-off"}),
    "frames_today": ("sensor", "Frames today", "status", "{{ value_json.frames_today.seen }}",
                     {"state_class": "total_increasing", "icon": "mdi:camera-burst"}),
    "outbox_depth": ("sensor", "Events waiting", "status", "{{ value_json.outbox.depth }}",
                     {"state_class": "measurement", "icon": "mdi:tray-full"}),
    "last_event": ("sensor", "Last animal", "status", "{{ value_json.last_event_at }}", {"device_class": "timestamp"}),
    "animal": ("binary_sensor", "Animal detected", "event", "ON", {"device_class": "motion", "off_delay": 60}),
}  # fmt: skip


def configs(prefix: str, topics: Topics, trap_id: str, model: tuple[str, str]) -> dict[str, dict[str, Any]]:
    device = {
        "identifiers": [f"blankfilter_{trap_id}"],
        "name": f"Camera trap {trap_id}",
        "manufacturer": "blankfilter",
        "model": f"{model[0]} {model[1]}",
        "sw_version": __version__,
    }
    out = {}
    for key, (component, name, source, template, extra) in SENSORS.items():
        out[f"{prefix}/{component}/{trap_id}/{key}/config"] = {
            "name": name,
            "unique_id": f"blankfilter_{trap_id}_{key}",
            "state_topic": getattr(topics, source),
            "value_template": template,
            "availability_topic": topics.availability,
            "device": device,
            **extra,
        }
    return out


def publish(client: Any, prefix: str, topics: Topics, trap_id: str, model: tuple[str, str]) -> None:
    for topic, payload in configs(prefix, topics, trap_id, model).items():
        client.publish(topic, json.dumps(payload), qos=1, retain=True)
