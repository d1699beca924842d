"""The shipped broker (deploy/mosquitto/mosquitto.conf and acl, only paths and ports changed) with
real clients and a password file made by mosquitto_passwd: each user can do what
deploy/mosquitto/README.md and docs/monitor.md say, and no more.

Mosquitto drops a denied publish silently (a QoS 1 PUBACK still comes back), so every denial is
checked by subscribers that may read the topic: each test publishes the denied messages first and
then an allowed one on the same connection; mosquitto handles one client's packets in order, so
once the allowed one has arrived, a leaked one would have arrived too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_mqtt_tls
from mqtt_broker import Broker, Subscriber, free_port, wait_until
from test_mqtt_tls import Pki, password_file, run_as_root_line

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "mosquitto"
INSTALL = REPO / "deploy" / "install.sh"
USERS = {"trap-01": "pw-trap-01", "trap-02": "pw-trap-02", "dashboard": "pw-dash", "homeassistant": "pw-ha"}
T1, T2 = "blankfilter/trap-01", "blankfilter/trap-02"
# Everything a trap publishes under its own id (the MQTT contract, docs/events.md).
TRAP_TOPICS = ("event", "status", "availability", "config", "thumbnail", "animal", "audit")
DISCOVERY = "homeassistant/sensor/trap-01/blank_ratio/config"
pki = test_mqtt_tls.pki  # the fixture: a CA and a server certificate for 127.0.0.1, made once per module


@dataclass(frozen=True)
class Shipped:
    broker: Broker  # broker.port: the plain listener (shipped: 1883 on 127.0.0.1)
    tls: int  # the TLS listener (shipped: 8883)
    ca: Path


def shipped_config(folder: Path, passwd: Path, plain: int, tls: int, pki: Pki) -> str:
    """deploy/mosquitto/mosquitto.conf with this test's paths and ports; the ACL file as shipped."""
    (folder / "persist").mkdir(exist_ok=True)
    replace = {
        "password_file": str(passwd),
        "acl_file": str(DEPLOY / "acl"),
        "persistence_location": f"{folder / 'persist'}/",
        "log_dest": f"file {folder / 'mosquitto.log'}",
        "cafile": str(pki.ca),
        "certfile": str(pki.server_cert),
        "keyfile": str(pki.server_key),
        "listener 1883": f"{plain} 127.0.0.1",
        "listener 8883": f"{tls} 127.0.0.1",
    }
    lines, seen = [], set()
    for line in (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8").splitlines():
        key = next((k for k in replace if line == k or line.startswith(f"{k} ")), None)
        if key is not None:
            line, _ = f"{key.split()[0]} {replace[key]}", seen.add(key)
        lines.append(line)
    assert seen == set(replace), f"deploy/mosquitto/mosquitto.conf changed shape: {set(replace) - seen} not found"
    return run_as_root_line() + "log_type all\n" + "\n".join(lines) + "\n"


def start_shipped(folder: Path, pki: Pki, users: dict[str, str]) -> Shipped:
    folder.mkdir(parents=True, exist_ok=True)
    passwd = password_file(folder, users)
    plain, tls = free_port(), free_port()
    broker = Broker(folder, port=plain)
    broker.conf.write_text(shipped_config(folder, passwd, plain, tls, pki))
    broker.start()
    try:
        wait_until(lambda: listening(tls), 10, "the TLS listener")
    except AssertionError:
        broker.stop()
        raise
    return Shipped(broker, tls, pki.ca)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def shipped(tmp_path: Path, pki: Pki) -> Iterator[Shipped]:
    s = start_shipped(tmp_path / "broker", pki, USERS)
    try:
        yield s
    finally:
        s.broker.stop()


@pytest.fixture
def clients(shipped: Shipped) -> Iterator[dict[str, Subscriber]]:
    """Every user logged in and subscribed to `#`: the broker delivers each only what it may read.
    The traps connect over TLS as in the field, the dashboard and Home Assistant on localhost."""
    made: dict[str, Subscriber] = {}
    try:
        for user, password in USERS.items():
            tls = {"ca_certs": str(shipped.ca)} if user.startswith("trap") else {}
            port = shipped.tls if tls else shipped.broker.port
            made[user] = Subscriber(port, "#", username=user, password=password, **tls)
        yield {user: client.ready() for user, client in made.items()}
    finally:
        for client in made.values():
            client.close()


def publish(client: Subscriber, topic: str, payload: bytes = b"x") -> None:
    info = client.client.publish(topic, payload, qos=1)
    info.wait_for_publish(timeout=5)  # PUBACK: mosquitto acknowledges a denied publish too
    assert info.is_published(), topic


def published_by(client: Subscriber, denied: list[str], allowed: list[str], watcher: Subscriber) -> set[str]:
    """Publish `denied` then `allowed` (each with its topic as payload); once `watcher` has every
    allowed one, the topics of both that reached it."""
    for topic in [*denied, *allowed]:
        publish(client, topic, topic.encode())
    arrived = lambda t: t.encode() in watcher.on(t)  # noqa: E731
    wait_until(lambda: all(map(arrived, allowed)), 5, f"{allowed} at the watcher")
    return set(filter(arrived, [*denied, *allowed]))


def topics(client: Subscriber) -> set[str]:
    with client.lock:
        return {topic for topic, _, _ in client.messages}


# -- traps --------------------------------------------------------------------------------------
def test_trap_writes_its_own_topics_and_discovery_configs_only(clients: dict[str, Subscriber]) -> None:
    trap, dash, ha = clients["trap-01"], clients["dashboard"], clients["homeassistant"]
    mine = [f"{T1}/{name}" for name in TRAP_TOPICS]
    not_mine = [f"{T2}/event", f"{T2}/status", f"{T1}/set", f"{T1}/set/cutoff", f"{T1}/set/cutoff/cam1",
                f"{T2}/set/cutoff", f"{T1}/event/extra", "blankfilter/event"]  # fmt: skip
    assert published_by(trap, not_mine, mine, dash) == set(mine)
    ha_denied = ["homeassistant/sensor/trap-02/blank_ratio/config", "homeassistant/status"]
    assert published_by(trap, ha_denied, [DISCOVERY], ha) == {DISCOVERY}


def test_trap_reads_its_own_cutoffs_and_home_assistant_status_only(clients: dict[str, Subscriber]) -> None:
    trap, dash, ha = clients["trap-01"], clients["dashboard"], clients["homeassistant"]
    publish(trap, f"{T1}/status")  # its own status: written, but not read back
    publish(clients["trap-02"], f"{T2}/event")
    publish(clients["trap-02"], "homeassistant/sensor/trap-02/blank_ratio/config")
    publish(ha, "homeassistant/status", b"online")
    wait_until(lambda: {f"{T1}/status", f"{T2}/event", "homeassistant/status"} <= topics(dash), 5, "the dashboard")
    wait_until(lambda: "homeassistant/sensor/trap-02/blank_ratio/config" in topics(ha), 5, "trap-02's discovery")
    # Last, on the dashboard's connection: once trap-01 has set/cutoff/cam1, it has had the rest.
    for topic in (f"{T2}/set/cutoff", f"{T2}/set/cutoff/cam1", f"{T1}/set/cutoff", f"{T1}/set/cutoff/cam1"):
        publish(dash, topic)
    wait_until(lambda: f"{T1}/set/cutoff/cam1" in topics(trap), 5, "trap-01's camera cutoff")
    assert topics(trap) == {f"{T1}/set/cutoff", f"{T1}/set/cutoff/cam1", "homeassistant/status"}


# -- the dashboard and Home Assistant -------------------------------------------------------------
def test_dashboard_reads_every_trap_and_writes_only_cutoffs(clients: dict[str, Subscriber]) -> None:
    dash, ha = clients["dashboard"], clients["homeassistant"]
    for trap, base in (("trap-01", T1), ("trap-02", T2)):
        publish(clients[trap], f"{base}/event")
    publish(clients["trap-01"], DISCOVERY)
    wait_until(lambda: bool(dash.on(f"{T1}/event")) and bool(dash.on(f"{T2}/event")), 5, "both traps' events")
    denied = [f"{T1}/event", f"{T2}/status", f"{T1}/availability", "homeassistant/status", DISCOVERY]
    allowed = [f"{T1}/set/cutoff", f"{T2}/set/cutoff/cam1"]
    assert published_by(dash, denied, allowed, ha) == set(allowed)
    assert DISCOVERY not in topics(dash), "the dashboard does not read Home Assistant's discovery"


def test_home_assistant_reads_traps_and_discovery_and_writes_its_status_and_cutoff(
    clients: dict[str, Subscriber],
) -> None:
    ha, dash = clients["homeassistant"], clients["dashboard"]
    publish(clients["trap-01"], f"{T1}/status")
    publish(clients["trap-02"], f"{T2}/event")
    publish(clients["trap-01"], DISCOVERY)
    wait_until(lambda: {f"{T1}/status", f"{T2}/event", DISCOVERY} <= topics(ha), 5, "traps and discovery at HA")
    denied = [f"{T1}/event", f"{T1}/status", f"{T1}/set/cutoff/cam1", DISCOVERY]
    allowed = ["homeassistant/status", f"{T1}/set/cutoff"]
    # The dashboard reads blankfilter/# and homeassistant/status, so it sees all but the discovery.
    assert published_by(ha, denied, allowed, dash) == set(allowed)
    # HA reads its own writes: once its status is back, a leaked discovery config would be too.
    wait_until(lambda: b"homeassistant/status" in ha.on("homeassistant/status"), 5, "HA's own status")
    assert ha.on(DISCOVERY) == [b"x"], "only the trap's discovery config, not Home Assistant's"


def test_anonymous_and_wrong_password_are_refused_on_both_listeners(shipped: Shipped) -> None:
    for port, tls in ((shipped.broker.port, {}), (shipped.tls, {"ca_certs": str(shipped.ca)})):
        for user, password in ((None, None), ("dashboard", "wrong")):
            client = Subscriber(port, "#", username=user, password=password, **tls)
            try:
                wait_until(lambda c=client: bool(c.refused), 5, f"a refusal on port {port} for {user}")
                assert not client.subscribed.is_set()
            finally:
                client.close()


# -- the installer's closing hint ---------------------------------------------------------------
def installer_status_check() -> list[str]:
    """The shell lines deploy/install.sh prints to watch the status topic (from a dry run)."""
    done = subprocess.run(["bash", str(INSTALL), "--dry-run", "--root", "/nonexistent", "--source", str(REPO)],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("read -rs"))
    assert lines[start + 1].strip().startswith("mosquitto_sub "), lines[start : start + 2]
    return [line.strip() for line in lines[start : start + 2]]


def test_installer_hint_reads_the_retained_status_from_the_shipped_broker(
    shipped: Shipped, clients: dict[str, Subscriber]
) -> None:
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub is not installed (apt-get install -y mosquitto-clients)")
    status = b'{"schema": "blankfilter-status/1", "trap_id": "trap-01"}'
    info = clients["trap-01"].client.publish(f"{T1}/status", status, qos=1, retain=True)
    info.wait_for_publish(timeout=5)
    read, sub = installer_status_check()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert read in readme and sub in readme, "README.md's check is the installer's"
    # Only the host, the port and the CA file's path are the site's own; the rest runs as printed.
    assert " -h BROKER -p 8883 --cafile /etc/blankfilter/broker-ca.crt " in sub, sub
    sub = sub.replace("BROKER", "127.0.0.1").replace("8883", str(shipped.tls))
    sub = sub.replace("/etc/blankfilter/broker-ca.crt", str(shipped.ca))
    done = subprocess.run(["bash", "-c", f"{read}\n{sub}"], input=USERS["dashboard"] + "\n", capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{T1}/status {status.decode()}"
    assert USERS["dashboard"] not in done.stdout + done.stderr, "the password is not echoed"
