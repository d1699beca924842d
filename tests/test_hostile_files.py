"""Files that lie about who they are: a name and time reused for new bytes, an upload that stalls
half way and then finishes, a name that is not UTF-8, a link that points out of the inbox. Real
JPEGs, the shipped model, real SQLite; the CLI as a subprocess where a whole run is the point, the
loop itself where a test must stop it between two steps (an upload that resumes at a chosen moment)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import FRAMES, TESTS
from PIL import Image

from firmware_app.app import build_trap
from firmware_app.classifiers import load_classifier
from firmware_app.config import load_config
from firmware_app.loops.folder import FolderLoop
from firmware_app.store import Store

RunCli = Callable[..., subprocess.CompletedProcess[str]]
StoreArgs = Callable[..., list[str]]

SHIPPED = TESTS.parent / "models" / "blankfilter-cellnet-320.tflite"
OLD = 1_650_000_000.0  # a settled file: far in the past


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_exif_time(source: Path, when: str) -> bytes:
    """A real frame re-encoded with an EXIF capture time, as a camera writes it."""
    image = Image.open(source)
    exif = Image.Exif()
    exif[0x0132] = when  # DateTime
    exif.get_ifd(0x8769)[0x9003] = when  # DateTimeOriginal
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


def put(path: Path, data: bytes, mtime: float = OLD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def rows(root: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{root / 'ledger.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM frames ORDER BY id")]
    finally:
        db.close()


def events(root: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{root / 'ledger.db'}?mode=ro", uri=True)
    try:
        return [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY id")]
    finally:
        db.close()


def assert_events_name_existing_files(root: Path) -> None:
    for event in events(root):
        for frame in event["frames"]:
            path = root / frame["file"]
            assert path.is_file(), f"event {event['event_id']} names {frame['file']}, which does not exist"
            assert sha(path.read_bytes()) == frame["sha256"], f"{frame['file']} holds other bytes than its event says"


def outcome(done: subprocess.CompletedProcess[str]) -> str:
    return f"rc {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


# -- 1. a camera that reuses a file name and a capture time -----------------------------------------
def test_a_new_burst_under_a_reused_name_and_time_sends_its_own_event(
    tmp_path: Path, run_cli: RunCli, store_args: StoreArgs
) -> None:
    """After a battery change or a card format a camera starts its clock and file counter again: a
    new burst arrives as IMG_0001.JPG taken at the same EXIF time as an earlier one. Both are kept,
    so both send an event; the same bytes always give the same event id (a restart never duplicates)."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    when = "2024:05:01 06:00:00"
    first = with_exif_time(FRAMES / "wellington" / "11374_1-1.JPG", when)
    second = with_exif_time(FRAMES / "wellington" / "11374_2-1.JPG", when)
    assert first != second
    args = store_args(inbox, root, model=SHIPPED, model__cutoff=0.0)  # every frame kept

    put(inbox / "cam1" / "IMG_0001.JPG", first)
    run_cli("run", "--once", *args, check_rc=0)
    put(inbox / "cam1" / "IMG_0001.JPG", second)  # the reset camera's first frame
    run_cli("run", "--once", *args, check_rc=0)

    kept = sorted(r["dest"] for r in rows(root))
    assert len(kept) == 2 and all(d.startswith("kept/cam1/IMG_0001") for d in kept), kept
    sent = events(root)
    assert len(sent) == 2, f"two kept bursts, {len(sent)} event(s): {[e['frames'] for e in sent]}"
    assert {e["frames"][0]["sha256"] for e in sent} == {sha(first), sha(second)}
    assert len({e["event_id"] for e in sent}) == 2 and len({e["burst"] for e in sent}) == 2
    assert_events_name_existing_files(root)

    # The same bytes on another trap start (a replay) give the same burst and event id.
    again_inbox, again_root = tmp_path / "again" / "inbox", tmp_path / "again" / "store"
    put(again_inbox / "cam1" / "IMG_0001.JPG", first)
    run_cli("run", "--once", *store_args(again_inbox, again_root, model=SHIPPED, model__cutoff=0.0), check_rc=0)
    by_bytes = {e["frames"][0]["sha256"]: e["event_id"] for e in sent}
    assert events(again_root)[0]["event_id"] == by_bytes[sha(first)]


# -- 2. an upload that stalls half way --------------------------------------------------------------
@contextmanager
def folder_loop(tmp_path: Path, *sets: str) -> Iterator[FolderLoop]:
    """The daemon's folder loop (not --once: a burst stays open while its last frame is recent),
    polling the inbox, stepped by the test."""
    config = load_config(
        None,
        [
            f"source.inbox={tmp_path / 'inbox'}",
            f"store.root={tmp_path / 'store'}",
            "source.settle_s=0",
            "source.watch=poll",
            "source.poll_s=0.1",
            "store.audit_rate=0",
            "store.min_free_mb=0",
            "context.enabled=false",
            *sets,
        ],
    )
    trap = build_trap(config, once=False, classifier=load_classifier(SHIPPED, threads=1))
    loop = trap.loop
    assert isinstance(loop, FolderLoop)
    loop.recover()
    loop.source.start()
    try:
        yield loop
    finally:
        loop.source.stop()
        trap.ledger.close()


def step_until(loop: FolderLoop, pool: ThreadPoolExecutor, done: Callable[[], bool], what: str) -> None:
    """Step the loop until `done` (each step rescans the inbox: poll_s is 0.1 s); bounded."""
    for _ in range(100):
        loop.step(pool)
        if done():
            return
    raise AssertionError(f"never happened: {what}")


def test_an_upload_that_stalls_half_way_is_judged_once_on_its_full_bytes(tmp_path: Path) -> None:
    """An FTP upload stalls past source.settle_s: the half file is read, fails to decode and is
    pending (kept if it came to that). Then the upload finishes. The half file's row is closed as
    superseded, the full frame is judged on its own bytes, and every event names a file that exists."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    full = (FRAMES / "owl" / "RCNX1419.JPG").read_bytes()  # an owl, with an EXIF time
    target = inbox / "cam1" / "RCNX1419.JPG"
    put(target, full[: len(full) // 2])  # the upload stalls here
    with folder_loop(tmp_path) as loop, ThreadPoolExecutor(1) as pool:
        step_until(loop, pool, lambda: len(rows(root)) == 1, "the half file is scored")
        (half,) = rows(root)
        assert half["state"] == "scored" and half["score"] is None and "truncated" in half["error"], half

        put(target, full, mtime=OLD + 30)  # the upload resumes and finishes
        step_until(loop, pool, lambda: any(r["sha256"] == sha(full) for r in rows(root)), "the full file is scored")
        loop.close_bursts(low_disk=False, flush=True)

    final = {r["id"]: r for r in rows(root)}
    assert final[half["id"]]["state"] == "done" and final[half["id"]]["action"] == "superseded", final[half["id"]]
    live = [r for r in final.values() if r["action"] != "superseded"]
    assert len(live) == 1, f"one frame, {len(live)} live rows: {live}"
    assert live[0]["sha256"] == sha(full) and live[0]["score"] is not None and live[0]["state"] == "done"
    assert live[0]["action"] == "kept", live[0]
    assert (root / live[0]["dest"]).read_bytes() == full
    assert not any(r["action"] == "vanished" for r in final.values())
    assert len(events(root)) == 1
    assert_events_name_existing_files(root)


def test_a_frame_that_changes_after_it_was_judged_is_not_deleted_on_the_old_judgement(tmp_path: Path) -> None:
    """A file judged blank, then rewritten with other bytes before its burst closes (a resumed or
    restarted upload): the blank judgement was of other bytes, so the file is not deleted; the old row
    is superseded and the new bytes are judged as a new frame."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    blank = (FRAMES / "speciesnet" / "blank.jpg").read_bytes()
    animal = (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes()
    target = inbox / "cam1" / "IMG_0001.JPG"
    put(target, blank)
    # cutoff 0.999: the blank frame is blank to the shipped model (so its burst would be deleted)
    with folder_loop(tmp_path, "model.cutoff=0.999") as loop, ThreadPoolExecutor(1) as pool:
        step_until(loop, pool, lambda: len(rows(root)) == 1, "the first file is scored")
        assert rows(root)[0]["sha256"] == sha(blank)
        put(target, animal, mtime=OLD + 5)  # rewritten before the burst closed; the loop has not rescanned
        loop.close_bursts(low_disk=False, flush=True)
        assert target.read_bytes() == animal, "a file was deleted on a judgement of other bytes"
        first = rows(root)[0]
        assert (first["state"], first["action"]) == ("done", "superseded"), first
        step_until(loop, pool, lambda: any(r["sha256"] == sha(animal) for r in rows(root)), "the new bytes are scored")
        loop.close_bursts(low_disk=False, flush=True)

    (second,) = [r for r in rows(root) if r["sha256"] == sha(animal)]
    assert second["state"] == "done" and second["score"] is not None
    assert second["action"] in ("kept", "deleted"), second
    if second["action"] == "kept":
        assert (root / second["dest"]).read_bytes() == animal
    assert_events_name_existing_files(root)


def test_a_file_that_changes_back_to_the_bytes_first_judged_is_judged_on_them_again(tmp_path: Path) -> None:
    """A, then B, then A again under one name before the burst closed: B superseded A and A's bytes
    superseded B; A's row (same path, same bytes) waits for its burst again and is decided once."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    a = (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes()
    b = (FRAMES / "speciesnet" / "blank.jpg").read_bytes()
    target = inbox / "cam1" / "IMG_0001.JPG"
    put(target, a)
    with folder_loop(tmp_path) as loop, ThreadPoolExecutor(1) as pool:
        step_until(loop, pool, lambda: len(rows(root)) == 1, "A is scored")
        put(target, b, mtime=OLD + 5)
        step_until(loop, pool, lambda: len(rows(root)) == 2, "B is scored")
        put(target, a, mtime=OLD + 10)
        step_until(loop, pool, lambda: rows(root)[0]["state"] == "scored", "A waits again")
        loop.close_bursts(low_disk=False, flush=True)

    first, second = rows(root)
    assert first["sha256"] == sha(a) and first["state"] == "done" and first["action"] == "kept", first
    assert (second["state"], second["action"]) == ("done", "superseded"), second
    assert (root / first["dest"]).read_bytes() == a
    assert len(events(root)) == 1
    assert_events_name_existing_files(root)


class PowerCut(BaseException):
    """Not an Exception: nothing in the loop may catch it, as nothing survives a power cut."""


def test_a_decided_delete_is_not_replayed_on_a_file_rewritten_while_the_trap_was_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The power went after a blank burst's delete was recorded and before it ran; meanwhile the card
    reader wrote other bytes under the name. The next start replays decided operations: it checks the
    file is still the bytes judged, finds it is not, closes the row as superseded and judges the file."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    blank = (FRAMES / "speciesnet" / "blank.jpg").read_bytes()
    animal = (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes()
    target = inbox / "cam1" / "IMG_0001.JPG"
    put(target, blank)

    def power_cut(self: Store, rel: str) -> None:
        raise PowerCut

    monkeypatch.setattr(Store, "delete", power_cut)
    with folder_loop(tmp_path, "model.cutoff=0.999") as loop, ThreadPoolExecutor(1) as pool:
        step_until(loop, pool, lambda: len(rows(root)) == 1, "the first file is scored")
        with pytest.raises(PowerCut):
            loop.close_bursts(low_disk=False, flush=True)
    monkeypatch.undo()
    (decided,) = rows(root)
    assert (decided["state"], decided["action"]) == ("decided", "deleted"), decided

    put(target, animal, mtime=OLD + 5)  # while the trap was down
    with folder_loop(tmp_path, "model.cutoff=0.999") as loop, ThreadPoolExecutor(1) as pool:
        assert target.read_bytes() == animal, "a delete decided on other bytes was replayed"
        step_until(loop, pool, lambda: any(r["sha256"] == sha(animal) for r in rows(root)), "the new bytes are scored")
        loop.close_bursts(low_disk=False, flush=True)

    first, second = rows(root)
    assert (first["state"], first["action"]) == ("done", "superseded"), first
    assert second["sha256"] == sha(animal) and second["state"] == "done" and second["score"] is not None


# -- 3. a file name that is not UTF-8 ---------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_processed_and_its_name_kept_exactly(
    tmp_path: Path, run_cli: RunCli, store_args: StoreArgs
) -> None:
    """Latin-1 names come off Windows and FAT cards (b'caf\\xe9.jpg'). Such a frame is judged and
    stored under its own bytes, the ledger keeps the name losslessly, and a restart runs cleanly."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    odd = os.fsencode(inbox / "cam1") + b"/caf\xe9.jpg"
    os.makedirs(os.fsencode(inbox / "cam1"), exist_ok=True)
    data = (FRAMES / "wellington" / "11374_1-1.JPG").read_bytes()
    with open(odd, "wb") as fh:
        fh.write(data)
    os.utime(odd, (OLD, OLD))
    with open(os.fsencode(inbox / "cam1") + b"/not\xe9s.txt", "wb") as fh:  # not a frame: skipped, once
        fh.write(b"field notes\n")
    shutil.copyfile(FRAMES / "wellington" / "1200_1-0.JPG", inbox / "cam1" / "plain.jpg")
    os.utime(inbox / "cam1" / "plain.jpg", (OLD + 3600, OLD + 3600))
    args = store_args(inbox, root, model=SHIPPED, model__cutoff=0.0)  # every frame kept

    first = run_cli("run", "--once", *args)
    assert first.returncode == 0, outcome(first)
    again = run_cli("run", "--once", *args)  # a restart: the same ledger, the same name
    assert again.returncode == 0, outcome(again)

    assert os.listdir(os.fsencode(inbox / "cam1")) == [b"not\xe9s.txt"]
    assert first.stderr.count("not\\xe9s.txt skipped") == 1 and "skipped" not in again.stderr, first.stderr
    with open(os.fsencode(root / "kept" / "cam1") + b"/caf\xe9.jpg", "rb") as fh:
        assert fh.read() == data
    by_name = {os.fsencode(r["path"]) if isinstance(r["path"], str) else r["path"]: r for r in rows(root)}
    assert set(by_name) == {b"cam1/caf\xe9.jpg", b"cam1/plain.jpg"}, list(by_name)
    assert by_name[b"cam1/caf\xe9.jpg"]["sha256"] == sha(data) and by_name[b"cam1/caf\xe9.jpg"]["action"] == "kept"
    assert sorted(e["frames"][0]["file"] for e in events(root)) == ["kept/cam1/caf\\xe9.jpg", "kept/cam1/plain.jpg"]
    stats = run_cli("stats", "--json", *args[2:])  # stats takes no --model
    assert stats.returncode == 0, outcome(stats)
    assert json.loads(stats.stdout)["by_action"] == {"kept": 2}


# -- 10. symbolic links in the inbox ----------------------------------------------------------------
def links_under(root: Path) -> list[Path]:
    return [Path(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if Path(d, n).is_symlink()]


def skipped(root: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{root / 'ledger.db'}?mode=ro", uri=True)
    try:
        return {os.fsdecode(p): reason for p, reason in db.execute("SELECT path, reason FROM skipped")}
    finally:
        db.close()


def lines_naming(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if name in line]


def test_a_link_that_leaves_the_inbox_is_refused_with_one_line_and_left_in_place(
    tmp_path: Path, run_cli: RunCli, store_args: StoreArgs
) -> None:
    """Links to a file outside the inbox (absolute, via '..', to /etc/passwd) are refused: one line
    each naming the link and why, not judged, nothing of the target in the store or an event, the
    link left where it is and recorded as skipped, so a restart does not report it again."""
    inbox, root, private = tmp_path / "inbox", tmp_path / "store", tmp_path / "private"
    secret = private / "owner.jpg"  # an animal outside the inbox: it would be kept and sent as a thumbnail
    put(secret, (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes())
    (inbox / "cam1").mkdir(parents=True)
    links = {
        "cam1/IMG_0001.JPG": secret,
        "cam1/IMG_0002.JPG": Path("..", "..", "private", "owner.jpg"),
        "cam1/IMG_0003.JPG": Path("/etc/passwd"),
    }
    for rel, target in links.items():
        (inbox / rel).symlink_to(target)
    owl = (FRAMES / "owl" / "RCNX1419.JPG").read_bytes()
    put(inbox / "cam1" / "IMG_0004.JPG", owl)  # a real frame beside them is judged as usual
    args = store_args(inbox, root, model=SHIPPED, model__cutoff=0.0)  # every frame judged is kept

    first = run_cli("run", "--once", *args)
    assert first.returncode == 0, outcome(first)
    again = run_cli("run", "--once", *args)
    assert again.returncode == 0, outcome(again)

    for rel, target in links.items():
        assert (inbox / rel).is_symlink() and os.readlink(inbox / rel) == str(target), f"{rel} was not left in place"
        said = lines_naming(first.stderr, rel)
        assert len(said) == 1 and "outside the inbox" in said[0], first.stderr
        assert not lines_naming(again.stderr, rel), again.stderr
        assert "outside the inbox" in skipped(root)[rel]
    assert secret.read_bytes() == (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes()
    assert links_under(root) == []
    assert [r["path"] for r in rows(root)] == ["cam1/IMG_0004.JPG"]
    assert (root / "kept" / "cam1" / "IMG_0004.JPG").read_bytes() == owl
    assert [[f["file"] for f in e["frames"]] for e in events(root)] == [["kept/cam1/IMG_0004.JPG"]]
    assert_events_name_existing_files(root)


def test_a_link_to_a_frame_inside_the_inbox_is_refused_and_the_frame_is_stored_as_bytes_once(
    tmp_path: Path, run_cli: RunCli, store_args: StoreArgs
) -> None:
    """A link to a frame inside the inbox is not followed either: the frame is judged once, under its
    own name, and stored as bytes; the link stays in the inbox, recorded as skipped."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    owl = (FRAMES / "owl" / "RCNX1419.JPG").read_bytes()
    put(inbox / "cam1" / "IMG_0001.JPG", owl)
    (inbox / "cam1" / "alias.JPG").symlink_to("IMG_0001.JPG")
    (inbox / "cam2").mkdir()
    (inbox / "cam2" / "IMG_0001.JPG").symlink_to(Path("..", "cam1", "IMG_0001.JPG"))
    args = store_args(inbox, root, model=SHIPPED, model__cutoff=0.0)

    first = run_cli("run", "--once", *args)
    assert first.returncode == 0, outcome(first)

    kept = root / "kept" / "cam1" / "IMG_0001.JPG"
    assert not kept.is_symlink() and kept.read_bytes() == owl
    assert links_under(root) == []
    assert [r["path"] for r in rows(root)] == ["cam1/IMG_0001.JPG"]
    for rel in ("cam1/alias.JPG", "cam2/IMG_0001.JPG"):
        assert (inbox / rel).is_symlink(), f"{rel} was not left in place"
        assert len(lines_naming(first.stderr, rel)) == 1, first.stderr
        assert "symbolic link" in skipped(root)[rel]


def test_files_under_a_linked_sub_folder_are_reported_once_per_folder_and_not_judged(
    tmp_path: Path, run_cli: RunCli, store_args: StoreArgs
) -> None:
    """A sub-folder that is a link (out of the inbox, or to another camera's folder) is not walked:
    one line per such folder says its files are not judged, and a restart does not repeat it."""
    inbox, root, elsewhere = tmp_path / "inbox", tmp_path / "store", tmp_path / "elsewhere" / "cam9"
    put(elsewhere / "IMG_0001.JPG", (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes())
    put(elsewhere / "IMG_0002.JPG", (FRAMES / "speciesnet" / "blank.jpg").read_bytes())
    owl = (FRAMES / "owl" / "RCNX1419.JPG").read_bytes()
    put(inbox / "cam1" / "IMG_0001.JPG", owl)
    (inbox / "cam2").symlink_to(elsewhere)
    (inbox / "cam3").symlink_to("cam1")
    args = store_args(inbox, root, model=SHIPPED, model__cutoff=0.0)

    first = run_cli("run", "--once", *args)
    assert first.returncode == 0, outcome(first)
    again = run_cli("run", "--once", *args)
    assert again.returncode == 0, outcome(again)

    for folder, where in (("cam2", "outside the inbox"), ("cam3", "symbolic link")):
        said = [line for line in first.stderr.splitlines() if f" {folder} " in line or f"{folder}:" in line]
        assert len(said) == 1 and "folder" in said[0] and where in said[0], first.stderr
        assert not [line for line in again.stderr.splitlines() if f" {folder} " in line], again.stderr
        assert (inbox / folder).is_symlink()
    assert sorted(os.listdir(elsewhere)) == ["IMG_0001.JPG", "IMG_0002.JPG"]
    assert [r["path"] for r in rows(root)] == ["cam1/IMG_0001.JPG"]
    assert links_under(root) == []


def test_links_made_while_the_trap_watches_with_inotify_are_refused_too(tmp_path: Path) -> None:
    """The inotify path (no rescan for a minute): a link to a file and a linked sub-folder made while
    the trap runs are refused and recorded as skipped, and nothing is judged or stored."""
    import time

    inbox, root, private = tmp_path / "inbox", tmp_path / "store", tmp_path / "private"
    put(private / "owner.jpg", (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes())
    inbox.mkdir()
    with folder_loop(tmp_path, "source.watch=inotify") as loop, ThreadPoolExecutor(1) as pool:
        loop.once = True  # each step takes what is ready now, without waiting for the safety rescan
        loop.step(pool)
        (inbox / "IMG_0001.JPG").symlink_to(private / "owner.jpg")
        (inbox / "cam2").symlink_to(private)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(skipped(root)) < 2:
            loop.step(pool)
            time.sleep(0.05)
        loop.close_bursts(low_disk=False, flush=True)
    assert set(skipped(root)) == {"IMG_0001.JPG", "cam2"}, skipped(root)
    assert all("outside the inbox" in reason for reason in skipped(root).values())
    assert rows(root) == [] and links_under(root) == []
    assert (inbox / "IMG_0001.JPG").is_symlink() and (inbox / "cam2").is_symlink()


def test_the_store_never_moves_a_link_into_kept(tmp_path: Path) -> None:
    """Belt and braces under the source: a link that reached the store is refused, not stored."""
    inbox, root = tmp_path / "inbox", tmp_path / "store"
    put(tmp_path / "private" / "owner.jpg", (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes())
    inbox.mkdir()
    (inbox / "IMG_0001.JPG").symlink_to(tmp_path / "private" / "owner.jpg")
    with pytest.raises(OSError, match="symbolic link"):
        Store(root, inbox).move(
            "IMG_0001.JPG", "kept/IMG_0001.JPG", sha((tmp_path / "private" / "owner.jpg").read_bytes())
        )
    assert links_under(root) == [] and (inbox / "IMG_0001.JPG").is_symlink()


def test_a_thumbnail_is_never_made_through_a_link(tmp_path: Path) -> None:
    from firmware_app.events.thumbnail import make_thumbnail

    put(tmp_path / "private" / "owner.jpg", (FRAMES / "speciesnet" / "ocelot.jpg").read_bytes())
    (tmp_path / "IMG_0001.JPG").symlink_to(tmp_path / "private" / "owner.jpg")
    assert make_thumbnail(tmp_path / "private" / "owner.jpg", 160, 20_000) is not None  # the real file: yes
    assert make_thumbnail(tmp_path / "IMG_0001.JPG", 160, 20_000) is None
