"""The real Home Assistant for the tests: installed once into a cached venv (scripts/ha-venv), started
as a subprocess on a free port with a small configuration.yaml (no default_config: only the
integrations HA always loads, plus api, config, onboarding and whatever packages the test adds),
onboarded through its own onboarding API, and given its MQTT integration by the config flow, as a
user does in the UI. The test then reads HA through its REST and websocket APIs."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
HA_VERSION = "2025.4.4"
# Log lines that are Home Assistant's own business on a bare machine, not a problem with our configs.
# (libturbojpeg only speeds up camera snapshots; Debian's libturbojpeg0 silences it.)
BENIGN = ("Skipping pip installation of required modules", "Error loading libturbojpeg")


@cache
def ha_venv() -> Path:
    """The venv with Home Assistant (built on first use, a few minutes; cached afterwards)."""
    done = subprocess.run([REPO / "scripts" / "ha-venv"], capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode == 3:
        pytest.skip(f"Home Assistant {HA_VERSION} needs Python 3.13: {done.stderr.strip()}")
    assert done.returncode == 0, f"scripts/ha-venv failed:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


class HomeAssistant:
    """One Home Assistant with its own config folder, connected to the broker as `username`."""

    def __init__(self, folder: Path, broker_port: int, username: str, password: str) -> None:
        self.folder, self.broker_port, self.username, self.password = folder, broker_port, username, password
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "home-assistant.log"
        self._write_config(packages=False)

    def _write_config(self, packages: bool) -> None:
        include = "  packages: !include_dir_named packages\n" if packages else ""
        (self.folder / "configuration.yaml").write_text(
            "homeassistant:\n  name: Test\n  latitude: -41.29\n  longitude: 174.78\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  country: NZ\n  currency: NZD\n"
            f"{include}http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\nconfig:\nonboarding:\nlogger:\n  default: warning\n"
        )

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self, packages: dict[str, Path] | None = None) -> HomeAssistant:
        """Onboarded, with the MQTT integration connected. With packages, HA starts once more with
        them, as a user pastes a package after setting MQTT up (an mqtt trigger needs the integration
        at start-up)."""
        self._boot()
        self._onboard()
        self._add_mqtt()
        if packages:
            (self.folder / "packages").mkdir(exist_ok=True)
            for name, source in packages.items():
                (self.folder / "packages" / f"{name}.yaml").write_text(source.read_text())
            self._write_config(packages=True)
            self.restart()
        return self

    def _boot(self) -> None:
        hass = ha_venv() / "bin" / "hass"
        with (self.folder / "stdout.txt").open("ab") as out:
            self.proc = subprocess.Popen([str(hass), "-c", str(self.folder), "--skip-pip", "--log-no-color"],
                                         stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(self._up, 120, "Home Assistant's HTTP API", step=0.5)

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Home Assistant exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/api/onboarding", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def restart(self) -> None:
        self.stop()
        self._boot()
        wait_until(self._mqtt_loaded, 60, "the MQTT integration after the restart", step=0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def _onboard(self) -> None:
        """The owner account, as the first page of a new HA creates it, then an access token for it."""
        client_id = f"{self.url}/"
        user = {"client_id": client_id, "name": "Owner", "username": "owner", "password": "owner-password-1",
                "language": "en"}  # fmt: skip
        code = self.request("POST", "/api/onboarding/users", user, auth=False)["auth_code"]
        form = {"grant_type": "authorization_code", "code": code, "client_id": client_id}
        self.token = self.request("POST", "/auth/token", form, auth=False, form=True)["access_token"]

    def _add_mqtt(self) -> None:
        """Settings → Devices & services → Add integration → MQTT, with the broker's address and login."""
        flow = self.request("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        assert flow.get("step_id") == "broker", flow
        broker = {"broker": "127.0.0.1", "port": self.broker_port, "username": self.username,
                  "password": self.password}  # fmt: skip
        done = self.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", broker)
        assert done.get("type") == "create_entry", f"the MQTT config flow did not finish: {done}"
        wait_until(self._mqtt_loaded, 60, "the MQTT integration", step=0.5)

    def _mqtt_loaded(self) -> bool:
        self._up()
        try:
            entries = self.request("GET", "/api/config/config_entries/entry?domain=mqtt")
        except urllib.error.URLError:
            return False
        return any(e["state"] == "loaded" for e in entries)

    # -- APIs ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True, form: bool = False) -> Any:
        return json.loads(self.raw(method, path, body, auth=auth, form=form) or b"null")

    def raw(self, method: str, path: str, body: Any = None, *, auth: bool = True, form: bool = False) -> bytes:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}") from e

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}

    def call(self, domain: str, service: str, **data: Any) -> None:
        self.request("POST", f"/api/services/{domain}/{service}", data)

    def ws_connect(self) -> Any:
        """An authenticated websocket (the registries and notifications have no REST endpoint)."""
        import websocket

        conn = websocket.create_connection(f"ws://127.0.0.1:{self.port}/api/websocket", timeout=30)
        assert json.loads(conn.recv())["type"] == "auth_required"
        conn.send(json.dumps({"type": "auth", "access_token": self.token}))
        assert json.loads(conn.recv())["type"] == "auth_ok"
        return conn

    def ws(self, kind: str, **data: Any) -> Any:
        """One websocket command's result."""
        conn = self.ws_connect()
        try:
            conn.send(json.dumps({"id": 1, "type": kind, **data}))
            reply = json.loads(conn.recv())
        finally:
            conn.close()
        assert reply.get("success"), f"{kind}: {reply}"
        return reply["result"]

    def devices(self) -> list[dict[str, Any]]:
        return list(self.ws("config/device_registry/list"))

    def entities(self) -> list[dict[str, Any]]:
        return list(self.ws("config/entity_registry/list"))

    def notifications(self) -> list[dict[str, Any]]:
        return list(self.ws("persistent_notification/get"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def problems(self) -> list[str]:
        """Log lines at WARNING and above that are not BENIGN: a config HA complains about fails here."""
        lines = self.log_text().splitlines()
        bad = [line for line in lines if " WARNING " in line or " ERROR " in line or " CRITICAL " in line]
        return [line for line in bad if not any(b in line for b in BENIGN)]


class Events:
    """Home Assistant's bus events of one type, as they fire (a websocket subscription)."""

    def __init__(self, ha: HomeAssistant, event_type: str) -> None:
        self.conn = ha.ws_connect()
        self.conn.send(json.dumps({"id": 1, "type": "subscribe_events", "event_type": event_type}))
        assert json.loads(self.conn.recv()).get("success"), f"subscribe_events {event_type}"
        self.conn.settimeout(None)  # a quiet bus is no error
        self.seen: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        import websocket

        while True:
            try:
                message = json.loads(self.conn.recv())
            except (websocket.WebSocketException, OSError, ValueError):
                return
            if message.get("type") == "event":
                self.seen.append(message["event"]["data"])

    def close(self) -> None:
        self.conn.close()
