"""deploy/dashboards/telegraf.conf without a telegraf here (no Debian package): every option is one
the plugin's documentation names, and the points it makes from the real trap's events keep two
bursts of two cameras in the same second apart while a resend lands on its own point.

Telegraf's pipeline is modelled only as far as the point's identity goes: InfluxDB keys a point on
measurement, tag set and time (https://docs.influxdata.com/influxdb/v2/reference/key-concepts/),
so a second point with the same key overwrites the first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import FRAMES

from firmware_app.decision import camera_of

CONF = Path(__file__).resolve().parent.parent / "deploy" / "dashboards" / "telegraf.conf"
KEPT_FRAME = FRAMES / "wellington" / "11374_1-1.JPG"  # kept by the fixture model; no EXIF time: the file time counts
CAPTURED_TS = 1_700_000_000.5  # 2023-11-14 22:13:20.5 UTC

# Options every plugin takes: https://docs.influxdata.com/telegraf/v1/configuration/#plugins
# (alias, order, the metric filters "namepass" ... and the input modifiers "name_override" ...).
FILTERS = {"namepass", "namedrop", "fieldpass", "fielddrop", "fieldinclude", "fieldexclude", "tagpass", "tagdrop",
           "taginclude", "tagexclude", "metricpass"}  # fmt: skip
INPUT_COMMON = {"alias", "interval", "precision", "collection_jitter", "name_override", "name_prefix", "name_suffix",
                "tags", "startup_error_behavior", "data_format"} | FILTERS  # fmt: skip
# fmt: off
DOCUMENTED: dict[str, set[str]] = {
    # https://docs.influxdata.com/telegraf/v1/input-plugins/mqtt_consumer/ (and its sample.conf)
    "inputs.mqtt_consumer": INPUT_COMMON | {
        "servers", "topics", "topic_tag", "qos", "connection_timeout", "max_undelivered_messages",
        "persistent_session", "client_id", "username", "password", "tls_ca", "tls_cert", "tls_key",
        "insecure_skip_verify", "client_trace", "topic_parsing",
        "json_v2",  # the parser's own table: https://docs.influxdata.com/telegraf/v1/data_formats/input/json_v2/
        "data_type",  # the value parser: https://docs.influxdata.com/telegraf/v1/data_formats/input/value/
    },
    "inputs.mqtt_consumer.topic_parsing": {"topic", "measurement", "tags", "fields", "types"},
    # https://docs.influxdata.com/telegraf/v1/data_formats/input/json_v2/
    "inputs.mqtt_consumer.json_v2": {"measurement_name", "measurement_name_path", "timestamp_path",
                                     "timestamp_format", "timestamp_timezone", "tag", "field", "object"},
    "inputs.mqtt_consumer.json_v2.tag": {"path", "rename", "type", "optional"},
    "inputs.mqtt_consumer.json_v2.field": {"path", "rename", "type", "optional"},
    # https://docs.influxdata.com/telegraf/v1/processor-plugins/regex/
    "processors.regex": {"alias", "order", "tags", "fields", "tag_rename", "field_rename", "metric_rename"} | FILTERS,
    "processors.regex.tags": {"key", "pattern", "replacement", "result_key", "append"},
    # https://docs.influxdata.com/telegraf/v1/output-plugins/influxdb_v2/
    "outputs.influxdb_v2": {"alias", "urls", "token", "organization", "bucket", "bucket_tag", "exclude_bucket_tag",
                            "timeout", "http_headers", "http_proxy", "user_agent", "content_encoding",
                            "influx_uint_support", "tls_ca", "tls_cert", "tls_key", "insecure_skip_verify"} | FILTERS,
}
# fmt: on
JSON_V2_TYPES = {"int", "uint", "float", "string", "bool"}


def conf() -> dict[str, Any]:
    return tomllib.loads(CONF.read_text(encoding="utf-8"))


def tables(prefix: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """(dotted name, table) for every plugin table and documented sub-table; arrays flattened."""
    out: list[tuple[str, dict[str, Any]]] = []
    for item in value if isinstance(value, list) else [value]:
        out.append((prefix, item))
        for key, sub in item.items():
            if f"{prefix}.{key}" in DOCUMENTED and isinstance(sub, dict | list):
                out += tables(f"{prefix}.{key}", sub)
    return out


def test_every_option_is_one_the_plugin_documents() -> None:
    parsed = conf()
    assert set(parsed) <= {"inputs", "processors", "outputs"}, set(parsed)
    plugins = [(f"{kind}.{name}", value) for kind in parsed for name, value in parsed[kind].items()]
    assert {name for name, _ in plugins} == {"inputs.mqtt_consumer", "processors.regex", "outputs.influxdb_v2"}
    checked = 0
    for plugin, value in plugins:
        for name, table in tables(plugin, value):
            unknown = set(table) - DOCUMENTED[name]
            assert not unknown, f"[{name}] has options its documentation does not name: {unknown}"
            checked += 1
    assert checked > 30  # every tag and field table too, not only the plugins
    for name, table in tables("inputs.mqtt_consumer", parsed["inputs"]["mqtt_consumer"]):
        if name.endswith((".tag", ".field")) and "type" in table:
            assert table["type"] in JSON_V2_TYPES, table


def test_no_topic_tag_the_trap_comes_from_the_topic() -> None:
    for consumer in conf()["inputs"]["mqtt_consumer"]:
        assert consumer["topic_tag"] == "", f"{consumer['alias']}: the whole topic as a tag repeats `trap`"
        assert [p["tags"] for p in consumer["topic_parsing"]] == ["_/trap/_"]
        assert consumer["qos"] == 1


# -- what becomes of the trap's events ---------------------------------------------------------
def gjson(doc: Any, path: str) -> Any:
    """The few GJSON paths the config uses: a.b, frames.0.file, frames.# (array length)."""
    for part in path.split("."):
        if part == "#":
            return len(doc)
        doc = doc[int(part)] if isinstance(doc, list) else doc.get(part)
        if doc is None:
            return None
    return doc


def event_point(topic: str, payload: dict[str, Any], settings: dict[str, Any]) -> tuple[Any, ...]:
    """(measurement, sorted tags, time) of the point telegraf writes for one event."""
    consumer = next(c for c in settings["inputs"]["mqtt_consumer"] if c["topics"] == ["blankfilter/+/event"])
    parser = consumer["json_v2"][0]
    tags: dict[str, str] = {}
    for parsing in consumer["topic_parsing"]:
        tags |= {k: v for k, v in zip(parsing["tags"].split("/"), topic.split("/"), strict=True) if k != "_"}
    for tag in parser.get("tag", []):
        tags[tag.get("rename", tag["path"])] = str(gjson(payload, tag["path"]))
    for processor in settings.get("processors", {}).get("regex", []):
        if parser["measurement_name"] in processor.get("namepass", [parser["measurement_name"]]):
            for rule in processor["tags"]:  # Go's RE2: these patterns mean the same in Python's re
                if rule["key"] in tags and re.search(rule["pattern"], tags[rule["key"]]):
                    tags[rule["key"]] = re.sub(rule["pattern"], rule["replacement"], tags[rule["key"]])
    return parser["measurement_name"], tuple(sorted(tags.items())), gjson(payload, parser["timestamp_path"])


def outbox_events(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]], store_args: Callable[..., list[str]]
) -> list[dict[str, Any]]:
    """The real trap's events for one frame copied to three cameras (the inbox itself, cam1 and
    site/cam2): same bytes, same capture time (the file time, set alike: the copies' own differ by a
    millisecond or so), so three bursts starting at the same instant."""
    inbox = tmp_path / "inbox"
    for rel in ("IMG_0001.JPG", "cam1/IMG_0001.JPG", "site/cam2/IMG_0001.JPG"):
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(KEPT_FRAME, inbox / rel)
        os.utime(inbox / rel, (CAPTURED_TS, CAPTURED_TS))
    run_cli("run", "--once", *store_args(inbox=inbox), check_rc=0)  # no broker: the events wait in the outbox
    with sqlite3.connect(tmp_path / "store" / "ledger.db") as db:
        return [json.loads(row[0]) for row in db.execute("SELECT payload FROM outbox")]


def test_two_cameras_in_one_second_are_two_points_and_a_resend_is_the_same_point(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]], store_args: Callable[..., list[str]]
) -> None:
    events = outbox_events(tmp_path, run_cli, store_args)
    assert len(events) == 3 and len({e["first_frame_at"] for e in events}) == 1, "three bursts, one second"
    settings = conf()
    points = {event_point(f"blankfilter/{e['trap_id']}/event", e, settings): e for e in events}
    assert len(points) == 3, "each burst keeps its own point"
    for (_, tags, _), event in points.items():
        frame = event["frames"][0]["file"]  # kept/<path in the inbox>
        assert dict(tags)["camera"] == camera_of(frame.split("/", 1)[1]), (frame, tags)
        assert dict(tags)["event_id"] == event["event_id"] and dict(tags)["trap"] == event["trap_id"]
    assert {dict(t)["camera"] for _, t, _ in points} == {".", "cam1", "site/cam2"}
    # A resend after a reconnect: the same event, marked late, lands on the very same point.
    resent = {**events[0], "late": True}
    assert event_point(f"blankfilter/{resent['trap_id']}/event", resent, settings) in points
    # What the config did before (trap the only tag): the three bursts were one point.
    old = {**settings, "processors": {}}
    old["inputs"] = {"mqtt_consumer": [{**c, "json_v2": [{**c["json_v2"][0], "tag": []}]} if "json_v2" in c else c
                                       for c in settings["inputs"]["mqtt_consumer"]]}  # fmt: skip
    assert len({event_point(f"blankfilter/{e['trap_id']}/event", e, old) for e in events}) == 1
