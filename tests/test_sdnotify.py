"""systemd's notify protocol: READY once started, the watchdog fed by the main loop (also while it
idles), STOPPING on SIGTERM. A real datagram socket stands in for systemd's."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli_env

from firmware_app.sdnotify import Notifier


def test_notifier_does_nothing_outside_systemd() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_s is None
    n.ready()
    n.ping()  # no socket, no error


def test_watchdog_for_another_pid_is_not_ours() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000"}).watchdog_s == 2.0


def test_daemon_reports_ready_feeds_the_watchdog_while_idle_and_says_stopping(
    tmp_path: Path, store_args: object
) -> None:
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(0.2)
    (tmp_path / "inbox").mkdir()
    env = cli_env() | {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}  # 2 s: ping every ~0.5 s
    args = store_args()  # type: ignore[operator]
    proc = subprocess.Popen([sys.executable, "-m", "firmware_app", "run", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    messages: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(m.startswith("READY=1") for _, m in messages):
            with contextlib.suppress(TimeoutError):
                messages.append((time.monotonic(), server.recv(4096).decode()))
        assert any(m.startswith("READY=1") for _, m in messages), "no READY=1 within 30 s"
        ready_at = time.monotonic()
        while time.monotonic() - ready_at < 4.0:  # idle: an empty inbox, nothing to do
            with contextlib.suppress(TimeoutError):
                messages.append((time.monotonic(), server.recv(4096).decode()))
        pings = [t for t, m in messages if m == "WATCHDOG=1" and t >= ready_at]
        assert len(pings) >= 4, f"the idle loop fed the watchdog {len(pings)} times in 4 s"
        assert max(b - a for a, b in zip([ready_at, *pings], [*pings, time.monotonic()], strict=False)) < 2.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for _ in range(20):
            try:
                messages.append((time.monotonic(), server.recv(4096).decode()))
            except TimeoutError:
                break
        assert any(m == "STOPPING=1" for _, m in messages)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
