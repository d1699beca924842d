"""Measured field recall end to end: a real mosquitto, the real trap (`blankfilter run --once` with
every blank burst audited), `blankfilter monitor` and headless Chromium. The audited bursts arrive,
a reviewer marks one "missed animal" (keys, with a hostile note), the estimate and its bound are
the exactly computed ones, the proposed lower cutoff is published only once the operator confirms,
and the trap (remote_cutoff on) takes the camera's cutoff, echoes it, keeps it, and a later
`run --once` judges that camera's bursts with it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FRAMES, TINY_U8, cli_env
from mqtt_broker import Broker, Subscriber, wait_until
from test_monitor_e2e import Monitor, browser, css, until  # noqa: F401  (browser: a fixture)

from dashboard import recall

REPO = Path(__file__).resolve().parent.parent
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
BURSTS = [("speciesnet", ["blank.jpg"]), ("speciesnet", ["ocelot.jpg"]), ("peru", ["cam1_EK000001.JPG"]),
          ("peru", ["cam1_EK000004.JPG"])]  # fmt: skip


def trap_args(store_args: Callable[..., list[str]], port: int, **sets: object) -> list[str]:
    base: dict[str, object] = {"mqtt__host": "127.0.0.1", "mqtt__port": port, "mqtt__drain_s": 10,
                               "mqtt__remote_cutoff": "true",
                               "decision__burst_gap_s": 5, "context__enabled": "false", "store__audit_rate": 1.0,
                               "model__cutoff": 0.99, "trap__id": "trap-01"}  # fmt: skip
    return store_args(**(base | sets))


def test_audits_reviews_bound_proposal_and_the_cameras_cutoff_close_the_loop(
    tmp_path: Path, browser: Any, make_inbox: Callable[..., Path], store_args: Callable[..., list[str]],  # noqa: F811
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By

    broker = Broker(tmp_path / "broker").start()
    to_trap = Subscriber(broker.port, "blankfilter/+/set/#").ready()
    monitor = Monitor(tmp_path / "monitor", broker.port, ("dashboard",))
    try:
        make_inbox(bursts=BURSTS)
        run_cli("run", "--once", *trap_args(store_args, broker.port), check_rc=0)
        recall_now = lambda: monitor.api("api/recall")["cameras"]  # noqa: E731
        wait_until(lambda: sum(c["received"] for c in recall_now()) >= 1
                   and all(c["received"] == c["audited"] for c in recall_now()), 30, "the audits")  # fmt: skip
        cameras = {c["camera"]: c for c in recall_now()}
        assert set(cameras) <= {"speciesnet", "peru"} and sum(c["received"] for c in cameras.values()) >= 2

        # -- the reviewer: the first burst is a missed animal (with a hostile note), the rest blank
        browser.get(monitor.url + "review")
        until(browser, lambda d: not d.find_element(By.ID, "r-audit").get_attribute("hidden"), "the first audit")
        first = browser.find_element(By.ID, "r-audit")
        missed_id, camera = first.get_attribute("data-audit-id"), first.get_attribute("data-camera")
        image = browser.find_element(By.ID, "r-image")
        assert int(image.get_attribute("naturalWidth")) >= 320  # big enough to look for a small animal
        browser.save_screenshot(str(tmp_path / "review-audit.png"))
        note = browser.find_element(By.ID, "r-note")
        note.send_keys(HOSTILE)
        note.send_keys("\ue00c")  # Escape: out of the note, so the keys review
        browser.find_element(By.TAG_NAME, "body").send_keys("m")
        until(browser, lambda d: d.find_element(By.ID, "r-audit").get_attribute("data-audit-id") != missed_id
              or d.find_element(By.ID, "r-audit").get_attribute("hidden"), "the next audit")  # fmt: skip
        for _ in range(cameras[camera]["received"] - 1 + sum(c["received"] for k, c in cameras.items() if k != camera)):
            current = browser.find_element(By.ID, "r-audit").get_attribute("data-audit-id")
            browser.find_element(By.TAG_NAME, "body").send_keys("b")
            until(browser, lambda d, c=current: d.find_element(By.ID, "r-audit").get_attribute("data-audit-id") != c
                  or d.find_element(By.ID, "r-audit").get_attribute("hidden"), "the next audit")  # fmt: skip
        until(browser, lambda d: d.find_element(By.ID, "r-empty").is_displayed(), "an empty queue")

        # -- the figure: exactly the computed bound
        entry = next(c for c in recall_now() if c["camera"] == camera)
        n = entry["reviewed"]
        upper = recall.upper_bound(1, n)
        assert upper is not None and entry["misses"] == 1 and n == entry["received"]
        assert entry["share"] == 1 / n and entry["share_upper"] == upper
        assert entry["recall_lower"] == pytest.approx(entry["kept"] / (entry["kept"] + upper * entry["discarded"]))
        assert entry["over_limit"] and entry["proposal"]["cutoff"] is not None
        proposed = entry["proposal"]["cutoff"]
        row = f'tr[data-camera="{camera}"] td[data-field="share_upper"]'
        until(browser, lambda d: css(d, row) and css(d, row)[0].text == f"{upper * 100:.2f} %", "the bound on the page")
        notes = css(browser, ".review-note")
        assert notes and notes[0].text == HOSTILE and not css(browser, ".review-note img, .review-note b")
        assert browser.title != "pwned"
        browser.save_screenshot(str(tmp_path / "review.png"))

        # -- the trap's card says it too; the reviews are a Labels CSV that `blankfilter eval` reads
        browser.get(monitor.url)
        line = f'article[data-trap="trap-01"] [data-field="recall"] li[data-camera="{camera}"]'
        said = f"{camera}: 1 missed of {n} reviewed"
        until(browser, lambda d: css(d, line) and css(d, line)[0].text.startswith(said), "the trap card's recall line")
        with urllib.request.urlopen(monitor.url + "api/labels.csv", timeout=10) as response:
            (tmp_path / "store" / "audit-labels.csv").write_bytes(response.read())
        report = tmp_path / "eval.json"
        run_cli("eval", "--model", TINY_U8, "--labels", tmp_path / "store" / "audit-labels.csv", "--json", report,
                "--quiet", check_rc=0)  # fmt: skip
        assert json.loads(report.read_text())

        # -- closing the loop: nothing is sent until the operator confirms; the trap takes it
        daemon = subprocess.Popen([sys.executable, "-m", "firmware_app", "run", *trap_args(store_args, broker.port)],
                                  env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            wait_until(lambda: any(b"set/cutoff/#" in line for line in broker.log.read_bytes().splitlines()), 30,
                       "the trap subscribed")  # fmt: skip
            time.sleep(1.0)
            assert to_trap.messages == []
            browser.get(monitor.url + "review")
            button = until(browser, lambda d: (css(d, f'button.confirm[data-camera="{camera}"]') or [None])[0],
                           "the proposal's button")  # fmt: skip
            assert to_trap.messages == []
            button.click()
            browser.switch_to.alert.accept()
            until(browser, lambda d: css(d, f'[data-published="blankfilter/trap-01/set/cutoff/{camera}"]'),
                  f"sent ({[e.text for e in css(browser, 'td .alarm')]})")  # fmt: skip
            wait_until(lambda: bool(to_trap.messages), 10, "the cutoff on the broker")
            assert [(t, p) for t, p, _ in to_trap.messages] == [
                (f"blankfilter/trap-01/set/cutoff/{camera}", f"{proposed:.6g}".encode())]  # fmt: skip
            wait_until(lambda: _camera_cutoffs(monitor).get(camera) == proposed, 30,
                       "the trap's echo of the camera's cutoff")  # fmt: skip
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)

        # -- a later run --once judges that camera with its own cutoff: the missed burst is kept now
        missed = monitor.api(f"api/audits/{missed_id}")["audit"]
        name = Path(missed["frames"][0]["file"]).name
        again = tmp_path / "inbox" / camera / f"again-{name}"
        again.write_bytes((FRAMES / camera / name).read_bytes())
        os.utime(again, (1_700_000_000, 1_700_000_000))
        run_cli("run", "--once", *trap_args(store_args, broker.port), check_rc=0)

        def kept_again() -> list[dict[str, Any]]:
            return [e for e in monitor.api("api/events")["events"] if f"again-{name}" in " ".join(e["files"])]

        wait_until(lambda: bool(kept_again()), 30, "the missed burst, kept as an event")
        assert kept_again()[0]["cutoff"] == proposed  # the event names the camera's own cutoff
    finally:
        monitor.stop()
        to_trap.close()
        broker.stop()


def _camera_cutoffs(monitor: Monitor) -> dict[str, Any]:
    """The trap's latest config echo as the monitor stored it (the page shows only the global cutoff)."""
    con = sqlite3.connect(monitor.log.parent / "monitor.db")
    try:
        row = con.execute("SELECT config FROM traps WHERE trap = 'trap-01'").fetchone()
    finally:
        con.close()
    return dict(json.loads(row[0]).get("camera_cutoffs", {})) if row and row[0] else {}


# -- the trap's side, piece by piece ---------------------------------------------------------------
def test_an_audit_payload_is_schema_valid_with_a_640_px_thumbnail_and_its_own_id() -> None:
    import jsonschema

    from firmware_app.events.payloads import AuditFrame, audit_id, build_audit, event_id
    from firmware_app.events.thumbnail import make_thumbnail

    schema = json.loads((REPO / "firmware_app" / "schemas" / "audit-1.schema.json").read_text())
    thumb = make_thumbnail(FRAMES / "speciesnet" / "ocelot.jpg", 640, 192 * 1024)
    assert thumb is not None and max(thumb[1:]) == 640
    frames = [AuditFrame("audit/cam1/a.jpg", 0.04, None, None, "audit", 1_700_000_000.0),
              AuditFrame("audit/cam1/b.jpg", 0.01, 0.2, "matched", "audit", 1_700_000_001.0)]  # fmt: skip
    audit = build_audit("trap-01", "cam1", "burst-7", frames, (0.08, 0.5), thumb)
    jsonschema.validate(audit, schema)
    assert audit["id"] == audit_id("trap-01", "burst-7") != event_id("trap-01", "burst-7")
    assert audit["context_state"] == "mixed" and audit["cutoffs"] == {"cutoff": 0.08, "context_cutoff": 0.5}
    assert audit["first_capture"] == "2023-11-14T22:13:20.000Z"


def test_a_version_2_ledger_gains_the_outbox_kind_and_its_rows_stay_events(tmp_path: Path) -> None:
    from firmware_app.ledger import Ledger, OutboxEvent

    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL,"
        " created_at TEXT NOT NULL, delivered_at TEXT, attempts INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO outbox (event_id, payload, created_at) VALUES ('e1', '{}', '2026-01-01T00:00:00+00:00');"
    )
    old.close()
    ledger = Ledger(path)
    ledger.decide([], [OutboxEvent("a1", "{}", kind="audit")])
    assert [(e.event_id, e.kind) for e in ledger.pending_events(10)] == [("e1", "event"), ("a1", "audit")]
    assert ledger.get_meta("schema_version") == "3"
    assert ledger.last_event_at() == "2026-01-01T00:00:00+00:00"  # an audit is not an animal event
    ledger.close()


def test_run_once_sends_an_audit_per_audited_burst_and_counts_per_camera_in_its_status(
    tmp_path: Path, make_inbox: Callable[..., Path], store_args: Callable[..., list[str]],
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:  # fmt: skip
    import jsonschema

    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "blankfilter/#").ready()
    try:
        make_inbox(bursts=BURSTS)
        run_cli("run", "--once", *trap_args(store_args, broker.port), check_rc=0)
        wait_until(lambda: bool(sub.on("blankfilter/trap-01/status")), 10, "a status")
        schemas = REPO / "firmware_app" / "schemas"
        audits = sub.json_on("blankfilter/trap-01/audit")
        for audit in audits:
            jsonschema.validate(audit, json.loads((schemas / "audit-1.schema.json").read_text()))
            assert audit["cutoffs"]["cutoff"] == 0.99 and audit["thumbnail"]["width"] <= 640
        status = sub.json_on("blankfilter/trap-01/status")[-1]
        jsonschema.validate(status, json.loads((schemas / "status-1.schema.json").read_text()))
        events = sub.json_on("blankfilter/trap-01/event")
        assert sum(status["audited_bursts"].values()) == len(audits) == len({a["id"] for a in audits}) >= 1
        assert status["discarded_bursts"] == status["audited_bursts"]  # audit_rate 1.0: every discarded one
        assert sum(status["kept_bursts"].values()) == len(events)
        assert sum(status["kept_bursts"].values()) + len(audits) == len(BURSTS)
        assert {a["camera"] for a in audits} <= {"speciesnet", "peru"}
    finally:
        sub.close()
        broker.stop()


def test_a_cameras_cutoff_is_checked_persisted_and_echoed(tmp_path: Path, store_args: Callable[..., list[str]]) -> None:
    import paho.mqtt.client as mqtt

    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "blankfilter/trap-01/config").ready()
    (tmp_path / "inbox").mkdir()
    cmd = [sys.executable, "-m", "firmware_app", "run", *trap_args(store_args, broker.port)]

    def echoed() -> dict[str, Any]:
        configs = sub.json_on("blankfilter/trap-01/config")
        return dict(configs[-1].get("camera_cutoffs", {})) if configs else {"none": True}

    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    # a retained cutoff (someone's mistake) reaches the trap at each start flagged retained: ignored
    sender.publish("blankfilter/trap-01/set/cutoff/cam2", "0.2", qos=1, retain=True).wait_for_publish(5)
    try:
        for attempt in range(2):  # the second start: the cutoffs come back from the ledger
            trap = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                wait_until(lambda: echoed() != {"none": True}, 30, "the trap's config at start")
                if attempt == 1:
                    assert echoed() == {"cam1": 0.3}
                    break
                base = "blankfilter/trap-01/set/cutoff"
                for payload in ("abc", "1.5", "0.3"):  # not a number, out of range, then a good one
                    sender.publish(f"{base}/cam1", payload, qos=1).wait_for_publish(5)
                wait_until(lambda: echoed() == {"cam1": 0.3}, 15, "the echo of cam1's cutoff")
                assert sub.json_on("blankfilter/trap-01/config")[-1]["cutoff"] == 0.99  # the trap's own stays
            finally:
                sub.messages.clear()
                trap.send_signal(signal.SIGTERM)
                assert trap.wait(timeout=30) == 0
    finally:
        sender.loop_stop()
        sender.disconnect()
        sub.close()
        broker.stop()


def test_bursts_are_counted_per_camera_folder_the_inbox_itself_being_dot(tmp_path: Path) -> None:
    from firmware_app.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.db")
    rows = [("f1.jpg", "b1", "deleted"), ("f2.jpg", "b1", "deleted"), ("site/cam/a.jpg", "b2", "audit"),
            ("site/cam/b.jpg", "b2", "audit"), ("site/cam/c.jpg", "b3", "kept"), ("site/cam/d.jpg", "b3", "audit"),
            ("site/cam/e.jpg", "b4", "superseded"), ("cam2/x.jpg", "b5", "failed_kept")]  # fmt: skip
    with ledger.transaction() as db:
        db.executemany(
            "INSERT INTO frames (path, sha256, size, captured_ts, time_source, burst, action, state, seen_at)"
            " VALUES (?, ?, 1, 1.0, 'mtime', ?, ?, 'done', '2026-01-01')",
            [(path, f"{i:064x}", burst, action) for i, (path, burst, action) in enumerate(rows)],
        )
    assert ledger.bursts_by_camera() == {
        "discarded": {".": 1, "site/cam": 1, "cam2": 0},  # b3 is kept whole: one kept frame keeps the burst
        "audited": {".": 0, "site/cam": 1, "cam2": 0},
        "kept": {".": 0, "site/cam": 1, "cam2": 1},
    }
    ledger.close()


def test_a_camera_sources_audited_burst_is_written_to_audit_and_queued_as_an_audit(tmp_path: Path) -> None:
    import jsonschema
    from test_camera import BLANK, camera_args, camera_env

    env = camera_env(tmp_path, [BLANK] * 3, "0.5")
    args = camera_args(tmp_path, "--set", "model.cutoff=0.1", "--set", "store.audit_rate=1.0")
    done = subprocess.run([sys.executable, "-m", "firmware_app", "run", "--bursts", "1", *args],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = tmp_path / "store"
    db = sqlite3.connect(store / "ledger.db")
    dests = [d for (d,) in db.execute("SELECT dest FROM frames WHERE action = 'audit' ORDER BY id")]
    outbox = db.execute("SELECT kind, payload FROM outbox").fetchall()
    db.close()
    assert len(dests) == 3 and all((store / d).is_file() and d.startswith("audit/cam0/") for d in dests)
    assert [kind for kind, _ in outbox] == ["audit"]
    audit = json.loads(outbox[0][1])
    jsonschema.validate(audit, json.loads((REPO / "firmware_app" / "schemas" / "audit-1.schema.json").read_text()))
    assert audit["camera"] == "cam0" and [f["file"] for f in audit["frames"]] == dests
    assert audit["cutoffs"]["cutoff"] == 0.1 and max(audit["thumbnail"]["width"], audit["thumbnail"]["height"]) == 640
