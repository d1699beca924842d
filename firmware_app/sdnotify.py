"""systemd's notify protocol, for `Type=notify` and `WatchdogSec=` (no dependency: one datagram).

READY=1 once the model is loaded and the inbox watched, WATCHDOG=1 from the main loop (so a hung
loop, not just a dead process, gets restarted), STOPPING=1 on SIGTERM. Outside systemd (no
$NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at twice the rate systemd asks for, as sd_watchdog_enabled(3) advises.
        self.watchdog_s: float | None = int(usec) / 2e6 if watched else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, state: str) -> None:
        if not self.address:
            return
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address  # abstract socket
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(state.encode())
        except OSError as exc:  # systemd gone or the socket unreadable: never fatal for the trap
            log.debug("sd_notify %s failed: %s", state, exc)

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def ping(self) -> None:
        """WATCHDOG=1, at most once per half watchdog period (the main loop may call it often)."""
        if self.watchdog_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_s / 2:
            self.send("WATCHDOG=1")
            self._last_ping = now
