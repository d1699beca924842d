"""The MQTT side: a paho-mqtt 2.x client that subscribes to `<prefix>/+/#` and hands every message to
the ingestor. It reconnects by itself (1 s, backing off to 30 s) and subscribes again at each
connect, so after a broker restart the retained status and availability of every trap come back.

With a fixed `client_id` the session is persistent: the broker keeps QoS 1 events for the monitor
while it is away (as long as the broker itself keeps running or persists sessions).
"""

from __future__ import annotations

import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dashboard import contracts

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes, bool], Any]
OnState = Callable[[bool, str], None]  # (connected, why)


class BrokerURLError(ValueError):
    pass


@dataclass(frozen=True)
class BrokerURL:
    scheme: str  # mqtt | mqtts
    host: str
    port: int
    username: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:  # what the log and the page show: never a password
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_broker_url(text: str) -> BrokerURL:
    """mqtt://host[:1883] or mqtts://host[:8883], optionally with user@ (the password goes in a file)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BrokerURLError(f"--broker {text!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise BrokerURLError(f"--broker {text!r}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)")
    if parts.password is not None:
        raise BrokerURLError("--broker: no password in the URL (it would show in `ps`): use --password-file")
    if not parts.hostname:
        raise BrokerURLError(f"--broker {text!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerURLError(f"--broker {text!r}: nothing may follow HOST[:PORT]")
    default = 8883 if parts.scheme == "mqtts" else 1883
    return BrokerURL(parts.scheme, parts.hostname, port or default, parts.username or None)


class Subscriber:
    def __init__(
        self,
        url: BrokerURL,
        on_message: OnMessage,
        prefix: str = contracts.DEFAULT_PREFIX,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        client_id: str | None = None,
        on_state: OnState | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.url, self.topic = url, contracts.subscription(prefix)
        self._on_message_cb, self._on_state = on_message, on_state or (lambda _c, _w: None)
        self.connected = False
        self._last_problem = ""
        persistent = bool(client_id)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"blankfilter-monitor-{secrets.token_hex(4)}",
            clean_session=not persistent,
        )
        user = username or url.username
        if user:
            self.client.username_pw_set(user, password)
        if url.tls:
            self.client.tls_set(ca_certs=ca_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background: a broker that is down now is retried, the web page works meanwhile."""
        self.client.connect_async(self.url.host, self.url.port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, timeout_s: float = 5.0) -> bool:
        """QoS 1, not retained: True once the broker acknowledged it (a confirmed cutoff)."""
        if not self.connected:
            return False
        info = self.client.publish(topic, payload, qos=1, retain=False)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):  # not queued (disconnected meanwhile)
            return False
        return bool(info.is_published())

    def send(self, topic: str, payload: bytes) -> None:
        """QoS 1, not retained, without waiting for the broker: for use inside a message callback,
        where waiting would stop the very thread that reads the acknowledgement."""
        if self.connected:
            self.client.publish(topic, payload, qos=1, retain=False)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (its network thread) ------------------------------------------------------
    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            self._problem(f"the broker refused the connection: {reason_code}")
            return
        self.connected, self._last_problem = True, ""
        client.subscribe(self.topic, qos=1)
        log.info("connected to %s, subscribed to %s", self.url, self.topic)
        self._on_state(True, "connected")

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        was = self.connected
        self.connected = False
        if was:
            self._problem(f"lost the broker ({reason_code}); reconnecting")

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        self._problem("cannot reach the broker; retrying")

    def _problem(self, what: str) -> None:
        if what != self._last_problem:  # once per new problem, not once per retry
            log.warning("%s: %s", self.url, what)
            self._last_problem = what
        self._on_state(False, what)

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        try:
            self._on_message_cb(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception:  # one bad message (or a full disk) must not stop the network thread
            log.exception("could not process a message on %.120r", msg.topic)
