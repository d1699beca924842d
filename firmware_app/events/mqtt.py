"""The MQTT publisher: the ledger's outbox to the broker, with paho-mqtt 2.x (imported here only).

One thread owns the client: it connects (with backoff, one clear log line per new problem), runs
paho's network loop, publishes undelivered events oldest first at a bounded rate with QoS 1, and
marks an event delivered only when its PUBACK arrives. A resend after a reconnect may deliver an
event twice; subscribers de-duplicate on `event_id`; an event sent mqtt.late_after_s or more after
its decision says `"late": true`. With each kept burst's event go the retained `thumbnail` (raw JPEG)
and `animal` = ON (OFF after mqtt.animal_off_delay_s without another). It also keeps `availability`
(retained: `online`; `stopped` on a clean stop, after a last status; `offline` as the last will), the
retained `status` (a heartbeat, and after decided bursts at most every mqtt.status_min_interval_s),
the optional remote cutoff and Home Assistant discovery.

The thread has its own ledger connection (SQLite connections stay in their thread).

No message can stop delivery: a remote cutoff is short ASCII or refused with one line, and any
exception in a message handler is contained (logged once per new problem, the message dropped). A
session that fails anyway is restarted with a fresh client (the status's `publisher` field says how
often and why); after RESTART_LIMIT failures in a row the publisher gives up and tells the trap
(`on_failure`), so `run` exits non-zero and systemd restarts the process, rather than a trap that
looks alive while its events pile up.
"""

from __future__ import annotations

import json
import logging
import os
import re
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
from firmware_app.events.payloads import (
    CUTOFF_RANGE,
    Topics,
    as_published,
    build_status,
    dumps,
    reference_freshness,
    thumbnail_jpeg,
)
from firmware_app.ledger import Ledger

log = logging.getLogger(__name__)

WINDOW = 20  # events in flight (published, PUBACK pending) at most
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 300.0
IDLE_LOOP_S = 5.0  # network loop timeout when idle: keepalive and new events within 5 s, few wake-ups
REMOTE_CUTOFF_KEY = "remote_cutoff"
CAMERA_CUTOFFS_KEY = "camera_cutoffs"  # ledger meta: JSON {camera: cutoff}, from <base>/set/cutoff/<camera>
MAX_CAMERA_CUTOFFS = 1000
BURSTS_RECOUNT_S = 60.0  # the status' per-camera burst counts read the whole ledger: at most once a minute
DELIVERED_KEEP_DAYS = 30
MAX_CUTOFF_PAYLOAD = 256  # bytes: '{"cutoff": 0.3}' is 15; a longer one is a mistake or an attack
DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")  # ASCII digits only
RESTART_BACKOFF_S = 1.0  # the first wait before a failed session is restarted; it doubles up to 60 s
RESTART_LIMIT = 5  # failed sessions in a row (none got a status out in between): give up, the process exits


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
    """A remote cutoff, or why it is refused: `0.3` or `{"cutoff": 0.3}`, short, in ASCII digits only
    (Python's float() also takes '٠.٥', '1_0' and 'nan'; a remote value must be what a person reads)."""
    if len(payload) > MAX_CUTOFF_PAYLOAD:
        return None, f"{len(payload)} bytes, over the {MAX_CUTOFF_PAYLOAD}-byte limit for a cutoff"
    try:
        text = payload.decode("ascii").strip()
    except UnicodeDecodeError:
        return None, f"not ASCII (a cutoff is ASCII digits, e.g. 0.3): {_preview(payload)}"
    if not text.isprintable():
        return None, f"not text (control characters): {_preview(payload)}"
    value: Any = text
    if text.startswith("{"):
        try:
            value = json.loads(text).get("cutoff")
        except (ValueError, AttributeError, RecursionError):
            value = None
    if isinstance(value, str) and DECIMAL.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"not a number: {_preview(payload)}"
    value = float(value)
    lo, hi = CUTOFF_RANGE
    if not lo <= value <= hi:  # also refuses nan
        return None, f"{value} is outside [{lo}, {hi}]"
    return value, ""


def _preview(payload: bytes) -> str:
    """The start of a payload, safe for a log line (repr escapes control characters)."""
    return repr(payload[:24]) + (f"... ({len(payload)} bytes)" if len(payload) > 24 else "")


@dataclass
class Hooks:
    """What the publisher needs from the running trap."""

    model: tuple[str, str]
    cutoff: Callable[[], float]
    set_cutoff: Callable[[float], None] | None = None  # None: remote cutoff off
    set_camera_cutoff: Callable[[str, float], None] | None = None  # one camera's own (remote cutoff on)
    camera_cutoffs: Callable[[], dict[str, float]] = dict  # the cameras' own cutoffs in force


class Publisher:
    def __init__(
        self, config: Config, hooks: Hooks, started_at: float | None = None, ledger_checked: bool = False
    ) -> None:
        """`ledger_checked`: the trap already opened (and integrity-checked) this ledger, so the
        publisher's own connection skips the check (it reads the whole file on a big ledger)."""
        self.config, self.m, self.hooks = config, config.mqtt, hooks
        self.ledger_checked = ledger_checked
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
        self._next_status = 0.0  # the next heartbeat (monotonic); 0.0: due now (at connect)
        self._last_status = float("-inf")  # when the last status went out (monotonic)
        self._status_sent = False  # in this session
        self._status_due = False  # bursts were decided since the last status
        self._animal_off_at: float | None = None  # monotonic; None: `animal` is OFF
        self._burst_counts: tuple[float, dict[str, dict[str, int]]] | None = None  # (monotonic, counts)
        self._tokens = float(WINDOW)
        self._tokens_at = time.monotonic()
        self._backlog = False
        self._bank_problem = ""
        self.delivered = 0
        self.restarts = 0  # sessions restarted after an unexpected error
        self.dropped_messages = 0  # incoming messages whose handler raised
        self.problem = ""  # the last unexpected error, and when (for the status)
        self.problem_at = ""
        self.failed = ""  # set when the publisher gave up: the trap must exit (see on_failure)
        self.on_failure: Callable[[], None] | None = None  # the trap's stop: `run` then exits 1
        self._fails_in_row = 0
        self._handler_problems: set[str] = set()

    # -- the trap's side --------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New events in the outbox (called by the pipeline after a decision)."""
        self._wake.set()

    def decided(self) -> None:
        """Bursts were decided (kept or not): a fresh status is due, within mqtt.status_min_interval_s."""
        self._status_due = True
        self._wake.set()

    def stop(self, drain_s: float = 0.0) -> None:
        """A clean stop: give the broker up to drain_s to take what is waiting, then publish a last
        status, `animal` OFF and `stopped`, and disconnect."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=drain_s + 15.0)

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        """Sessions until stopped: one that fails unexpectedly is restarted with a fresh client; after
        RESTART_LIMIT failures in a row (or if the thread cannot even start) the trap is told."""
        try:
            ledger = self._ledger = Ledger(self.config.ledger_path, verify=not self.ledger_checked)
        except Exception as exc:  # whatever it is, the trap must hear of it
            self._give_up(f"cannot open the ledger: {type(exc).__name__}: {exc}")
            return
        wait = RESTART_BACKOFF_S
        try:
            while True:
                client = self._client(ledger)
                try:
                    self._session(client, ledger)
                    return
                except Exception as exc:  # no error may end delivery silently
                    new = self._note_problem(exc)
                    self._fails_in_row += 1
                    self._drop(client)
                    if self._fails_in_row >= RESTART_LIMIT:
                        self._give_up(f"{self._fails_in_row} failures in a row, the last: {self.problem}")
                        return
                    log.error("MQTT publisher failed (%s); restarting it in %.1f s; events wait in the outbox",
                              self.problem, wait, exc_info=new)  # the traceback once per new problem  # fmt: skip
                    self.restarts += 1
                    if self._stop.wait(wait) and self._drain_left() <= 0:
                        return
                    wait = min(wait * 2, 60.0)
        except BaseException as exc:  # the supervisor itself: say so, and let the trap exit
            self._give_up(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            ledger.close()

    def _give_up(self, why: str) -> None:
        self.failed = why
        log.error("MQTT publisher gave up (%s): the trap stops so that its service restarts it; events wait "
                  "in the outbox", why, exc_info=True)  # fmt: skip
        if self.on_failure is not None and not self._stop.is_set():
            self.on_failure()

    def _note_problem(self, exc: BaseException) -> bool:
        """Remember it for the status; True if it is a new problem (not the last one again)."""
        problem = f"{type(exc).__name__}: {exc}"[:300]
        new = problem != self.problem
        self.problem, self.problem_at = problem, datetime.now(UTC).isoformat(timespec="seconds")
        return new

    def _drop(self, client: Any) -> None:
        """After a failed session: let the client go (the broker sees the will if it cannot say goodbye)."""
        try:
            self._goodbye(client, clean=False)
        except Exception:  # the connection may be what failed
            log.debug("MQTT: no clean goodbye after the failure", exc_info=True)
        self.connected = False
        self._in_flight.clear()  # resent by the next session: de-duplicated by event_id
        self._acked.clear()

    def _session(self, client: Any, ledger: Ledger) -> None:
        """One client's life: connect, publish, until stopped. Unexpected errors propagate to _run."""
        backoff = BACKOFF_MIN_S
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
                self._animal_off(client)
        self._goodbye(client, clean=True)

    def _finished(self, ledger: Ledger) -> bool:
        if not self._stop.is_set():
            return False
        return self._drain_left() <= 0 or (self.connected and self._drained(ledger))

    def _drain_left(self) -> float:
        return self._drain_until - time.monotonic()

    def _loop_timeout(self) -> float:
        """Short while acknowledgements or a backlog are due, long when idle (few wake-ups on battery),
        and back in time for a status held back by the rate limit or for `animal` to go OFF."""
        if self._in_flight or self._stop.is_set():
            return 0.05
        if self._backlog:  # more events wait: come back when the rate limit has a token again
            return max(0.005, min(1.0, (1.0 - self._tokens) / self.m.backlog_rate))
        now, timeout = time.monotonic(), min(IDLE_LOOP_S, self.m.keepalive_s / 2)
        if self._status_due:
            timeout = min(timeout, self._last_status + self.m.status_min_interval_s - now)
        if self._animal_off_at is not None:
            timeout = min(timeout, self._animal_off_at - now)
        return max(0.005, timeout)

    def _drained(self, ledger: Ledger) -> bool:
        """Nothing in flight or waiting, and the status due at connect sent (`run --once` with nothing
        new would otherwise say online and offline, and never how the trap is)."""
        return not self._in_flight and self._status_sent and ledger.outbox_state()[0] == 0

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
        # what it is now: a retained ON left by a trap that lost power must not stay on for ever
        client.publish(self.topics.animal, "OFF" if self._animal_off_at is None else "ON", qos=1, retain=True)
        if self.hooks.set_cutoff is not None:
            client.subscribe(self.topics.set_cutoff, qos=1)
            client.subscribe(self.topics.set_cutoff + "/#", qos=1)  # per camera
            self._echo_config(client, "start")
        if self.m.ha_discovery:
            client.subscribe(f"{self.m.ha_prefix}/status", qos=1)
        self._discovery(client)  # with discovery off: empties the configs, so HA removes the device
        self._next_status, self._status_sent = 0.0, False  # a fresh status right away

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
        sent, thumbnail, fresh = [], None, False
        for event in pending:
            if event.kind == "audit":  # an audited burst: to be reviewed, no picture or animal state
                info = client.publish(self.topics.audit, event.payload, qos=1, retain=False)
                fields: dict[str, Any] = {"late": True}
            else:
                payload, fields = as_published(event.payload, event.created_at, time.time(), self.m.late_after_s)
                info = client.publish(self.topics.event, payload, qos=1, retain=False)
            if info.rc != 0:  # not connected any more: the rest waits
                break
            self._in_flight[info.mid] = event.id
            self._tokens -= 1
            sent.append(event.id)
            thumbnail = thumbnail_jpeg(fields) or thumbnail  # oldest first: the last one is the latest burst
            fresh = fresh or not fields.get("late", False)
        if sent:
            ledger.events_sent(sent)
        if thumbnail is not None:  # one per batch: a backlog's older pictures would be replaced at once
            client.publish(self.topics.thumbnail, thumbnail, qos=1, retain=True)
        if fresh:  # a late event (a backlog) says an animal came by, not that one is there now
            self._animal_on(client)

    def _animal_on(self, client: Any) -> None:
        if self._animal_off_at is None:
            client.publish(self.topics.animal, "ON", qos=1, retain=True)
        self._animal_off_at = time.monotonic() + self.m.animal_off_delay_s

    def _animal_off(self, client: Any) -> None:
        if self._animal_off_at is not None and time.monotonic() >= self._animal_off_at:
            client.publish(self.topics.animal, "OFF", qos=1, retain=True)
            self._animal_off_at = None

    def _refill(self) -> float:
        """A token bucket: a backlog drains at mqtt.backlog_rate events/s at most."""
        now = time.monotonic()
        self._tokens = min(float(WINDOW), self._tokens + (now - self._tokens_at) * self.m.backlog_rate)
        self._tokens_at = now
        return self._tokens

    # -- status, config, remote cutoff ------------------------------------------------------
    def status(self, ledger: Ledger, fresh: bool = False) -> dict[str, Any]:
        """`fresh`: the per-camera burst counts recounted now (the last status of a run), not up to a minute old."""
        now = time.time()
        started = datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds")
        today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00+00:00")
        return build_status(
            self.config.trap.id, self.started_at, now, ledger.counts_since(started), ledger.counts_since(today),
            ledger.outbox_state(), health(self.config.store.root), self.hooks.model, self.hooks.cutoff(),
            ledger.last_event_at(), self._references(now), self._health(), self._bursts(ledger, fresh),
        )  # fmt: skip

    def _bursts(self, ledger: Ledger, fresh: bool) -> dict[str, dict[str, int]]:
        """Ledger.bursts_by_camera, kept a minute: a season's ledger takes a second or more on a Pi to
        count, and a status may go out every mqtt.status_min_interval_s."""
        now = time.monotonic()
        if fresh or self._burst_counts is None or now - self._burst_counts[0] >= BURSTS_RECOUNT_S:
            self._burst_counts = (now, ledger.bursts_by_camera())
        return self._burst_counts[1]

    def _health(self) -> dict[str, Any] | None:
        """The status's `publisher` field: only once something went wrong since the start."""
        if not (self.restarts or self.dropped_messages):
            return None
        return {"restarts": self.restarts, "dropped_messages": self.dropped_messages,
                "last_problem": self.problem, "last_problem_at": self.problem_at}  # fmt: skip

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
        """The status every mqtt.status_interval_s, and after decided bursts (not more often than
        mqtt.status_min_interval_s), so that it is never a run behind what the trap did."""
        now = time.monotonic()
        after_bursts = self._status_due and now >= self._last_status + self.m.status_min_interval_s
        if now < self._next_status and not after_bursts:
            return
        self._next_status = now + self.m.status_interval_s
        self._status_due = False
        client.publish(self.topics.status, dumps(self.status(ledger)), qos=1, retain=True)
        self._last_status, self._status_sent = now, True
        self._fails_in_row = 0  # a session that gets its status out works: later failures start a new count
        try:  # delivered events are history: the card keeps a month of them
            ledger.prune_delivered(DELIVERED_KEEP_DAYS)
        except LedgerUnavailable as exc:
            log.debug("outbox pruning skipped: %s", exc)

    def _echo_config(self, client: Any, source: str) -> None:
        payload = {"cutoff": round(self.hooks.cutoff(), 6), "source": source, "at": datetime.now(UTC).isoformat(),
                   "remote_cutoff": True, "camera_cutoffs": self.hooks.camera_cutoffs()}  # fmt: skip
        client.publish(self.topics.config, json.dumps(payload), qos=1, retain=True)

    def _on_message(self, client: Any, msg: Any, ledger: Ledger) -> None:
        """Contained: whatever a message does to its handler, it is dropped and delivery goes on (paho
        would otherwise raise it out of the network loop and end the session)."""
        try:
            self._handle_message(client, msg, ledger)
        except Exception as exc:  # one message must never stop event delivery
            self.dropped_messages += 1
            self._note_problem(exc)
            key = f"{msg.topic}|{self.problem}"
            if key not in self._handler_problems:  # once per new problem: a flood must not fill the card
                if len(self._handler_problems) >= 100:  # distinct ones without end: forget, stay small
                    self._handler_problems.clear()
                self._handler_problems.add(key)
                log.error("MQTT: a message on %s was dropped: its handler failed (%s)", msg.topic, self.problem,
                          exc_info=True)  # fmt: skip
            else:
                log.debug("MQTT: a message on %s was dropped (%s, again)", msg.topic, self.problem)

    def _handle_message(self, client: Any, msg: Any, ledger: Ledger) -> None:
        if msg.topic == f"{self.m.ha_prefix}/status":
            if msg.payload == b"online":  # Home Assistant restarted: it forgot the devices
                self._discovery(client)
            return
        camera_head = self.topics.set_cutoff + "/"
        if msg.topic.startswith(camera_head) and self.hooks.set_camera_cutoff is not None:
            self._camera_cutoff(client, msg, msg.topic[len(camera_head) :], ledger)
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
        log.warning("MQTT: cutoff set remotely to %.4g (persisted; mqtt.remote_cutoff = true)", value)
        self._echo_config(client, "remote")
        self._next_status = 0.0

    def _camera_cutoff(self, client: Any, msg: Any, camera: str, ledger: Ledger) -> None:
        """`<base>/set/cutoff/<camera>`: that camera's own cutoff, checked as the global one, persisted
        (ledger meta, all cameras' in one JSON) and echoed in `<base>/config` as camera_cutoffs."""
        if msg.retain:
            log.info("MQTT: a retained message on %s is ignored: send the cutoff without retain", msg.topic)
            return
        value, why = parse_cutoff(msg.payload)
        if not camera or len(camera) > 200 or not camera.isprintable():
            value, why = None, f"not a camera name: {_preview(camera.encode())}"
        elif camera not in self.hooks.camera_cutoffs() and len(self.hooks.camera_cutoffs()) >= MAX_CAMERA_CUTOFFS:
            value, why = None, f"{MAX_CAMERA_CUTOFFS} cameras have their own cutoff already"
        if value is None or self.hooks.set_camera_cutoff is None:
            log.warning("MQTT: camera cutoff ignored: %s (on %s)", why, msg.topic)
            return
        self.hooks.set_camera_cutoff(camera, value)
        ledger.set_meta(CAMERA_CUTOFFS_KEY, json.dumps(self.hooks.camera_cutoffs(), sort_keys=True))
        log.warning("MQTT: cutoff of camera %r set remotely to %.4g (persisted; mqtt.remote_cutoff = true)",
                    camera, value)  # fmt: skip
        self._echo_config(client, "remote")
        self._next_status = 0.0

    def _discovery(self, client: Any) -> None:
        discovery.publish(client, self.m.ha_prefix, self.topics, self.config.trap.id, self.hooks.model,
                          enabled=self.m.ha_discovery, remote_cutoff=self.hooks.set_cutoff is not None)  # fmt: skip

    def _goodbye(self, client: Any, clean: bool) -> None:
        """Clean (a stop): a last status, `animal` OFF, then `stopped`. After a failed session: `offline`,
        as the will would say (a clean disconnect suppresses the will)."""
        if not self.connected:
            return
        infos = []
        if clean:
            status = self._last_status_payload()
            if status is not None:
                infos.append(client.publish(self.topics.status, status, qos=1, retain=True))
            infos.append(client.publish(self.topics.animal, "OFF", qos=1, retain=True))
            self._animal_off_at = None
        infos.append(client.publish(self.topics.availability, "stopped" if clean else "offline", qos=1, retain=True))
        deadline = time.monotonic() + 3.0
        while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        client.disconnect()
        self.connected = False

    def _last_status_payload(self) -> str | None:
        """The status at a clean stop: it counts everything the run decided. None if it cannot be built
        (logged): the stop still says `stopped`, and the retained status stays the previous one."""
        try:
            assert self._ledger is not None
            return dumps(self.status(self._ledger, fresh=True))
        except Exception as exc:  # the stop must go on
            self._note_problem(exc)
            log.error("MQTT: no last status at the stop (%s)", self.problem)
            return None
