"""firmware_app.store and firmware_app.ledger: atomic, replayable file moves and the durable ledger."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FRAMES, TINY_U8

import firmware_app.ledger as ledger_module
from firmware_app.actions import Action, State, Verdict
from firmware_app.app import build_trap
from firmware_app.classifiers import load_classifier
from firmware_app.config import load_config
from firmware_app.ledger import Decision, Ledger, NewFrame
from firmware_app.loops.folder import FolderLoop
from firmware_app.retention import prune_quarantine
from firmware_app.store import FrameVanished, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "root").mkdir()
    return Store(tmp_path / "root", tmp_path / "inbox")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    db = Ledger(tmp_path / "ledger.db")
    yield db
    db.close()


def put(folder: Path, rel: str, data: bytes) -> str:
    """Write `data` to folder/rel; return its sha256."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def frame_bytes(name: str = "wellington/11374_1-1.JPG") -> bytes:
    return (FRAMES / name).read_bytes()


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- Store.move -------------------------------------------------------------------------------
def test_move_keeps_bytes_and_subfolders(store: Store) -> None:
    data = frame_bytes()
    sha = put(store.inbox, "cam1/a.jpg", data)
    dest = store.destination("kept", "cam1/a.jpg", sha)
    assert dest == "kept/cam1/a.jpg"
    store.move("cam1/a.jpg", dest, sha)
    assert not (store.inbox / "cam1/a.jpg").exists()
    assert (store.root / dest).read_bytes() == data
    assert all_files(store.root) == ["kept/cam1/a.jpg"]


def test_move_replay_after_it_finished_is_a_no_op(store: Store) -> None:
    data = frame_bytes()
    sha = put(store.inbox, "a.jpg", data)
    store.move("a.jpg", "kept/a.jpg", sha)
    before = (store.root / "kept/a.jpg").stat()
    store.move("a.jpg", "kept/a.jpg", sha)  # the crash came after the move: replay
    after = (store.root / "kept/a.jpg").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (store.root / "kept/a.jpg").read_bytes() == data


def test_move_replay_finishes_a_crash_between_link_and_unlink(store: Store) -> None:
    data = frame_bytes()
    sha = put(store.inbox, "a.jpg", data)
    (store.root / "kept").mkdir()
    os.link(store.inbox / "a.jpg", store.root / "kept/a.jpg")  # what move() had done when power went
    store.move("a.jpg", "kept/a.jpg", sha)
    assert not (store.inbox / "a.jpg").exists()
    assert (store.root / "kept/a.jpg").read_bytes() == data


def test_move_never_overwrites_a_different_file(store: Store) -> None:
    mine, theirs = frame_bytes(), frame_bytes("wellington/1200_1-0.JPG")
    sha = put(store.inbox, "a.jpg", mine)
    put(store.root, "kept/a.jpg", theirs)
    with pytest.raises(FileExistsError):
        store.move("a.jpg", "kept/a.jpg", sha)
    assert (store.root / "kept/a.jpg").read_bytes() == theirs
    assert (store.inbox / "a.jpg").read_bytes() == mine  # the frame is still safe in the inbox


def test_move_of_a_vanished_frame(store: Store) -> None:
    with pytest.raises(FrameVanished, match=r"a\.jpg"):
        store.move("a.jpg", "kept/a.jpg", "0" * 64)


def test_destination_adds_hash_when_name_is_taken(store: Store) -> None:
    theirs = frame_bytes("wellington/1200_1-0.JPG")
    put(store.root, "kept/cam1/a.jpg", theirs)
    mine = frame_bytes()
    sha = put(store.inbox, "cam1/a.jpg", mine)
    dest = store.destination("kept", "cam1/a.jpg", sha)
    assert dest == f"kept/cam1/a-{sha[:8]}.jpg"
    store.move("cam1/a.jpg", dest, sha)
    assert (store.root / "kept/cam1/a.jpg").read_bytes() == theirs
    assert (store.root / dest).read_bytes() == mine


def test_destination_reuses_the_name_when_the_same_bytes_are_there(store: Store) -> None:
    data = frame_bytes()
    sha = put(store.root, "audit/a.jpg", data)
    assert store.destination("audit", "a.jpg", sha) == "audit/a.jpg"  # a replay finds its own file


def test_destination_folders_per_action(store: Store) -> None:
    sha = "ab" * 32
    assert store.destination("kept", "x/a.jpg", sha) == "kept/x/a.jpg"
    assert store.destination("failed_kept", "a.jpg", sha) == "kept/a.jpg"
    assert store.destination("audit", "a.jpg", sha) == "audit/a.jpg"
    assert store.destination("quarantined", "a.jpg", sha) == "quarantine/a.jpg"
    assert store.destination("blank_kept", "a.jpg", sha) == "blank/a.jpg"
    assert store.destination("deleted", "a.jpg", sha) is None


def test_delete_and_delete_of_a_missing_file(store: Store) -> None:
    put(store.inbox, "a.jpg", b"x")
    store.delete("a.jpg")
    assert not (store.inbox / "a.jpg").exists()
    store.delete("a.jpg")  # a replay: fine
    store.delete("never/was.jpg")


def exdev_between(inbox: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Make os.link fail with EXDEV from the inbox (another file system), as a real card would."""
    real_link = os.link
    calls: list[tuple[str, str]] = []

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        calls.append((str(src), str(dst)))
        if Path(src).resolve().is_relative_to(inbox.resolve()):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        real_link(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", link)
    return calls


def test_cross_device_move_copies_then_links(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    data = frame_bytes()
    sha = put(store.inbox, "cam1/a.jpg", data)
    calls = exdev_between(store.inbox, monkeypatch)
    store.move("cam1/a.jpg", "kept/cam1/a.jpg", sha)
    assert (store.root / "kept/cam1/a.jpg").read_bytes() == data
    assert not (store.inbox / "cam1/a.jpg").exists()
    assert all_files(store.root) == ["kept/cam1/a.jpg"]  # no .partial left behind
    assert len(calls) == 2 and calls[1][0].endswith(".a.jpg.partial")  # the copy path really ran


def test_cross_device_copy_failure_leaves_no_partial(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    data = frame_bytes()
    sha = put(store.inbox, "a.jpg", data)
    exdev_between(store.inbox, monkeypatch)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(OSError) as info:
        store.move("a.jpg", "kept/a.jpg", sha)
    assert info.value.errno == errno.ENOSPC
    assert all_files(store.root) == []
    assert (store.inbox / "a.jpg").read_bytes() == data


def test_move_without_hard_links_renames(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAT/exFAT cards have no hard links: link() fails with EPERM and a rename does the move."""
    data = frame_bytes()
    sha = put(store.inbox, "a.jpg", data)

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    store.move("a.jpg", "kept/a.jpg", sha)
    assert (store.root / "kept/a.jpg").read_bytes() == data
    assert not (store.inbox / "a.jpg").exists()


# -- Ledger -----------------------------------------------------------------------------------
def new_frame(path: str, sha: str, size: int = 100, ts: float = 1_700_000_000.0, score: float | None = 0.1) -> NewFrame:
    return NewFrame(
        path=path, sha256=sha, size=size, captured_at=None, captured_ts=ts, time_source="mtime",
        burst_hint=None, score=score, gamma=1.0, exposure={"mean": 0.4}, error=None,
        model="tiny_u8", model_version="0.0",
    )  # fmt: skip


def test_ledger_uses_wal_and_full_sync(ledger: Ledger) -> None:
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other = sqlite3.connect(str(ledger.path))
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    finally:
        other.close()


def test_ledger_states_scored_decided_done(ledger: Ledger) -> None:
    frame_id = ledger.add(new_frame("cam1/a.jpg", "a" * 64))
    row = ledger.find("cam1/a.jpg", "a" * 64)
    assert row is not None and row.id == frame_id and row.state == "scored" and row.action is None
    assert [r.id for r in ledger.in_state("scored")] == [frame_id]

    ledger.decide([Decision(frame_id, "burst-1", "blank", "quarantined", "quarantine/cam1/a.jpg", 0.25)])
    row = ledger.find_by_id(frame_id)
    assert row is not None and row.state == "decided"
    assert (row.decision, row.action, row.dest) == ("blank", "quarantined", "quarantine/cam1/a.jpg")
    assert ledger.in_state("scored") == [] and [r.id for r in ledger.in_state("decided")] == [frame_id]

    ledger.done(frame_id)
    row = ledger.find_by_id(frame_id)
    assert row is not None and row.state == "done" and row.action == "quarantined"
    assert row.dest == "quarantine/cam1/a.jpg"  # done() without arguments keeps what was decided


def test_ledger_decide_only_moves_scored_rows(ledger: Ledger) -> None:
    frame_id = ledger.add(new_frame("a.jpg", "a" * 64))
    ledger.decide([Decision(frame_id, "b1", "nonblank", "kept", "kept/a.jpg", 0.25)])
    ledger.done(frame_id)
    # A second decision for a finished frame (a replay gone wrong) must not reopen it.
    ledger.decide([Decision(frame_id, "b2", "blank", "deleted", None, 0.25)])
    row = ledger.find_by_id(frame_id)
    assert row is not None and (row.state, row.action, row.dest) == ("done", "kept", "kept/a.jpg")


def test_ledger_done_records_errors_and_changed_actions(ledger: Ledger) -> None:
    frame_id = ledger.add(dataclasses.replace(new_frame("a.jpg", "a" * 64), error="first problem"))
    ledger.decide([Decision(frame_id, "b1", Verdict.BLANK, Action.DELETED, None, 0.25)])
    ledger.done(frame_id, action="vanished", error="second problem")
    row = ledger.find_by_id(frame_id)
    assert row is not None and row.action == "vanished"
    assert row.error == "first problem; second problem"


def test_ledger_unique_path_and_sha(ledger: Ledger) -> None:
    ledger.add(new_frame("a.jpg", "a" * 64))
    with pytest.raises(sqlite3.IntegrityError):
        ledger.add(new_frame("a.jpg", "a" * 64))
    ledger.add(new_frame("a.jpg", "b" * 64))  # the same name, new bytes: a new frame
    ledger.add(new_frame("cam2/a.jpg", "a" * 64))  # the same bytes elsewhere: also a new row
    assert ledger.stats()["frames"] == 3


def test_ledger_survives_reopening(tmp_path: Path) -> None:
    first = Ledger(tmp_path / "l.db")
    frame_id = first.add(new_frame("a.jpg", "a" * 64))
    first.decide([Decision(frame_id, "b1", "nonblank", "kept", "kept/a.jpg", 0.25)])
    first.close()
    second = Ledger(tmp_path / "l.db")
    try:
        assert [r.id for r in second.in_state("decided")] == [frame_id]
    finally:
        second.close()


def test_ledger_stats_counts(ledger: Ledger) -> None:
    plan = [
        ("a.jpg", 0.9, "nonblank", "kept"),
        ("b.jpg", 0.1, "blank", "deleted"),
        ("c.jpg", 0.2, "blank", "quarantined"),
        ("d.jpg", 0.05, "blank", "deleted"),
        ("e.jpg", None, "unknown", "failed_kept"),
    ]
    for i, (path, score, decision, action) in enumerate(plan):
        frame_id = ledger.add(new_frame(path, f"{i:064x}", score=score))
        ledger.decide([Decision(frame_id, f"burst-{i % 3}", decision, action, None, 0.25)])
        if path != "d.jpg":
            ledger.done(frame_id)
    ledger.add(new_frame("f.jpg", "f" * 64))  # still scored, not decided
    ledger.skip("notes.txt", 12, 1.0, "not a frame")

    stats = ledger.stats()
    assert stats["frames"] == 6
    assert stats["by_decision"] == {"nonblank": 1, "blank": 3, "unknown": 1, "pending": 1}
    assert stats["by_action"] == {"kept": 1, "deleted": 2, "quarantined": 1, "failed_kept": 1, "scored": 1}
    assert stats["blank_ratio"] == pytest.approx(3 / 4)  # unknown frames are not in the ratio
    assert stats["bursts"] == 3
    assert stats["pending"] == 2  # d.jpg (decided) and f.jpg (scored)
    assert stats["skipped"] == 1
    assert stats["models"] == [("tiny_u8", "0.0", 6)]


def test_ledger_skipped_files(ledger: Ledger) -> None:
    assert not ledger.was_skipped("x.png", 10, 5.0)
    ledger.skip("x.png", 10, 5.0, "not a frame")
    assert ledger.was_skipped("x.png", 10, 5.0)
    assert not ledger.was_skipped("x.png", 11, 5.0)  # rewritten: look at it again
    assert not ledger.was_skipped("x.png", 10, 6.0)


# -- quarantine pruning -----------------------------------------------------------------------
Quarantine = Callable[..., list[int]]


@pytest.fixture
def quarantine(store: Store, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> Quarantine:
    """Quarantine frames through the ledger API: [(name, size, age_days)] -> frame ids, oldest first."""

    def make(items: list[tuple[str, int, float]]) -> list[int]:
        ids = []
        for name, size, age_days in items:
            data = os.urandom(size)
            sha = hashlib.sha256(data).hexdigest()
            frame_id = ledger.add(new_frame(name, sha, size=size))
            dest = store.destination("quarantined", name, sha)
            assert dest is not None
            ledger.decide([Decision(frame_id, f"b-{name}", "blank", "quarantined", dest, 0.25)])
            put(store.root, dest, data)
            done_at = (datetime.now(UTC) - timedelta(days=age_days)).isoformat(timespec="seconds")
            with monkeypatch.context() as clock:
                clock.setattr(ledger_module, "now_iso", lambda at=done_at: at)  # done "age_days" ago
                ledger.done(frame_id)
            ids.append(frame_id)
        return ids

    return make


def quarantined_files(store: Store) -> list[str]:
    folder = store.root / "quarantine"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_prune_by_age(store: Store, ledger: Ledger, quarantine: Quarantine) -> None:
    old1, old2, young = quarantine([("a.jpg", 1000, 45), ("b.jpg", 1000, 31), ("c.jpg", 1000, 2)])
    removed = prune_quarantine(store, ledger, max_mb=1000, max_days=30, min_free_mb=0)
    assert removed == 2
    assert quarantined_files(store) == ["c.jpg"]
    for frame_id in (old1, old2):
        row = ledger.find_by_id(frame_id)
        assert row is not None and row.action == "quarantine_expired"
        assert row.error is not None and "quarantine_max_days" in row.error
    row = ledger.find_by_id(young)
    assert row is not None and row.action == "quarantined"
    assert [r[0] for r in ledger.quarantined()] == [young]
    assert prune_quarantine(store, ledger, max_mb=1000, max_days=30, min_free_mb=0) == 0  # nothing more to do


def test_prune_by_size_removes_oldest_first(store: Store, ledger: Ledger, quarantine: Quarantine) -> None:
    ids = quarantine([("a.jpg", 400_000, 3), ("b.jpg", 400_000, 2), ("c.jpg", 400_000, 1)])
    # 1.2 MB held, cap 0.5 MB: dropping the oldest leaves 0.8 MB, the next 0.4 MB, under the cap.
    removed = prune_quarantine(store, ledger, max_mb=0.5, max_days=30, min_free_mb=0)
    assert removed == 2
    assert quarantined_files(store) == ["c.jpg"]
    row = ledger.find_by_id(ids[0])
    assert row is not None and row.error is not None and "quarantine_max_mb" in row.error


def test_prune_for_free_space(
    store: Store, ledger: Ledger, quarantine: Quarantine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = quarantine([("a.jpg", 100_000, 3), ("b.jpg", 100_000, 2), ("c.jpg", 100_000, 1), ("d.jpg", 100_000, 0)])
    # A nearly full card: every quarantined frame removed gives back 1 MB (file-system blocks).
    monkeypatch.setattr(Store, "free_mb", lambda self: 50.0 + 4 - len(quarantined_files(self)))
    removed = prune_quarantine(store, ledger, max_mb=1000, max_days=30, min_free_mb=51.5)
    assert removed == 2  # 50 MB free -> 51 -> 52: at or over the floor, so the two youngest stay
    assert quarantined_files(store) == ["c.jpg", "d.jpg"]
    reasons = [r.error for r in (ledger.find_by_id(i) for i in ids[:2]) if r is not None]
    assert all(e is not None and "min_free_mb" in e for e in reasons) and len(reasons) == 2


def test_prune_within_all_caps_removes_nothing(store: Store, ledger: Ledger, quarantine: Quarantine) -> None:
    quarantine([("a.jpg", 1000, 5), ("b.jpg", 1000, 1)])
    assert prune_quarantine(store, ledger, max_mb=1, max_days=30, min_free_mb=0) == 0
    assert quarantined_files(store) == ["a.jpg", "b.jpg"]


def test_prune_tolerates_a_file_already_gone(store: Store, ledger: Ledger, quarantine: Quarantine) -> None:
    (frame_id,) = quarantine([("a.jpg", 1000, 40)])
    (store.root / "quarantine/a.jpg").unlink()  # someone cleaned up by hand
    assert prune_quarantine(store, ledger, max_mb=1000, max_days=30, min_free_mb=0) == 1
    row = ledger.find_by_id(frame_id)
    assert row is not None and row.action == "quarantine_expired"


# -- crash and replay through the folder loop --------------------------------------------------
class PowerCut(BaseException):
    """Not an Exception: nothing in the loop may catch it, as nothing survives a power cut."""


def make_loop(tmp_path: Path, **sets: str) -> FolderLoop:
    overrides = [f"source.inbox={tmp_path / 'inbox'}", f"store.root={tmp_path / 'root'}", "source.settle_s=0",
                 "store.min_free_mb=0", "context.enabled=false", "source.watch=poll"]  # fmt: skip
    overrides += [f"{key.replace('__', '.')}={value}" for key, value in sets.items()]
    trap = build_trap(load_config(None, overrides), once=True, classifier=load_classifier(TINY_U8, threads=1))
    assert isinstance(trap.loop, FolderLoop)
    return trap.loop


def test_folder_loop_replays_moves_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = tmp_path / "inbox"
    names = ["11374_1-1.JPG", "11374_2-1.JPG", "11374_3-1.JPG"]
    for name in names:
        put(inbox, f"cam1/{name}", frame_bytes(f"wellington/{name}"))
    loop = make_loop(tmp_path, model__cutoff="0.0")  # every frame non-blank: kept
    ledger = loop.ledger

    real_move, moves = Store.move, []

    def move_then_power_cut(self: Store, rel: str, dest: str, sha256: str) -> None:
        moves.append(rel)
        if len(moves) == 2:  # the second frame: linked into kept/, but not yet out of the inbox
            (self.root / dest).parent.mkdir(parents=True, exist_ok=True)
            os.link(self.inbox / rel, self.root / dest)
            raise PowerCut
        real_move(self, rel, dest, sha256)

    monkeypatch.setattr(Store, "move", move_then_power_cut)
    with pytest.raises(PowerCut):
        loop.run()
    monkeypatch.undo()
    # The decision was durable before any file moved; a burst is marked done in one transaction
    # after its files moved (one fsync a burst), so the cut leaves all three 'decided'.
    assert ledger.in_state("done") == []
    assert len(ledger.in_state("decided")) == 3

    make_loop(tmp_path, model__cutoff="0.0").recover()  # the next start
    assert ledger.in_state(State.DECIDED) == [] and len(ledger.in_state(State.DONE)) == 3
    assert all_files(inbox) == []
    assert [f for f in all_files(tmp_path / "root") if not f.startswith("ledger.db")] == [
        f"kept/cam1/{name}" for name in names
    ]
    for name in names:
        assert (tmp_path / "root" / "kept" / "cam1" / name).read_bytes() == frame_bytes(f"wellington/{name}")


def test_outbox_is_written_with_the_decision_and_drains_oldest_first(tmp_path: Path) -> None:
    from firmware_app.ledger import Decision, Ledger, NewFrame, OutboxEvent

    ledger = Ledger(tmp_path / "ledger.db")
    ids = [
        ledger.add(
            NewFrame(f"cam/{i}.jpg", f"{i:064x}", 1, None, float(i), "mtime", None, 0.9, 1.0, None, None, "m", "1")
        )
        for i in range(3)
    ]
    for i, frame_id in enumerate(ids):
        ledger.decide([Decision(frame_id, f"b{i}", "nonblank", "kept", None, 0.5)], [OutboxEvent(f"e{i}", "{}")])
    ledger.decide([Decision(ids[0], "b0", "nonblank", "kept", None, 0.5)], [OutboxEvent("e0", "{}")])  # replayed
    assert ledger.outbox_state()[0] == 3  # the same event twice is one row
    pending = ledger.pending_events(10)
    assert [e.event_id for e in pending] == ["e0", "e1", "e2"]
    assert [e.event_id for e in ledger.pending_events(10, exclude=[pending[0].id])] == ["e1", "e2"]
    ledger.events_delivered([pending[0].id, pending[1].id])
    assert [e.event_id for e in ledger.pending_events(10)] == ["e2"]
    ledger.db.execute("UPDATE outbox SET delivered_at = '2000-01-01T00:00:00+00:00' WHERE event_id = 'e0'")
    assert ledger.prune_delivered(30) == 1  # old delivered history goes; undelivered never does
    assert ledger.outbox_state()[0] == 1 and ledger.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 2


def test_a_failed_decision_leaves_no_event(tmp_path: Path) -> None:
    """Decision and event share one transaction: when it cannot commit, neither exists."""
    from firmware_app.ledger import Decision, Ledger, NewFrame, OutboxEvent

    ledger = Ledger(tmp_path / "ledger.db")
    frame_id = ledger.add(NewFrame("a.jpg", "a" * 64, 1, None, 0.0, "mtime", None, 0.9, 1.0, None, None, "m", "1"))
    ledger.db.execute("CREATE TRIGGER fail BEFORE UPDATE ON frames BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(sqlite3.IntegrityError):
        ledger.decide([Decision(frame_id, "b", "nonblank", "kept", None, 0.5)], [OutboxEvent("e", "{}")])
    assert ledger.outbox_state()[0] == 0


def test_a_scored_row_with_an_unknown_context_state_is_decided_by_the_classifier(tmp_path: Path) -> None:
    """A damaged (or newer) ledger must not stop the start, nor let a context score it cannot read discard."""
    rel = "cam1/11374_1-1.JPG"
    data = frame_bytes("wellington/11374_1-1.JPG")
    put(tmp_path / "inbox", rel, data)
    (tmp_path / "root").mkdir()
    ledger = Ledger(tmp_path / "root" / "ledger.db")
    record = dataclasses.replace(new_frame(rel, hashlib.sha256(data).hexdigest(), size=len(data), score=0.9),
                                 context_score=0.0, context_state="sideways")  # fmt: skip
    frame_id = ledger.add(record)
    ledger.close()
    loop = make_loop(tmp_path)  # tiny_u8's card cutoff 0.85: p 0.9 keeps it; a matched 0.0 would discard it
    loop.run()
    row = loop.ledger.find_by_id(frame_id)
    loop.ledger.close()
    assert row is not None and (row.state, row.decision, row.action) == ("done", "nonblank", "kept")
