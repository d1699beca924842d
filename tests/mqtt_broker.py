"""A real mosquitto for the MQTT tests, on a free port, started and stopped by the test; and a
subscriber that records what arrives. scripts/test installs mosquitto (as root with apt); without it these tests skip
and say how to install it."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    """A port below the ephemeral range: a client retrying a dead port there can never be handed the
    same number for itself (Linux then "self-connects", and the port stays busy in TIME_WAIT)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Broker:
    """mosquitto with a config written by the test (extra lines: TLS, passwords, ACLs)."""

    def __init__(self, folder: Path, extra: str = "", port: int | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            pytest.skip("mosquitto is not installed (apt-get install -y mosquitto; CI installs it)")
        self.binary, self.folder, self.port = binary, folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        listener = extra if "listener" in extra else f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{extra}"
        # As root, mosquitto drops to the `mosquitto` user, which cannot write pytest's private temp folders.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"{user}persistence false\nlog_dest file {self.log}\nlog_type all\n{listener}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)  # fmt: skip
        wait_until(self._listening, 10, f"mosquitto on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"mosquitto exited: {err}\n{self.log.read_text() if self.log.exists() else ''}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class Subscriber:
    """Records every message on `topic` (retained ones included) from a real MQTT connection.

    With `username`, it logs in (password may be None); with keyword arguments for paho's
    `tls_set` (e.g. `ca_certs=...`), it connects over TLS. `ready()` waits for the broker to confirm
    the subscription, so nothing published after it is missed.
    """

    def __init__(
        self, port: int, topic: str = "#", *, username: str | None = None, password: str | None = None, **tls: Any
    ) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.topic = topic
        self.subscribed = threading.Event()
        self.refused = ""  # the broker's CONNACK reason when it refused the login
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}-{id(self)}")
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, _mid, _rcs, _p: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            return
        client.subscribe(self.topic, qos=1)

    def ready(self, timeout: float = 10.0) -> Subscriber:
        """Wait until the subscription is active (SUBACK); fails at once if the login was refused."""

        def subscribed() -> bool:
            if self.refused:
                raise AssertionError(f"the broker refused the subscriber: {self.refused}")
            return self.subscribed.is_set()

        wait_until(subscribed, timeout, f"the subscription to {self.topic}")
        return self

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on(topic)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
