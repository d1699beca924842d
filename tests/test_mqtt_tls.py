"""MQTT over TLS with a password, against a real mosquitto: what a trap in the field meets.

The test makes its own PKI with the openssl CLI (a CA, a server certificate for 127.0.0.1 and
localhost, and an unrelated CA) and its own password file with mosquitto_passwd. Also: the
deploy/mosquitto/ broker config and ACL, started as shipped (only paths and ports changed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import Broker, Subscriber, free_port, wait_until
from test_cli_run import started

from firmware_app.config import load_config
from firmware_app.events.mqtt import Hooks, Publisher

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
TRAP = "trap-01"  # the default trap.id, and its broker user name
TRAP_PASSWORD = "trap-pw-Xq7Lm2"  # distinctive, so a leak into the log is easy to find
WRONG_PASSWORD = "not-it-Rk4Zp9"
DASHBOARD, DASHBOARD_PASSWORD = "dashboard", "dash-pw-Vb3Nc8"
EVENT_TOPIC = f"blankfilter/{TRAP}/event"
KEPT = "action IN ('kept', 'failed_kept')"
ERROR_LINE = re.compile(r"\bERROR\b")

RunCli = Callable[..., subprocess.CompletedProcess[str]]
StoreArgs = Callable[..., list[str]]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path  # trusted by nobody here: a trap given it must refuse the broker


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")  # P-256: quick to generate


def openssl(folder: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)}:\n{done.stderr}"


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    openssl(folder, "req", "-x509", *EC_KEY, "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN=blankfilter test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (apt-get install -y openssl)")
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_ca(folder, "ca")
    other_ca, _ = make_ca(folder, "other-ca")
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    openssl(folder, "req", *EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    # Python checks the host name against subjectAltName only (never the CN): the trap connects to 127.0.0.1.
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    openssl(folder, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return Pki(ca, cert, key, other_ca)


def password_file(folder: Path, users: dict[str, str]) -> Path:
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        pytest.skip("mosquitto_passwd is not installed (it comes with mosquitto)")
    path = folder / "passwd"
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([binary, "-b", *create, str(path), user, password], check=True, capture_output=True)
    return path


def run_as_root_line() -> str:
    # mosquitto started as root drops to the `mosquitto` user, which cannot read pytest's private
    # (0700) temporary folders where the keys and password file are: keep root in the tests.
    return "user root\n" if os.geteuid() == 0 else ""


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    """mosquitto with only a TLS listener, no anonymous clients, a password file and no ACL."""
    folder = tmp_path / "broker"
    folder.mkdir()
    passwd = password_file(folder, {TRAP: TRAP_PASSWORD, DASHBOARD: DASHBOARD_PASSWORD})
    port = free_port()
    extra = (
        f"allow_anonymous false\npassword_file {passwd}\n"
        f"listener {port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
    )
    broker = Broker(folder, extra=extra, port=port)
    try:  # stopped even when the start itself fails half-way
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def dashboard(tls_broker: Broker, pki: Pki) -> Iterator[Subscriber]:
    """A subscriber logged in over TLS, subscribed before the trap runs (events are not retained)."""
    sub = Subscriber(tls_broker.port, EVENT_TOPIC, username=DASHBOARD, password=DASHBOARD_PASSWORD,
                     ca_certs=str(pki.ca))  # fmt: skip
    try:
        yield sub.ready()
    finally:
        sub.close()


def ledger_value(store: Path, sql: str) -> Any:
    with sqlite3.connect(store / "ledger.db") as db:
        return db.execute(sql).fetchone()[0]


def kept_bursts(store: Path) -> set[str]:
    with sqlite3.connect(store / "ledger.db") as db:
        return {row[0] for row in db.execute(f"SELECT DISTINCT burst FROM frames WHERE {KEPT}")}


def undelivered(store: Path) -> int:
    return int(ledger_value(store, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"))


def trap_args(
    store_args: StoreArgs, broker: Broker, pki: Pki, tmp_path: Path, password: str, **sets: object
) -> list[str]:
    secret = tmp_path / "mqtt_password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return store_args(mqtt__host="127.0.0.1", mqtt__port=broker.port, mqtt__tls="true", mqtt__ca_file=pki.ca,
                      mqtt__username=TRAP, mqtt__password_file=secret, **sets)  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ERROR_LINE.search(line)]


# -- a trap in the field ------------------------------------------------------------------------
def test_tls_with_password_delivers_one_event_per_kept_burst(
    tmp_path: Path, tls_broker: Broker, pki: Pki, dashboard: Subscriber, make_inbox: Callable[..., Path],
    store_args: StoreArgs, run_cli: RunCli,
) -> None:  # fmt: skip
    make_inbox()
    done = run_cli("run", "--once", *trap_args(store_args, tls_broker, pki, tmp_path, TRAP_PASSWORD), check_rc=0)
    store = tmp_path / "store"
    kept = kept_bursts(store)
    assert kept, "the fixture frames keep some bursts"
    assert ledger_value(store, f"SELECT COUNT(DISTINCT burst) FROM frames WHERE {KEPT}") == len(kept)

    def received() -> dict[str, dict[str, Any]]:
        return {e["event_id"]: e for e in dashboard.json_on(EVENT_TOPIC)}

    wait_until(lambda: len(received()) >= len(kept), 10, f"{len(kept)} events over TLS")
    events = received()
    assert {e["burst"] for e in events.values()} == kept, "one event per kept burst, no other"
    with sqlite3.connect(store / "ledger.db") as db:
        assert set(events) == {row[0] for row in db.execute("SELECT event_id FROM outbox")}
    assert undelivered(store) == 0, "every event acknowledged (PUBACK) and marked delivered"
    assert not error_lines(done.stderr), done.stderr
    assert TRAP_PASSWORD not in done.stdout + done.stderr


def test_wrong_password_is_one_clear_error_and_events_wait(
    tmp_path: Path, tls_broker: Broker, pki: Pki, make_inbox: Callable[..., Path], store_args: StoreArgs,
    run_cli: RunCli,
) -> None:  # fmt: skip
    make_inbox()
    args = trap_args(store_args, tls_broker, pki, tmp_path, WRONG_PASSWORD, mqtt__drain_s=3)
    # No broker (or a refusing one) is normal in the field: the frames are handled, the run succeeds.
    done = run_cli("run", "--once", *args, check_rc=0)
    errors = error_lines(done.stderr)
    assert len(errors) == 1, f"one line per problem, not one per retry:\n{done.stderr}"
    line = errors[0]
    assert f"127.0.0.1:{tls_broker.port}" in line and "refused" in line, line
    assert "password" in line or "username" in line, line
    assert WRONG_PASSWORD not in done.stdout + done.stderr, "the password never reaches the log"
    store = tmp_path / "store"
    kept = len(kept_bursts(store))
    assert kept > 0
    assert ledger_value(store, "SELECT COUNT(*) FROM outbox") == kept
    assert undelivered(store) == kept, "nothing delivered: all events wait in the outbox"


def test_refused_daemon_retries_without_repeating_the_error(
    tmp_path: Path, tls_broker: Broker, pki: Pki, make_inbox: Callable[..., Path], store_args: StoreArgs
) -> None:
    """A month with a wrong password must not fill the card: retries (with backoff) log nothing new."""
    make_inbox()
    log = tmp_path / "daemon.log"
    with started(["run", *trap_args(store_args, tls_broker, pki, tmp_path, WRONG_PASSWORD)], log) as proc:
        # Backoff 1 s, then 2 s: three refusals take about 3 s.
        wait_until(lambda: tls_broker.log.read_text().count("not authorised") >= 3, 30, "three refused logins")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    stderr = log.read_text()
    assert len(error_lines(stderr)) == 1, stderr
    assert WRONG_PASSWORD not in stderr
    assert undelivered(tmp_path / "store") == len(kept_bursts(tmp_path / "store")) > 0


def test_untrusted_ca_is_one_clear_tls_error_and_events_wait(
    tmp_path: Path, tls_broker: Broker, pki: Pki, make_inbox: Callable[..., Path], store_args: StoreArgs,
    run_cli: RunCli,
) -> None:  # fmt: skip
    make_inbox()
    args = trap_args(store_args, tls_broker, pki, tmp_path, TRAP_PASSWORD, mqtt__drain_s=3)
    args += ["--set", f"mqtt.ca_file={pki.other_ca}"]  # the last --set wins
    done = run_cli("run", "--once", *args, check_rc=0)
    errors = error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert "TLS" in errors[0] and "certificate" in errors[0].lower(), errors[0]
    assert f"127.0.0.1:{tls_broker.port}" in errors[0]
    store = tmp_path / "store"
    kept = len(kept_bursts(store))
    assert kept > 0 and undelivered(store) == kept


@pytest.mark.parametrize(
    ("case", "names"),
    [("missing_ca", ("mqtt.ca_file",)), ("cert_without_key", ("mqtt.cert_file", "mqtt.key_file"))],
)
def test_tls_config_errors_stop_at_start(
    tmp_path: Path, pki: Pki, store_args: StoreArgs, run_cli: RunCli, case: str, names: tuple[str, ...]
) -> None:
    """A broken TLS setting fails at start-up (exit 2, one line), not at the first reconnect in a month."""
    sets: dict[str, object] = {"mqtt__host": "127.0.0.1", "mqtt__port": free_port(), "mqtt__tls": "true"}
    missing = tmp_path / "no-such-ca.pem"
    if case == "missing_ca":
        sets["mqtt__ca_file"] = missing
    else:
        sets["mqtt__cert_file"] = pki.server_cert  # exists: only the key is missing
    done = run_cli("run", "--once", *store_args(**sets), check_rc=2)
    for name in names:
        assert name in done.stderr, done.stderr
    if case == "missing_ca":
        assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr
    assert len(error_lines(done.stderr)) <= 1


# -- the shipped broker config and ACL (deploy/mosquitto/) --------------------------------------
@pytest.fixture
def deploy_broker(tmp_path: Path, pki: Pki) -> Iterator[tuple[Broker, int]]:
    """deploy/mosquitto/mosquitto.conf with test paths and ports, and the very same ACL file.

    Yields the broker (its .port is the plain localhost listener) and the TLS listener's port.
    """
    folder = tmp_path / "deploy-broker"
    folder.mkdir()
    passwd = password_file(folder, {TRAP: TRAP_PASSWORD, "trap-02": "trap2-pw", DASHBOARD: DASHBOARD_PASSWORD})
    plain, tls = free_port(), free_port()
    broker = Broker(folder, extra=f"listener {plain} 127.0.0.1", port=plain)
    (folder / "persist").mkdir()
    replace = {
        "password_file": str(passwd),
        "acl_file": str(DEPLOY / "acl"),
        "persistence_location": f"{folder / 'persist'}/",
        "log_dest": f"file {broker.log}",
        "cafile": str(pki.ca),
        "certfile": str(pki.server_cert),
        "keyfile": str(pki.server_key),
        "listener 1883": f"{plain} 127.0.0.1",
        "listener 8883": f"{tls} 127.0.0.1",
    }
    seen: set[str] = set()
    lines = []
    for line in (DEPLOY / "mosquitto.conf").read_text().splitlines():
        key = next((k for k in replace if line == k or line.startswith(f"{k} ")), None)
        if key is not None:
            line = f"{key.split()[0]} {replace[key]}"
            seen.add(key)
        lines.append(line)
    assert seen == set(replace), f"deploy/mosquitto/mosquitto.conf changed shape: {set(replace) - seen} not found"
    # The Broker helper wrote its own default config; the shipped one (paths swapped) replaces it.
    broker.conf.write_text(run_as_root_line() + "log_type all\n" + "\n".join(lines) + "\n")
    try:
        broker.start()
        wait_until(lambda: listening(tls), 10, "the TLS listener")  # start() waited for the plain one
        yield broker, tls
    finally:
        broker.stop()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def acl_clients(deploy_broker: tuple[Broker, int], pki: Pki) -> Iterator[tuple[Subscriber, Subscriber]]:
    """The dashboard on the plain localhost listener; trap-01 over TLS, listening for its set/ topics."""
    broker, tls = deploy_broker
    dash = Subscriber(broker.port, "blankfilter/#", username=DASHBOARD, password=DASHBOARD_PASSWORD)
    trap = Subscriber(tls, f"blankfilter/{TRAP}/set/#", username=TRAP, password=TRAP_PASSWORD, ca_certs=str(pki.ca))
    try:
        yield dash.ready(), trap.ready()
    finally:
        dash.close()
        trap.close()


def publish(client: Subscriber, topic: str, payload: bytes) -> None:
    info = client.client.publish(topic, payload, qos=1)
    info.wait_for_publish(timeout=5)  # PUBACK (mosquitto acknowledges a denied publish too, then drops it)
    assert info.is_published(), topic


def test_deploy_acl_keeps_each_trap_to_its_own_topics(
    deploy_broker: tuple[Broker, int], acl_clients: tuple[Subscriber, Subscriber]
) -> None:
    broker, _ = deploy_broker
    dash, trap = acl_clients
    # Denied publishes first, then an allowed one on the same connection: mosquitto handles a
    # client's packets in order, so once the allowed one is in, a leaked one would be in too.
    publish(trap, "blankfilter/trap-02/event", b"spoofed")  # another trap's topic
    publish(trap, f"blankfilter/{TRAP}/set/cutoff", b"0.02")  # its own cutoff: the dashboard's job
    publish(trap, f"blankfilter/{TRAP}/event", b"mine")
    wait_until(lambda: dash.on(f"blankfilter/{TRAP}/event") == [b"mine"], 5, "trap-01's own event")
    assert dash.on("blankfilter/trap-02/event") == []
    assert dash.on(f"blankfilter/{TRAP}/set/cutoff") == []
    log = broker.log.read_text()
    assert "Denied PUBLISH" in log and "'blankfilter/trap-02/event'" in log, "refused by the ACL, not lost"

    publish(dash, "blankfilter/trap-02/set/cutoff", b"0.4")  # another trap's: trap-01 must not see it
    publish(dash, f"blankfilter/{TRAP}/set/cutoff", b"0.3")
    wait_until(lambda: trap.on(f"blankfilter/{TRAP}/set/cutoff") == [b"0.3"], 5, "the dashboard's cutoff at trap-01")
    assert [t for t, _, _ in trap.messages] == [f"blankfilter/{TRAP}/set/cutoff"]


def test_deploy_acl_allows_everything_the_real_publisher_does(
    tmp_path: Path, pki: Pki, deploy_broker: tuple[Broker, int], acl_clients: tuple[Subscriber, Subscriber]
) -> None:
    """The real Publisher (discovery and remote cutoff on) under the shipped ACL: nothing denied."""
    broker, tls = deploy_broker
    dash, _ = acl_clients
    secret = tmp_path / "mqtt_password"
    secret.write_text(TRAP_PASSWORD)
    (tmp_path / "store").mkdir()
    config = load_config(None, overrides=[
        f"store.root={tmp_path / 'store'}", "mqtt.host=127.0.0.1", f"mqtt.port={tls}", "mqtt.tls=true",
        f"mqtt.ca_file={pki.ca}", f"mqtt.username={TRAP}", f"mqtt.password_file={secret}",
        "mqtt.ha_discovery=true", "mqtt.remote_cutoff=true",
    ])  # fmt: skip
    cutoffs: list[float] = []
    got_cutoff = threading.Event()

    def set_cutoff(value: float) -> None:
        cutoffs.append(value)
        got_cutoff.set()

    publisher = Publisher(config, Hooks(model=("test-model", "1.0"), cutoff=lambda: 0.5, set_cutoff=set_cutoff))
    publisher.start()
    try:
        base = f"blankfilter/{TRAP}"
        wait_until(lambda: bool(dash.on(f"{base}/status")) and bool(dash.on(f"{base}/config")), 10, "status, config")
        assert dash.on(f"{base}/availability")[-1] == b"online"
        publish(dash, f"{base}/set/cutoff", b"0.3")
        wait_until(got_cutoff.is_set, 5, "the remote cutoff at the publisher")
        assert cutoffs == [0.3]
        wait_until(lambda: json.loads(dash.on(f"{base}/config")[-1])["source"] == "remote", 5, "the config echo")
    finally:
        publisher.stop(drain_s=0)
    log = broker.log.read_text()
    assert "Denied" not in log, [line for line in log.splitlines() if "Denied" in line]
    assert f"blankfilter-{TRAP}" in log, "the publisher's discovery and topics went through this broker"


# -- the shipped broker config keeps what it acknowledged ---------------------------------------
class Session:
    """A real MQTT v3.1.1 client; with a fixed client id and clean_session false, the broker keeps
    its subscription and queues QoS 1 messages for it while it is away (the monitor's --client-id)."""

    def __init__(self, port: int, client_id: str, username: str, password: str, clean: bool, **tls: Any) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: None if rc.is_failure else self.connected.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self.connected.is_set, 10, f"{client_id} connected")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda _c, _u, _mid, _rcs, _p: done.set()
        self.client.subscribe(topic, qos=1)
        wait_until(done.is_set, 10, f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), f"no PUBACK for {topic}"

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_shipped_broker_config_keeps_acknowledged_events_and_retained_status_across_a_sigkill(
    deploy_broker: tuple[Broker, int], pki: Pki, tmp_path: Path
) -> None:
    """The broker side of "no event lost": once mosquitto has PUBACKed an event (and the trap has
    forgotten it), a SIGKILL and restart must not lose it for a persistent subscriber."""
    broker, tls = deploy_broker
    db = tmp_path / "deploy-broker" / "persist" / "mosquitto.db"
    monitor = Session(broker.port, "blankfilter-monitor", DASHBOARD, DASHBOARD_PASSWORD, clean=False)
    monitor.subscribe("blankfilter/#")
    monitor.close()  # away: the broker now queues QoS 1 events for its session

    trap = Session(tls, "trap-01", TRAP, TRAP_PASSWORD, clean=True, ca_certs=str(pki.ca))
    events = [f'{{"event_id": "e{i}", "marker": "acked-{i:02d}"}}'.encode() for i in range(8)]
    for payload in events:
        trap.publish(EVENT_TOPIC, payload)
    status = b'{"marker": "retained-status-Qw8"}'
    trap.publish(f"blankfilter/{TRAP}/status", status, retain=True)
    trap.close()
    # Everything acknowledged is on disk shortly after its PUBACK (a timed autosave has not saved yet).
    wait_until(lambda: db.is_file() and b"retained-status-Qw8" in db.read_bytes(), 5,
               f"the acknowledged messages in {db} (persistence, autosave_on_changes)")  # fmt: skip

    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait(timeout=10)
    broker.proc = None
    broker.start()

    back = Session(broker.port, "blankfilter-monitor", DASHBOARD, DASHBOARD_PASSWORD, clean=False)
    try:
        wait_until(lambda: len(back.on(EVENT_TOPIC)) >= len(events), 5, "the queued events after the restart")
        assert sorted(set(back.on(EVENT_TOPIC))) == sorted(events)
    finally:
        back.close()
    fresh = Session(broker.port, "late-subscriber", DASHBOARD, DASHBOARD_PASSWORD, clean=True)
    try:
        fresh.subscribe(f"blankfilter/{TRAP}/status")
        wait_until(lambda: fresh.on(f"blankfilter/{TRAP}/status") == [status], 5, "the retained status")
    finally:
        fresh.close()
