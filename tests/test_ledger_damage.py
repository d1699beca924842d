"""A damaged ledger: one clear message, nothing touched, and a way back (`blankfilter ledger check`,
`blankfilter ledger recover`). Read-only commands open the ledger read-only.

Real SQLite files, damaged for real (a page in the middle overwritten, the 100-byte header
overwritten), the real CLI as a subprocess, real frames from tests/fixtures.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from test_bad_input import (
    BLANK_BURST,
    NONBLANK_BURST,
    MakeInbox,
    RunCli,
    StoreArgs,
    Tmpfs,
    fill,
    ledger_rows,
    make_loop,
    outcome,
    run_once,
    snapshot,
)

from firmware_app.hashing import sha256_file
from firmware_app.loops.base import LoopBase

MORE_BLANKS = ("missouri", [f"SEQ75192_IMG_000{i}.JPG" for i in range(1, 6)])


def page_size(db: Path) -> int:
    size = int.from_bytes(db.read_bytes()[16:18], "big")
    return 65536 if size == 1 else size


def checkpoint(db: Path) -> None:
    """Everything into the main file (the WAL would otherwise hide damage done to it)."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def root_page(db: Path, table: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0])
    finally:
        con.close()


def damage_page(db: Path, page: int) -> None:
    """Overwrite one page (1-based) of the main file with garbage, as a bad SD card sector does."""
    size = page_size(db)
    with db.open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xa5\x5a" * (size // 2))


def damage_header(db: Path) -> None:
    with db.open("r+b") as fh:
        fh.write(b"\x00garbage header!" * 6 + b"\xff" * 4)  # 100 bytes


def integrity(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return "; ".join(str(r[0]) for r in con.execute("PRAGMA integrity_check"))
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        con.close()


def store_files(store: Path) -> dict[str, bytes]:
    """Every file in kept/ and quarantine/ with its bytes, by its path under the store root."""
    return {
        f"{folder}/{rel}": data for folder in ("kept", "quarantine") for rel, data in snapshot(store / folder).items()
    }


def processed_store(tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs) -> Path:
    """A store after a real run: kept/ and quarantine/ hold frames, the ledger knows them."""
    make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    done = run_once(run_cli, store_args, store__discard="quarantine")
    assert done.returncode == 0, outcome(done)
    store = tmp_path / "store"
    checkpoint(store / "ledger.db")
    return store


def damaged(store: Path, where: str) -> Path:
    db = store / "ledger.db"
    if where == "page":
        damage_page(db, root_page(db, "frames"))
    else:
        damage_header(db)
    assert integrity(db) != "ok", "the test did not damage the ledger"
    return db


def assert_damage_message(done_stderr: str, db: Path) -> None:
    assert "Traceback" not in done_stderr, done_stderr
    line = next((ln for ln in done_stderr.splitlines() if str(db) in ln), "")
    assert "damaged" in line, f"the message must say the ledger {db} is damaged:\n{done_stderr}"
    assert "blankfilter ledger recover" in line, f"the message must say what to do:\n{done_stderr}"
    assert "free space" not in line.lower(), f"a damaged ledger is not a full card:\n{done_stderr}"


# -- item 5: run on a damaged ledger -------------------------------------------------------------
@pytest.mark.parametrize("where", ["page", "header"])
def test_run_once_on_a_damaged_ledger_exits_2_saying_where_and_what_to_do_and_touches_nothing(
    where: str, tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = processed_store(tmp_path, make_inbox, run_cli, store_args)
    db = damaged(store, where)
    inbox = make_inbox(bursts=[MORE_BLANKS])
    before, stored = snapshot(inbox), snapshot(store / "kept")

    done = run_once(run_cli, store_args, store__discard="delete")

    assert done.returncode == 2, outcome(done)
    assert_damage_message(done.stderr, db)
    assert snapshot(inbox) == before, "frames were moved or deleted although the ledger is damaged"
    assert snapshot(store / "kept") == stored


def test_daemon_whose_ledger_is_damaged_mid_run_backs_off_and_deletes_nothing(
    tmp_path: Path, make_inbox: MakeInbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger opened fine, then a page of it went bad: the daemon treats it as an unusable
    ledger (logs, waits with backoff), not as a crash; no frame is moved or deleted meanwhile."""
    monkeypatch.setattr(LoopBase, "ledger_retry_min_s", 0.2)
    inbox = make_inbox(bursts=[BLANK_BURST, MORE_BLANKS])
    before = snapshot(inbox)
    made: list[object] = []
    ready, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def daemon() -> None:
        pipeline, ledger = make_loop(tmp_path, once=False)
        made.append(pipeline)
        ready.set()
        go.wait(10)
        try:
            pipeline.run()
        except BaseException as exc:  # a crash is what this test must not see
            errors.append(exc)
        finally:
            ledger.close()

    worker = threading.Thread(target=daemon, daemon=True)
    worker.start()
    assert ready.wait(10)
    db = tmp_path / "store" / "ledger.db"
    checkpoint(db)
    damage_page(db, root_page(db, "frames"))
    poke = sqlite3.connect(db)  # another writer: the daemon's page cache is dropped, it reads the file
    poke.execute("INSERT OR REPLACE INTO meta VALUES ('poke', '1')")
    poke.close()
    go.set()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert worker.is_alive(), f"the daemon crashed on a damaged ledger: {errors!r}"
            time.sleep(0.1)
        assert snapshot(inbox) == before, "frames were moved or deleted while the ledger was damaged"
    finally:
        made[0].stop()  # type: ignore[attr-defined]
        worker.join(timeout=10)
    assert not errors, errors
    assert any("damaged" in r.getMessage() and str(db) in r.getMessage() for r in caplog.records), caplog.text


# -- item 6: stats reads, never writes ------------------------------------------------------------
@pytest.mark.parametrize("where", ["page", "header"])
def test_stats_on_a_damaged_ledger_says_so_in_one_clear_message(
    where: str, tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = processed_store(tmp_path, make_inbox, run_cli, store_args)
    db = damaged(store, where)

    done = run_cli("stats", "--set", f"store.root={store}")

    assert done.returncode == 2, outcome(done)
    assert_damage_message(done.stderr, db)


def test_stats_on_a_full_disk_reads_the_ledger_without_writing(
    tmp_path: Path, make_inbox: MakeInbox, tmpfs: Tmpfs, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = tmpfs("store", size="2m")
    processed_store(tmp_path, make_inbox, run_cli, store_args)
    ledger, wal = store / "ledger.db", store / "ledger.db-wal"
    before = ledger.read_bytes()
    fill(store)

    done = run_cli("stats", "--json", "--set", f"store.root={store}")

    assert done.returncode == 0, outcome(done)
    assert '"frames": 6' in done.stdout, done.stdout
    assert ledger.read_bytes() == before, f"stats changed {ledger} although it only reads"
    assert not wal.exists() or wal.stat().st_size == 0, f"stats wrote to {wal}"


def test_stats_never_upgrades_an_old_ledger_and_says_run_does(
    tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = processed_store(tmp_path, make_inbox, run_cli, store_args)
    db = store / "ledger.db"
    con = sqlite3.connect(db)  # back to schema version 1: no camera-context columns
    con.execute("DROP INDEX IF EXISTS frames_context")
    con.execute("ALTER TABLE frames DROP COLUMN context_score")
    con.execute("ALTER TABLE frames DROP COLUMN context_state")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    before = db.read_bytes()

    done = run_cli("stats", "--set", f"store.root={store}")

    assert "Traceback" not in done.stderr, outcome(done)
    assert db.read_bytes() == before, "stats upgraded the ledger"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    columns = {r[1] for r in con.execute("PRAGMA table_info(frames)")}
    con.close()
    assert "context_state" not in columns, "stats migrated the ledger"
    assert done.returncode == 2 and str(db) in done.stderr and "`blankfilter run` once" in done.stderr, outcome(done)


def test_ledger_recover_on_a_full_card_changes_nothing_and_says_so(
    tmp_path: Path, make_inbox: MakeInbox, tmpfs: Tmpfs, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = tmpfs("store", size="2m")
    processed_store(tmp_path, make_inbox, run_cli, store_args)
    db = damaged(store, "page")
    before = db.read_bytes()
    fill(store)

    done = run_cli("ledger", "recover", "--set", f"store.root={store}")

    assert done.returncode != 0 and "Traceback" not in done.stderr, outcome(done)
    assert "nothing was changed" in done.stderr and str(db) in done.stderr, outcome(done)
    assert db.read_bytes() == before
    assert not [p for p in store.iterdir() if ".damaged-" in p.name or ".recovering" in p.name]


# -- ledger check / recover ------------------------------------------------------------------------
def test_ledger_check_says_ok_for_a_sound_ledger_and_names_the_damage_of_a_bad_one(
    tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = processed_store(tmp_path, make_inbox, run_cli, store_args)
    db = store / "ledger.db"

    sound = run_cli("ledger", "check", "--set", f"store.root={store}")
    assert sound.returncode == 0 and "ok" in sound.stdout and str(db) in sound.stdout, outcome(sound)

    damaged(store, "page")
    bad = run_cli("ledger", "check", "--set", f"store.root={store}")
    assert bad.returncode == 2, outcome(bad)
    assert "Traceback" not in bad.stderr, outcome(bad)
    text = bad.stdout + bad.stderr
    assert "damaged" in text and str(db) in text and "blankfilter ledger recover" in text, outcome(bad)


@pytest.mark.parametrize("where", ["page", "header"])
def test_ledger_recover_sets_the_damaged_file_aside_and_rebuilds_from_the_store(
    where: str, tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = processed_store(tmp_path, make_inbox, run_cli, store_args)
    stored = store_files(store)
    assert any(k.startswith("kept/") for k in stored) and any(k.startswith("quarantine/") for k in stored)
    db = damaged(store, where)
    damaged_bytes = db.read_bytes()
    inbox = make_inbox(bursts=[MORE_BLANKS])  # arrived while the ledger was damaged

    done = run_cli("ledger", "recover", "--set", f"store.root={store}")

    assert done.returncode == 0, outcome(done)
    aside = [p for p in store.iterdir() if p.name.startswith("ledger.db.damaged-")]
    assert [p.read_bytes() for p in aside if "-wal" not in p.name and "-shm" not in p.name] == [damaged_bytes]
    assert integrity(db) == "ok"
    rows = ledger_rows(store)
    for key in stored:
        row = rows[key.split("/", 1)[1]]
        assert row["dest"] == key and row["sha256"] == sha256_file(store / key), dict(row)
        assert row["state"] == "done" and row["decision"] == "recovered", dict(row)
    assert store_files(store) == stored, "recover changed the store"

    again = run_once(run_cli, store_args, store__discard="quarantine")

    assert again.returncode == 0, outcome(again)
    rows = ledger_rows(store)
    for key in stored:  # never judged again
        assert rows[key.split("/", 1)[1]]["decision"] == "recovered"
    for name in MORE_BLANKS[1]:  # the inbox's frames are judged as new
        assert rows[f"missouri/{name}"]["decision"] in ("blank", "nonblank"), dict(rows[f"missouri/{name}"])
    assert not any(inbox.rglob("*.JPG"))
    assert store_files(store).items() >= stored.items(), "a recovered frame left the store"
