"""How fast the trap's MQTT publisher empties a backlog (the ledger's outbox) into a real broker.

    .venv/bin/python bench/mqtt_drain.py [--events 10000] [--slow-events 500] [--repeat 3]

A trap that was offline for weeks comes back with thousands of events waiting. This fills a
ledger's outbox with N realistic events (3 frames and a ~10 KB JPEG thumbnail each, as the pipeline
writes them), starts mosquitto on a free port, and runs the real `Publisher` in its own process
(so its peak RSS is its own) until every event is acknowledged, while a subscriber counts the
distinct event_ids that arrive. Two settings:

- mqtt.backlog_rate = 10000 (the highest the config accepts): the publisher's raw speed, which is
  then bounded by its window of 20 events in flight and the ledger's fsync'd commits;
- mqtt.backlog_rate = 50 (the default): the rate limit a trap drains with, so a backlog does not
  flood the broker or a slow uplink.

Needs mosquitto (apt-get install -y mosquitto). Not a Raspberry Pi figure: run it on the Pi for that.
tests/test_mqtt_backlog.py runs the same functions on smaller backlogs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_app.config import load_config  # noqa: E402
from firmware_app.events.mqtt import WINDOW, Hooks, Publisher  # noqa: E402
from firmware_app.events.payloads import EventFrame, build_event, dumps  # noqa: E402
from firmware_app.events.thumbnail import make_thumbnail  # noqa: E402
from firmware_app.ledger import Ledger, OutboxEvent  # noqa: E402

TRAP_ID = "trap-01"
EVENT_TOPIC = f"blankfilter/{TRAP_ID}/event"
# A real camera-trap frame; 240 px gives a ~10.7 KB thumbnail (the default 160 px gives ~5 KB).
FRAME = ROOT / "tests" / "fixtures" / "frames" / "peru" / "cam1_EK000001.JPG"
THUMBNAIL_PX, THUMBNAIL_MAX_BYTES = 240, 12 * 1024
RAW_RATE = 10000.0  # mqtt.backlog_rate's upper bound in firmware_app/config.py
DEFAULT_RATE = 50.0
BATCH = 500  # events per ledger transaction while filling the outbox


# -- the backlog ----------------------------------------------------------------------------------
def sample_thumbnail() -> tuple[bytes, int, int]:
    thumb = make_thumbnail(FRAME, THUMBNAIL_PX, THUMBNAIL_MAX_BYTES)
    if thumb is None:
        raise RuntimeError(f"{FRAME}: no thumbnail")
    return thumb


def fill_outbox(ledger_path: Path, events: int) -> int:
    """N undelivered events, built exactly as the pipeline builds them; returns the mean payload bytes."""
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    thumb = sample_thumbnail()
    ledger = Ledger(ledger_path)
    total = 0
    try:
        batch: list[OutboxEvent] = []
        for i in range(events):
            t0 = 1_700_000_000.0 + i * 600  # bursts 10 min apart, frames 1 s apart
            frames = [
                EventFrame(f"kept/2023/11/14/cam1/frame{i:06d}_{f}.jpg", f"{i:058d}{f:06d}", t0 + f, 0.9 - f / 10, None)
                for f in range(3)
            ]
            event = build_event(TRAP_ID, f"cam1/{i:06d}", frames, 0.077, ("blankfilter-cellnet", "1.1.0"), thumb)
            payload = dumps(event)
            total += len(payload)
            batch.append(OutboxEvent(event["event_id"], payload))
            if len(batch) == BATCH:
                ledger.decide([], batch)
                batch = []
        if batch:
            ledger.decide([], batch)
    finally:
        ledger.close()  # the last connection: SQLite folds the WAL into ledger.db
    return total // max(events, 1)


def reset_outbox(ledger_path: Path) -> None:
    """The same backlog again for the next run (event_ids unchanged: the subscriber is new each run)."""
    with sqlite3.connect(ledger_path) as db:
        db.execute("UPDATE outbox SET delivered_at = NULL, attempts = 0")


def undelivered(ledger_path: Path) -> int:
    with sqlite3.connect(ledger_path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0])


def db_size_mb(ledger_path: Path) -> float:
    files = [ledger_path, ledger_path.with_name(ledger_path.name + "-wal")]
    return sum(p.stat().st_size for p in files if p.exists()) / 1e6


# -- the broker and the subscriber ----------------------------------------------------------------
def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """mosquitto on a free localhost port for the length of a `with` block (stopped even on errors)."""

    def __init__(self, folder: Path) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.binary, self.port = binary, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            # Started as root, mosquitto would switch to the `mosquitto` user: nothing here needs that.
            ("user root\n" if os.geteuid() == 0 else "")
            + "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            # The default (1000 queued QoS 1 messages per client) would drop events for a subscriber
            # that falls behind; this measures the publisher, not that limit.
            + "max_queued_messages 0\n"
            + f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not self._listening():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start on port {self.port} (exit {self.proc.poll()})")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


class EventCounter:
    """Subscribes to the trap's events and counts distinct event_ids (not the payloads: memory)."""

    def __init__(self, port: int, topic: str = EVENT_TOPIC) -> None:
        import paho.mqtt.client as mqtt

        self.ids: set[str] = set()
        self.messages = 0
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{os.getpid()}-{id(self)}")
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda _c, _u, _mid, _rcs, _p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.subscribed.wait(10):  # events are not retained: subscribe before the publisher starts
            self.close()
            raise RuntimeError(f"no SUBACK for {topic} from the broker on port {port}")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        event_id = json.loads(msg.payload)["event_id"]
        with self.lock:
            self.ids.add(event_id)
            self.messages += 1

    def distinct(self) -> int:
        with self.lock:
            return len(self.ids)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- one drain ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drain:
    events: int
    rate: float
    seconds: float  # publisher start to the last PUBACK
    delivered: int  # events the publisher marked delivered
    distinct: int  # distinct event_ids the subscriber received
    messages: int  # messages it received (more than distinct: a resend after a reconnect)
    undelivered: int  # left in the outbox afterwards
    rss_before_mb: float  # the publisher process's peak RSS before start() ...
    rss_after_mb: float  # ... and after the drain

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def drain(store_root: Path, port: int, events: int, rate: float, timeout: float = 600.0) -> Drain:
    """Run the Publisher (its own process) on the outbox in store_root/ledger.db until it is empty."""
    ledger_path = store_root / "ledger.db"
    counter = EventCounter(port)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--publisher", str(store_root), "--port", str(port),
               "--rate", str(rate), "--expect", str(events), "--timeout", str(timeout)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the publisher process failed (exit {done.returncode}):\n{done.stderr}")
        child = json.loads(done.stdout)
        # A PUBACK means the broker has the event; its copy to the subscriber may still be on the way.
        deadline = time.monotonic() + 30
        while counter.distinct() < events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        counter.close()
    return Drain(events, rate, child["seconds"], child["delivered"], counter.distinct(), counter.messages,
                 undelivered(ledger_path), child["rss_before_mb"], child["rss_after_mb"])  # fmt: skip


def vm_hwm_mb() -> float:
    """This process's peak resident set size (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def publisher_process(store_root: Path, port: int, rate: float, expect: int, timeout: float) -> dict[str, float]:
    """The child: the real Publisher, as `blankfilter run` starts it, until `expect` events are acknowledged."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(None, overrides=[f"store.root={store_root}", f"trap.id={TRAP_ID}", "mqtt.host=127.0.0.1",
                                          f"mqtt.port={port}", f"mqtt.backlog_rate={rate}"])  # fmt: skip
    assert config.ledger_path == store_root / "ledger.db"
    rss_before = vm_hwm_mb()
    publisher = Publisher(config, Hooks(model=("blankfilter-cellnet", "1.1.0"), cutoff=lambda: 0.077))
    start = time.monotonic()
    publisher.start()
    # Polling the publisher's own counter (set on PUBACK) keeps a second ledger reader out of the timing.
    while publisher.delivered < expect and time.monotonic() - start < timeout:
        time.sleep(0.01)
    seconds = time.monotonic() - start
    publisher.stop(drain_s=0)
    return {"seconds": seconds, "delivered": publisher.delivered, "rss_before_mb": rss_before,
            "rss_after_mb": vm_hwm_mb()}  # fmt: skip


# -- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    rate: float
    events: int
    runs: list[Drain]
    payload_bytes: int
    db_mb: float


def measure(folder: Path, port: int, events: int, rate: float, repeat: int) -> Row:
    store = folder / f"store-{events}-{int(rate)}"
    payload = fill_outbox(store / "ledger.db", events)
    size = db_size_mb(store / "ledger.db")
    runs = []
    for i in range(repeat):
        reset_outbox(store / "ledger.db")
        run = drain(store, port, events, rate)
        print(f"  rate {rate:g}, {events} events, run {i + 1}: {run.seconds:.2f} s, {run.distinct} distinct "
              f"received, {run.undelivered} left", file=sys.stderr)  # fmt: skip
        runs.append(run)
    return Row(rate, events, runs, payload, size)


def floor_s(events: int, rate: float) -> float:
    """The fastest drain the token bucket allows: WINDOW events at once, then `rate` a second."""
    return max(0, events - WINDOW) / rate


def table(rows: list[Row]) -> str:
    out = [
        "| mqtt.backlog_rate | events | seconds (median) | events/s | the rate limit alone | distinct received "
        "| left in outbox | publisher peak RSS before → after | outbox DB | mean payload |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        seconds = statistics.median(r.seconds for r in row.runs)
        received = ", ".join(str(r.distinct) for r in row.runs)
        left = max(r.undelivered for r in row.runs)
        before = max(r.rss_before_mb for r in row.runs)
        after = max(r.rss_after_mb for r in row.runs)
        runs = ", ".join(f"{r.seconds:.2f}" for r in row.runs)
        cells = [
            f"{row.rate:g}", str(row.events), f"{seconds:.2f} (runs: {runs})", f"{row.events / seconds:.0f}",
            f"{floor_s(row.events, row.rate):.2f} s", received, str(left), f"{before:.0f} → {after:.0f} MB",
            f"{row.db_mb:.1f} MB", f"{row.payload_bytes / 1024:.1f} KB",
        ]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10000, help="backlog at mqtt.backlog_rate = 10000")
    parser.add_argument("--slow-events", type=int, default=500, help="backlog at the default mqtt.backlog_rate = 50")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--publisher", type=Path, help=argparse.SUPPRESS)  # the child process: store root
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher is not None:
        print(json.dumps(publisher_process(args.publisher, args.port, args.rate, args.expect, args.timeout)))
        return 0
    with tempfile.TemporaryDirectory(prefix="mqtt-drain-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        rows = [
            measure(Path(tmp), broker.port, args.events, RAW_RATE, args.repeat),
            measure(Path(tmp), broker.port, args.slow_events, DEFAULT_RATE, args.repeat),
        ]
    print(table(rows))
    ok = all(r.distinct == row.events and r.undelivered == 0 for row in rows for r in row.runs)
    if not ok:
        print("not every event arrived or left the outbox: see the table", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
