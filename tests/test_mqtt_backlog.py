"""A backlog drains whole and at the configured rate: bench/mqtt_drain.py's machinery, smaller; and
events sent long after their decision say they are late.

The real Publisher (in its own process) against a real mosquitto, on an outbox filled with events
built as the pipeline builds them. Speed is measured by the benchmark, not asserted here; only the
rate limit's lower bound is (a floor the token bucket guarantees on any machine).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from mqtt_broker import Broker, Subscriber, free_port, mosquitto_binary, wait_until
from test_mqtt import EVENT_SCHEMA, TOPIC, kept_bursts, mqtt_args, received_bursts, undelivered


def load_bench() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "mqtt_drain.py"
    spec = importlib.util.spec_from_file_location("mqtt_drain", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """The bench's mosquitto on a free port, stopped when the test ends (passed or not)."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto; CI installs it)")
    with bench.Mosquitto(tmp_path / "broker") as broker:
        yield broker.port


def test_backlog_of_2000_arrives_whole_and_empties_the_outbox(tmp_path: Path, port: int) -> None:
    store = tmp_path / "store"
    bench.fill_outbox(store / "ledger.db", 2000)
    assert bench.undelivered(store / "ledger.db") == 2000
    run = bench.drain(store, port, events=2000, rate=bench.RAW_RATE, timeout=300)
    assert run.delivered == 2000, "every event PUBACKed"
    assert run.distinct == 2000, "every event_id reached the subscriber"
    assert run.undelivered == 0, "the outbox ends empty"
    assert run.rss_after_mb >= run.rss_before_mb > 0


def test_backlog_rate_is_honoured(tmp_path: Path, port: int) -> None:
    store = tmp_path / "store"
    bench.fill_outbox(store / "ledger.db", 300)
    run = bench.drain(store, port, events=300, rate=100.0, timeout=300)
    assert run.distinct == 300 and run.undelivered == 0
    # 20 events at once (the window), then at most 100 a second: 2.8 s at the very least.
    assert bench.floor_s(300, 100.0) == pytest.approx(2.8)
    assert run.seconds >= 1.5, f"300 events in {run.seconds:.2f} s: faster than mqtt.backlog_rate = 100 allows"


def test_backlog_drains_near_the_configured_rate(tmp_path: Path, port: int) -> None:
    store = tmp_path / "store"
    bench.fill_outbox(store / "ledger.db", 60)
    run = bench.drain(store, port, events=60, rate=bench.DEFAULT_RATE, timeout=300)
    assert run.distinct == 60 and run.undelivered == 0
    # The rate limit alone: 0.8 s. Ten times that is a generous bound for any machine; before the fix
    # (a 5 s idle wait between batches) it took about 10 s.
    floor = bench.floor_s(60, bench.DEFAULT_RATE)
    assert run.seconds < 10 * floor, f"60 events at backlog_rate 50 took {run.seconds:.1f} s (the limit: {floor} s)"


def test_events_sent_from_a_backlog_after_the_broker_comes_up_say_late(
    tmp_path: Path, make_inbox: Callable[..., Path], run_cli: Any, store_args: Callable[..., list[str]]
) -> None:
    """Decided while no broker listens, sent by a later run once it does, more than mqtt.late_after_s
    after their decision: each says `"late": true` (and animal stays OFF: nothing is there now)."""
    make_inbox()
    port = free_port()  # nothing listens there yet
    run_cli("run", "--once", *mqtt_args(store_args, port, mqtt__drain_s=0), check_rc=0)
    store = tmp_path / "store"
    waiting = undelivered(store)
    assert waiting == len(kept_bursts(store)) > 0
    time.sleep(1.2)  # older than mqtt.late_after_s = 1
    broker = Broker(tmp_path / "broker", port=port).start()
    try:
        sub = Subscriber(port).ready()
        run_cli("run", "--once", *mqtt_args(store_args, port, mqtt__late_after_s=1), check_rc=0)
        wait_until(lambda: len(received_bursts(sub)) >= waiting, 10, "the backlog")
        events = received_bursts(sub)
        for event in events.values():
            jsonschema.validate(event, EVENT_SCHEMA)
            assert event["late"] is True
        assert {e["burst"] for e in events.values()} == kept_bursts(store)
        assert undelivered(store) == 0
        assert b"ON" not in sub.on(f"{TOPIC}/animal")
        assert sub.on(f"{TOPIC}/thumbnail"), "the latest kept burst's picture, late or not"
        sub.close()
    finally:
        broker.stop()
