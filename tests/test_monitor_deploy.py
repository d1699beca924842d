"""The example configs for other tools (deploy/dashboards/) parse and read the traps' topics."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from dashboard import contracts

DASHBOARDS = Path(__file__).resolve().parent.parent / "deploy" / "dashboards"
TOPICS = {f"blankfilter/+/{leaf}" for leaf in (contracts.EVENT, contracts.STATUS, contracts.AVAILABILITY)}


def test_telegraf_reads_the_traps_topics_with_json_v2() -> None:
    conf = tomllib.loads((DASHBOARDS / "telegraf.conf").read_text())
    inputs = conf["inputs"]["mqtt_consumer"]
    assert {t for i in inputs for t in i["topics"]} == TOPICS
    status = next(i for i in inputs if i["topics"] == ["blankfilter/+/status"])
    assert status["data_format"] == "json_v2" and status["topic_parsing"][0]["tags"] == "_/trap/_"
    paths = {f["path"] for f in status["json_v2"][0]["field"]}
    schema = contracts.load_schema(contracts.STATUS_SCHEMA_FILE)["properties"]
    assert all(p.split(".")[0] in schema for p in paths)  # every field the status really has
    assert {"outbox.depth", "blank_ratio_today", "disk_free_mb", "cpu_temperature_c"} <= paths
    assert conf["outputs"]["influxdb_v2"][0]["token"] == "${INFLUX_TOKEN}"  # no secret in the file


def test_node_red_flow_and_grafana_dashboard_are_valid_json() -> None:
    flow = json.loads((DASHBOARDS / "node-red-flow.json").read_text())
    ids = {n["id"] for n in flow}
    assert len(ids) == len(flow)
    assert {n["topic"] for n in flow if n["type"] == "mqtt in"} == TOPICS
    for node in flow:  # every wire goes to a node of the flow
        assert all(target in ids for out in node.get("wires", []) for target in out)
    assert any("event_id" in n.get("func", "") and "seen" in n.get("func", "") for n in flow)  # de-duplicates
    grafana = json.loads((DASHBOARDS / "grafana-dashboard.json").read_text())
    assert grafana["panels"] and all(p["targets"] for p in grafana["panels"])
