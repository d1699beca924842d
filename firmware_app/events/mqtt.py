"""The MQTT publisher: the ledger's outbox to the broker, with paho-mqtt 2.x (imported here only).

One thread owns the client: it connects (with backoff, one clear log line per new problem), runs
paho's network loop, publishes undelivered events oldest first at a bounded rate with QoS 1, and
marks an event delivered only when its PUBACK arrives. A resend after a reconnect may deliver an
event twice; subscribers de-duplicate on `event_id`. It also keeps `availability` (retained,
`offline` as the last will and on a clean stop), the retained `status` heartbeat, the optional
remote cutoff and Home Assistant discovery.

The thread has its own ledger connection (SQLite connections stay in their thread).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware_app.config import Config, MqttSection
from firmware_app.errors import ConfigError, LedgerUnavailable
from firmware_app.events import discovery
from firmware_app.events.health import health
from firmware_app.events.payloads import Topics, build_status, dumps, reference_freshness
from firmware_app.ledger import Ledger

log = logging.getLogger(__name__)

WINDOW = 20  # events in flight (published, PUBACK pending) at most
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 300.0
IDLE_LOOP_S = 5.0  # network loop timeout when idle: keepalive and new events within 5 s, few wake-ups
CUTOFF_RANGE = (0.01, 0.99)
REMOTE_CUTOFF_KEY = "remote_cutoff"
DELIVERED_KEEP_DAYS = 30


def read_password(m: MqttSection) -> str | None:
    """From mqtt.password_file, else a systemd credential (LoadCredential=mqtt_password:...)."""
    path = Path(m.password_file) if m.password_file else None
    if path is None and os.environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(os.environ["CREDENTIALS_DIRECTORY"]) / "mqtt_password"
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"mqtt.password_file = {str(path)!r}: cannot read it ({exc})") from None
    return password or None  # an empty credential (the unit's fallback when none is installed): no password


def parse_cutoff(payload: bytes) -> tuple[float | None, str]:
    """A remote cutoff, or why it is refused."""
    try:
        text = payload.decode("utf-8").strip()
        value = float(json.loads(text)["cutoff"]) if text.startswith("{") else float(text)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None, f"not a number: {payload[:40]!r}"
    lo, hi = CUTOFF_RANGE
    if not lo <= value <= hi:  # also refuses nan
        return None, f"{value} is outside [{lo}, {hi}]"
    return value, ""


@dataclass
class Hooks:
    """What the publisher needs from the running trap."""

    model: tuple[str, str]
    cutoff: Callable[[], float]
    set_cutoff: Callable[[float], None] | None = None  # None: remote cutoff off


class Publisher:
    def __init__(self, config: Config, hooks: Hooks, started_at: float | None = None) -> None:
        self.config, self.m, self.hooks = config, config.mqtt, hooks
        self.topics = Topics(self.m.topic_prefix, config.trap.id)
        self.started_at = started_at or time.time()
        self.password = read_password(self.m)  # a bad file fails now, at start-up
        self._wake, self._stop = threading.Event(), threading.Event()
        self._drain_until = 0.0
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self.connected = False
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox id
        self._acked: list[int] = []  # mids PUBACKed since the last look
        self._last_problem = ""
        self._refused = ""
        self._ledger: Ledger | None = None
        self._next_status = 0.0
        self._tokens = float(WINDOW)
        self._tokens_at = time.monotonic()
        self._backlog = False
        self._bank_problem = ""
        self.delivered = 0

    # -- the trap's side --------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New events in the outbox (called by the pipeline after a decision)."""
        self._wake.set()

    def stop(self, drain_s: float = 0.0) -> None:
        """Give the broker up to drain_s to take what is waiting, then say `offline` and disconnect."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=drain_s + 15.0)

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        ledger = self._ledger = Ledger(self.config.ledger_path)
        client = self._client(ledger)
        backoff = BACKOFF_MIN_S
        try:
            while not self._finished(ledger):
                if not self.connected:
                    if self._connect(client):
                        backoff = BACKOFF_MIN_S
                        continue
                    # Only a stop ends the wait early: new events must not hurry a reconnect. While
                    # stopping (`run --once`), retry until mqtt.drain_s is used up.
                    self._stop.wait(min(backoff, self._drain_left()) if self._stop.is_set() else backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                client.loop(timeout=self._loop_timeout())
                self._wake.clear()
                self._settle(ledger)
                if self.connected:
                    self._send(client, ledger)
                    self._heartbeat(client, ledger)
        except Exception:  # the publisher must never take the trap down: events wait in the outbox
            log.exception("MQTT publisher stopped on an unexpected error; events wait in the outbox")
        finally:
            self._goodbye(client)
            ledger.close()

    def _finished(self, ledger: Ledger) -> bool:
        if not self._stop.is_set():
            return False
        return self._drain_left() <= 0 or (self.connected and self._drained(ledger))

    def _drain_left(self) -> float:
        return self._drain_until - time.monotonic()

    def _loop_timeout(self) -> float:
        """Short while acknowledgements or a backlog are due, long when idle (few wake-ups on battery)."""
        if self._in_flight or self._stop.is_set():
            return 0.05
        if self._backlog:  # more events wait: come back when the rate limit has a token again
            return max(0.005, min(1.0, (1.0 - self._tokens) / self.m.backlog_rate))
        return min(IDLE_LOOP_S, self.m.keepalive_s / 2)

    def _drained(self, ledger: Ledger) -> bool:
        """Nothing in flight or waiting, and the status due at connect sent (`run --once` with nothing
        new would otherwise say online and offline, and never how the trap is)."""
        return not self._in_flight and self._next_status != 0.0 and ledger.outbox_state()[0] == 0

    # -- connection -------------------------------------------------------------------------
    def _client(self, ledger: Ledger) -> Any:
        import paho.mqtt.client as mqtt

        m = self.m
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=m.client_id or f"blankfilter-{self.config.trap.id}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        if m.username:
            client.username_pw_set(m.username, self.password)
        if m.tls:
            client.tls_set(
                ca_certs=m.ca_file or None,
                certfile=m.cert_file or None,
                keyfile=m.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(m.tls_insecure)
        client.max_inflight_messages_set(WINDOW)
        client.on_connect = lambda c, _u, _f, rc, _p: self._on_connect(c, rc, ledger)
        client.on_disconnect = lambda _c, _u, _f, rc, _p: self._on_disconnect(rc)
        client.on_publish = lambda _c, _u, mid, _rc, _p: self._acked.append(mid)
        client.on_message = lambda c, _u, msg: self._on_message(c, msg, ledger)
        return client

    def _connect(self, client: Any) -> bool:
        """Connect and wait for the broker's answer (CONNACK). False, with the reason logged once."""
        m = self.m
        self._refused = ""
        try:
            client.connect(m.host, m.port, keepalive=m.keepalive_s)
            deadline = time.monotonic() + 10.0
            while not self.connected and not self._refused and time.monotonic() < deadline:
                client.loop(timeout=0.2)
        except ssl.SSLError as exc:
            self._problem(
                f"TLS with {m.host}:{m.port} failed ({exc.reason or exc}): check mqtt.ca_file and the broker's cert"
            )
            return False
        except OSError as exc:
            self._problem(f"cannot reach the broker {m.host}:{m.port} ({exc.strerror or exc})")
            return False
        if self._refused:
            client.disconnect()
            self._problem(f"the broker {m.host}:{m.port} refused the connection: {self._refused}"
                          + (" (check mqtt.username and the password)" if "user" in self._refused.lower()
                             or "authori" in self._refused.lower() else ""))  # fmt: skip
            return False
        if not self.connected:
            client.disconnect()
            self._problem(f"the broker {m.host}:{m.port} did not answer within 10 s")
            return False
        return True

    def _problem(self, text: str) -> None:
        """One log line per new problem, not one per retry: a month offline must not fill the card."""
        if text != self._last_problem:
            waiting = self._ledger.outbox_state()[0] if self._ledger is not None else 0
            log.error("MQTT: %s; %d event(s) wait in the outbox and go when it works", text, waiting)
            self._last_problem = text
        else:
            log.debug("MQTT: %s (still)", text)

    def _on_connect(self, client: Any, reason_code: Any, ledger: Ledger) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            return
        self.connected = True
        self._in_flight.clear()  # resend whatever was not acknowledged: de-duplicated by event_id
        if self._last_problem:
            log.info("MQTT: connected to %s:%d again", self.m.host, self.m.port)
        else:
            log.info("MQTT: connected to %s:%d as %s", self.m.host, self.m.port, self.topics.base)
        self._last_problem = ""
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        if self.hooks.set_cutoff is not None:
            client.subscribe(self.topics.set_cutoff, qos=1)
            self._echo_config(client, "start")
        if self.m.ha_discovery:
            client.subscribe(f"{self.m.ha_prefix}/status", qos=1)
            discovery.publish(client, self.m.ha_prefix, self.topics, self.config.trap.id, self.hooks.model)
        self._next_status = 0.0  # a fresh status right away

    def _on_disconnect(self, reason_code: Any) -> None:
        was = self.connected
        self.connected = False
        if was and not self._stop.is_set():
            self._problem(f"lost the broker {self.m.host}:{self.m.port} ({reason_code})")

    # -- events -----------------------------------------------------------------------------
    def _settle(self, ledger: Ledger) -> None:
        """PUBACKs received: those events are delivered."""
        if not self._acked:
            return
        mids, self._acked = self._acked, []
        ids = [self._in_flight.pop(mid) for mid in mids if mid in self._in_flight]
        if ids:
            try:
                ledger.events_delivered(ids)
                self.delivered += len(ids)
            except LedgerUnavailable as exc:  # sent twice later, de-duplicated by event_id
                log.error("MQTT: could not mark %d event(s) delivered: %s", len(ids), exc)

    def _send(self, client: Any, ledger: Ledger) -> None:
        room = min(WINDOW - len(self._in_flight), int(self._refill()))
        if room <= 0:
            self._backlog = True
            return
        pending = ledger.pending_events(room, exclude=self._in_flight.values())
        self._backlog = len(pending) == room  # a full batch: there may be more
        sent = []
        for event in pending:
            info = client.publish(self.topics.event, event.payload, qos=1, retain=False)
            if info.rc != 0:  # not connected any more: the rest waits
                break
            self._in_flight[info.mid] = event.id
            self._tokens -= 1
            sent.append(event.id)
        if sent:
            ledger.events_sent(sent)

    def _refill(self) -> float:
        """A token bucket: a backlog drains at mqtt.backlog_rate events/s at most."""
        now = time.monotonic()
        self._tokens = min(float(WINDOW), self._tokens + (now - self._tokens_at) * self.m.backlog_rate)
        self._tokens_at = now
        return self._tokens

    # -- status, config, remote cutoff ------------------------------------------------------
    def status(self, ledger: Ledger) -> dict[str, Any]:
        now = time.time()
        started = datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds")
        today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00+00:00")
        return build_status(
            self.config.trap.id, self.started_at, now, ledger.counts_since(started), ledger.counts_since(today),
            ledger.outbox_state(), health(self.config.store.root), self.hooks.model, self.hooks.cutoff(),
            ledger.last_event_at(), self._references(now),
        )  # fmt: skip

    def _references(self, now: float) -> dict[str, dict[str, dict[str, Any]]] | None:
        """How fresh each camera's references are: one small read-only query of the bank per status.
        None (the field is left out) without camera context, without a bank yet, or when the bank
        cannot be read (logged once per new problem: the status itself must still go out)."""
        from firmware_app.context.bank import BankError, freshness

        path = self.config.bank_path
        if not self.config.context.enabled or not path.exists():
            return None
        try:
            rows = freshness(path)
        except BankError as exc:
            if str(exc) != self._bank_problem:
                log.warning("MQTT status: reference freshness left out: %s", exc)
                self._bank_problem = str(exc)
            return None
        self._bank_problem = ""
        return reference_freshness(rows, now)

    def _heartbeat(self, client: Any, ledger: Ledger) -> None:
        now = time.monotonic()
        if now < self._next_status:
            return
        self._next_status = now + self.m.status_interval_s
        client.publish(self.topics.status, dumps(self.status(ledger)), qos=1, retain=True)
        try:  # delivered events are history: the card keeps a month of them
            ledger.prune_delivered(DELIVERED_KEEP_DAYS)
        except LedgerUnavailable as exc:
            log.debug("outbox pruning skipped: %s", exc)

    def _echo_config(self, client: Any, source: str) -> None:
        payload = {"cutoff": round(self.hooks.cutoff(), 6), "source": source, "at": datetime.now(UTC).isoformat()}
        client.publish(self.topics.config, json.dumps(payload), qos=1, retain=True)

    def _on_message(self, client: Any, msg: Any, ledger: Ledger) -> None:
        if msg.topic == f"{self.m.ha_prefix}/status":
            if msg.payload == b"online":  # Home Assistant restarted: it forgot the devices
                discovery.publish(client, self.m.ha_prefix, self.topics, self.config.trap.id, self.hooks.model)
            return
        if msg.topic != self.topics.set_cutoff or self.hooks.set_cutoff is None:
            return
        if msg.retain:
            log.info("MQTT: a retained message on %s is ignored: send the cutoff without retain", msg.topic)
            return
        value, why = parse_cutoff(msg.payload)
        if value is None:
            log.warning("MQTT: remote cutoff ignored: %s (on %s)", why, msg.topic)
            return
        self.hooks.set_cutoff(value)
        ledger.set_meta(REMOTE_CUTOFF_KEY, repr(value))
        log.warning("MQTT: cutoff set remotely to %.4f (persisted; mqtt.remote_cutoff = true)", value)
        self._echo_config(client, "remote")
        self._next_status = 0.0

    def _goodbye(self, client: Any) -> None:
        if not self.connected:
            return
        info = client.publish(self.topics.availability, "offline", qos=1, retain=True)
        deadline = time.monotonic() + 3.0
        while not info.is_published() and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        client.disconnect()
        self.connected = False
