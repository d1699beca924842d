"""Bad input gets a clear error and loses nothing.

A frame that cannot be classified is kept (moved to kept/, the error in the ledger), never deleted;
a store that cannot be written leaves frames in the inbox; bad config or model files stop the run
before anything is touched. Every message says what was wrong and where (file, key, value).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from camera_jpegs import VARIANTS
from conftest import FRAMES, MODELS, TINY_U8, cli_env
from PIL import Image

from firmware_app.app import build_trap
from firmware_app.classifiers import load_classifier
from firmware_app.config import load_config
from firmware_app.errors import LedgerUnavailable
from firmware_app.ledger import Ledger
from firmware_app.loops.base import LoopBase
from firmware_app.loops.folder import FolderLoop
from firmware_app.sources import Frame, Skipped
from firmware_app.sources.folder import FolderSource

RunCli = Callable[..., subprocess.CompletedProcess[str]]
StoreArgs = Callable[..., list[str]]
MakeInbox = Callable[..., Path]
Tmpfs = Callable[..., Path]

SMALL_FRAME = FRAMES / "wellington" / "11374_1-1.JPG"  # 224x224 baseline JPEG, 10 kB
NONBLANK_BURST = ("wellington", ["11374_1-1.JPG", "11374_2-1.JPG", "11374_3-1.JPG"])  # tiny_u8: >= 0.85
BLANK_BURST = ("wellington", ["1200_1-0.JPG", "1200_2-0.JPG", "1200_3-0.JPG"])  # tiny_u8: about 0.5
OLD_MTIME = 1_600_000_000.0  # far from make_inbox's bursts: a bad frame is a burst of its own


# -- building bad frames from real ones -------------------------------------------------------------
def sof_offset(data: bytes) -> int:
    """Offset of the first SOFn marker segment (FF C0..C3) of a JPEG."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pos = 2
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF, f"lost JPEG marker sync at {pos}"
        marker = data[pos + 1]
        if 0xC0 <= marker <= 0xC3:
            return pos
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise AssertionError("no SOF marker found")


def with_precision(data: bytes, bits: int, marker: int = 0xC0) -> bytes:
    """A real JPEG whose SOF says `bits` per sample (SOF0 baseline or SOF1 extended)."""
    out = bytearray(data)
    at = sof_offset(data)
    out[at + 1] = marker
    out[at + 4] = bits
    return bytes(out)


def with_size(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose SOF claims another size: a decompression bomb in 10 kB."""
    out = bytearray(data)
    at = sof_offset(data)
    out[at + 5 : at + 7] = height.to_bytes(2, "big")
    out[at + 7 : at + 9] = width.to_bytes(2, "big")
    return bytes(out)


def as_format(data: bytes, fmt: str, mode: str | None = None) -> bytes:
    image = Image.open(io.BytesIO(data))
    if mode is not None:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def real() -> bytes:
    return SMALL_FRAME.read_bytes()


# name -> (bytes of the frame, substrings its error must contain)
BAD_FRAMES: dict[str, tuple[Callable[[], bytes], list[str]]] = {
    "zero_bytes": (lambda: b"", ["empty file", "0 bytes"]),
    "truncated": (lambda: real()[: len(real()) // 2], ["truncated"]),
    "text_renamed": (lambda: b"this is a note from the field team, not a photo\n", ["not an image file"]),
    "png_renamed": (lambda: as_format(real(), "PNG"), ["PNG", "not a JPEG"]),
    "sof0_16bit": (lambda: with_precision(real(), 16), ["JPEG", "16-bit"]),
    "sof1_12bit": (lambda: with_precision(real(), 12, marker=0xC1), ["JPEG", "12-bit"]),
    "sof1_16bit": (lambda: with_precision(real(), 16, marker=0xC1), ["JPEG", "16-bit"]),
    "bomb_30000": (lambda: with_size(real(), 30000, 30000), ["30000x30000", "imaging.max_megapixels"]),
}


# -- helpers ----------------------------------------------------------------------------------------
def ledger_rows(store: Path) -> dict[str, sqlite3.Row]:
    """Ledger rows by inbox-relative path, read straight from SQLite (not through our code)."""
    db = sqlite3.connect(f"file:{store / 'ledger.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return {row["path"]: row for row in db.execute("SELECT * FROM frames")}
    finally:
        db.close()


def skipped_rows(store: Path) -> dict[str, sqlite3.Row]:
    db = sqlite3.connect(f"file:{store / 'ledger.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return {row["path"]: row for row in db.execute("SELECT * FROM skipped")}
    finally:
        db.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: to prove nothing was moved, changed or deleted."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def put(path: Path, data: bytes, mtime: float = OLD_MTIME) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def outcome(done: subprocess.CompletedProcess[str]) -> str:
    return f"rc {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def assert_kept(store: Path, rel: str, original: bytes, error_has: list[str]) -> sqlite3.Row:
    """The fail-open contract for one frame: in kept/, byte-identical, recorded as failed_kept."""
    kept = store / "kept" / rel
    assert kept.is_file(), f"{rel} is not in {store / 'kept'}: a frame that failed must be kept"
    assert kept.read_bytes() == original, f"{kept} differs from the original frame"
    rows = ledger_rows(store)
    assert rel in rows, f"no ledger row for {rel}; rows: {list(rows)}"
    row = rows[rel]
    got = {k: row[k] for k in ("decision", "action", "state", "score")}
    assert got == {"decision": "unknown", "action": "failed_kept", "state": "done", "score": None}, got
    assert row["error"], f"{rel}: empty error in the ledger"
    for part in error_has:
        assert part in row["error"], f"{rel}: ledger error {row['error']!r} does not mention {part!r}"
    return row


def run_once(run_cli: RunCli, store_args: StoreArgs, **sets: object) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--once", *store_args(**{"store__audit_rate": 0, **sets}))


# -- frames that cannot be classified are kept ------------------------------------------------------
@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frame_is_kept_with_its_error(
    case: str, tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    build, error_has = BAD_FRAMES[case]
    data = build()
    inbox = make_inbox(bursts=[NONBLANK_BURST])
    rel = f"bad/{case}.jpg"
    put(inbox / rel, data)
    store = tmp_path / "store"

    started = time.monotonic()
    done = run_once(run_cli, store_args)
    elapsed = time.monotonic() - started

    assert done.returncode == 0, outcome(done)
    assert "Traceback" not in done.stderr, outcome(done)
    assert not (inbox / rel).exists(), f"{rel} is still in the inbox after run --once"
    row = assert_kept(store, rel, data, error_has)
    warning = next((line for line in done.stderr.splitlines() if rel in line and "WARNING" in line), None)
    assert warning is not None, f"no warning naming {rel} in the log:\n{done.stderr}"
    assert row["error"] in warning and "kept" in warning, f"log line does not give the error: {warning}"
    # The good burst next to it went its normal way.
    for name in NONBLANK_BURST[1]:
        assert (store / "kept" / "wellington" / name).is_file(), f"wellington/{name} not kept beside the bad frame"
    if case == "bomb_30000":
        assert elapsed < 15, f"a 30000x30000 header took {elapsed:.1f} s to refuse: was it decoded?"


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_classify_json_reports_the_error_and_touches_nothing(case: str, tmp_path: Path, run_cli: RunCli) -> None:
    build, error_has = BAD_FRAMES[case]
    data = build()
    path = put(tmp_path / "probe" / f"{case}.jpg", data)

    done = run_cli("classify", "--json", "--model", TINY_U8, path)

    assert done.returncode == 0, outcome(done)
    assert "Traceback" not in done.stderr, outcome(done)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line:\n{done.stdout}"
    result = json.loads(lines[0])
    assert result["path"] == str(path)
    assert result["score"] is None and result["blank"] is None, result
    assert result["error"], result
    for part in error_has:
        assert part in result["error"], f"error {result['error']!r} does not mention {part!r}"
    assert path.read_bytes() == data, "classify changed or removed the file"


def test_bomb_is_refused_without_allocating(tmp_path: Path) -> None:
    """The size check comes before any decode: a 900 MP header costs no more memory than a small frame."""
    path = put(tmp_path / "bomb.jpg", with_size(real(), 30000, 30000))
    probe = (
        "import sys\n"
        "from firmware_app.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        # VmHWM is this process's own peak: ru_maxrss would carry the parent's peak across exec.
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
        "print('MAXRSS_KB', hwm, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    cmd = [sys.executable, "-c", probe, "classify", "--json", "--model", str(TINY_U8), str(path)]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=cli_env(), check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, outcome(done)
    assert "imaging.max_megapixels" in done.stdout and "30000x30000" in done.stdout, done.stdout
    peak_mb = int(done.stderr.split("MAXRSS_KB")[1].split()[0]) / 1024
    # Decoding 30000x30000 RGB needs 2.7 GB (42 MB even at 1/8 scale); the interpreter itself is ~100 MB.
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB while refusing a bomb: the frame was decoded"
    assert elapsed < 15, f"refusing a bomb took {elapsed:.1f} s"


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_greyscale_and_cmyk_jpegs_are_scored_normally(
    mode: str, tmp_path: Path, run_cli: RunCli, store_args: StoreArgs
) -> None:
    data = as_format(real(), "JPEG", mode)
    assert Image.open(io.BytesIO(data)).mode == mode, "fixture did not come out in the wanted mode"
    inbox = tmp_path / "inbox"
    rel = f"night/{mode}.jpg"
    put(inbox / rel, data)

    probe = run_cli("classify", "--json", "--model", TINY_U8, inbox / rel, check_rc=0)
    assert '"error": null' in probe.stdout and '"score": null' not in probe.stdout, probe.stdout

    done = run_once(run_cli, store_args)
    assert done.returncode == 0, outcome(done)
    row = ledger_rows(tmp_path / "store")[rel]
    assert row["error"] is None, f"{mode} JPEG failed: {row['error']}"
    assert row["score"] is not None and 0.0 <= row["score"] <= 1.0, row["score"]
    assert row["decision"] in ("blank", "nonblank") and row["state"] == "done", dict(row)


NO_TIME_VARIANTS = {
    "jfif_without_exif",
    "zero_datetime_original",
    "blank_datetime_original",
    "garbage_datetime_original",
    "junk_exif_block",
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_real_camera_jpeg_variant_is_scored_like_the_plain_frame(
    variant: str, tmp_path: Path, run_cli: RunCli, store_args: StoreArgs
) -> None:
    """MPO (Bushnell), data after EOI, big thumbnails, JFIF only, broken dates: scored, not kept unscored."""
    plain = (FRAMES / "owl" / "RCNX1419.JPG").read_bytes()
    data = VARIANTS[variant](plain)
    inbox = tmp_path / "inbox"
    put(inbox / "cam" / "plain.JPG", plain)
    put(inbox / "cam" / "variant.JPG", data)

    probe = run_cli(
        "classify", "--json", "--model", TINY_U8, inbox / "cam" / "variant.JPG", inbox / "cam" / "plain.JPG"
    )
    assert probe.returncode == 0 and "Traceback" not in probe.stderr, outcome(probe)
    got, want = (json.loads(line) for line in probe.stdout.splitlines())
    assert got["error"] is None, got
    assert got["score"] == want["score"], (got, want)

    done = run_once(run_cli, store_args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, outcome(done)
    rows = ledger_rows(tmp_path / "store")
    row = rows["cam/variant.JPG"]
    assert row["error"] is None, f"{variant}: {row['error']}"
    assert row["score"] == rows["cam/plain.JPG"]["score"], dict(row)
    assert row["decision"] in ("blank", "nonblank") and row["state"] == "done", dict(row)
    assert row["time_source"] == ("mtime" if variant in NO_TIME_VARIANTS else "exif"), dict(row)
    if variant in NO_TIME_VARIANTS:  # the time falls back to the file's
        assert row["captured_ts"] == OLD_MTIME, dict(row)


def test_png_named_png_is_skipped_and_left_in_place(
    tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    inbox = make_inbox(bursts=[NONBLANK_BURST])
    data = as_format(real(), "PNG")
    png = put(inbox / "cam" / "snapshot.png", data)

    done = run_once(run_cli, store_args)

    assert done.returncode == 0, outcome(done)
    assert png.is_file() and png.read_bytes() == data, "a .png must stay in the inbox untouched"
    store = tmp_path / "store"
    skipped = skipped_rows(store)
    assert "cam/snapshot.png" in skipped, f"not recorded in the skipped table: {list(skipped)}"
    assert ".png" in skipped["cam/snapshot.png"]["reason"], skipped["cam/snapshot.png"]["reason"]
    assert "cam/snapshot.png" not in ledger_rows(store), "a skipped file must not become a frame row"
    assert "cam/snapshot.png skipped" in done.stderr, done.stderr
    assert not list(store.rglob("snapshot.png")), "the .png was copied into the store"

    again = run_once(run_cli, store_args)  # recorded once, not re-logged on every scan
    assert again.returncode == 0, outcome(again)
    assert "cam/snapshot.png skipped" not in again.stderr, again.stderr
    assert png.read_bytes() == data


# -- a frame vanishing while we work on it ----------------------------------------------------------
def make_loop(tmp_path: Path, once: bool = True) -> tuple[FolderLoop, Ledger]:
    config = load_config(
        None,
        [
            f"source.inbox={tmp_path / 'inbox'}",
            f"store.root={tmp_path / 'store'}",
            "source.settle_s=0",
            "source.watch=poll",
            "store.audit_rate=0",
            "store.min_free_mb=0",
            "context.enabled=false",
        ],
    )
    trap = build_trap(config, once=once, classifier=load_classifier(TINY_U8))
    assert isinstance(trap.loop, FolderLoop)
    return trap.loop, trap.ledger


@pytest.mark.parametrize("when", ["while_read", "after_listing"])
def test_frame_vanishing_mid_read_is_a_warning_not_a_crash(
    when: str,
    tmp_path: Path,
    make_inbox: MakeInbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    victim_rel = "wellington/11374_2-1.JPG"
    victim = inbox / victim_rel
    if when == "while_read":
        import firmware_app.loops.folder as folder_loop

        read_frame = folder_loop.read_frame

        def vanishing_read(path: Path) -> tuple[bytes, os.stat_result]:
            if path == victim:
                path.unlink()  # another process (an rsync, a person) takes it as we open it
            return read_frame(path)

        monkeypatch.setattr(folder_loop, "read_frame", vanishing_read)
    else:
        ready = FolderSource.ready

        def vanishing_ready(self: FolderSource, timeout: float) -> tuple[list[Frame], list[Skipped]]:
            frames, skipped = ready(self, timeout)
            if any(f.path == victim for f in frames):
                victim.unlink()
            return frames, skipped

        monkeypatch.setattr(FolderSource, "ready", vanishing_ready)

    pipeline, ledger = make_loop(tmp_path)
    with caplog.at_level(logging.WARNING):
        try:
            summary = pipeline.run()
        finally:
            ledger.close()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(victim_rel in m and "vanished" in m for m in warnings), f"no warning naming {victim_rel}: {warnings}"
    assert not summary.failures, summary.failures
    rows = ledger_rows(tmp_path / "store")
    assert victim_rel not in rows, "a frame that was never read got a ledger row"
    store = tmp_path / "store"
    for name in ("11374_1-1.JPG", "11374_3-1.JPG"):
        assert rows[f"wellington/{name}"]["state"] == "done", dict(rows[f"wellington/{name}"])
        assert (store / "kept" / "wellington" / name).read_bytes() == (FRAMES / "wellington" / name).read_bytes()
    for name in BLANK_BURST[1]:
        assert rows[f"wellington/{name}"]["action"] == "deleted", dict(rows[f"wellington/{name}"])
        assert not (inbox / "wellington" / name).exists()


# -- the store cannot be written --------------------------------------------------------------------
def test_read_only_kept_leaves_frames_in_inbox_then_retry_moves_them(
    tmp_path: Path, make_inbox: MakeInbox, tmpfs: Tmpfs, run_cli: RunCli, store_args: StoreArgs
) -> None:
    inbox = make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    bad = BAD_FRAMES["truncated"][0]()
    put(inbox / "bad.jpg", bad)  # at the inbox top: goes straight into kept/ (a link, not a mkdir)
    store = tmp_path / "store"
    kept = tmpfs("store/kept", size="1m", readonly=True)
    before = snapshot(inbox)
    must_stay = ["bad.jpg", *(f"wellington/{n}" for n in NONBLANK_BURST[1])]

    done = run_once(run_cli, store_args)

    assert done.returncode == 1, f"a run that could not store frames must exit 1\n{outcome(done)}"
    assert "Traceback" not in done.stderr, outcome(done)
    assert "Read-only file system" in done.stderr, outcome(done)
    assert str(kept) in done.stderr, f"the error does not name {kept}:\n{done.stderr}"
    for line in (ln for ln in done.stderr.splitlines() if "Read-only" in ln):
        assert str(inbox) not in line, f"the inbox is not the read-only side: {line}"
    after = snapshot(inbox)
    for rel in must_stay:
        assert after.get(rel) == before[rel], f"{rel} was lost or changed while kept/ was read-only"
    rows = ledger_rows(store)
    for rel in must_stay:
        assert rows[rel]["state"] != "done", f"{rel} marked done but it is still in the inbox: {dict(rows[rel])}"
        assert "Read-only file system" in (rows[rel]["store_error"] or ""), dict(rows[rel])
    assert "truncated" in rows["bad.jpg"]["error"], f"the decode error was lost: {rows['bad.jpg']['error']!r}"
    for name in BLANK_BURST[1]:
        rel = f"wellington/{name}"
        assert rel not in after, f"blank {rel} should still be discarded normally"
        assert (rows[rel]["action"], rows[rel]["state"]) == ("deleted", "done"), dict(rows[rel])

    subprocess.run(["mount", "-o", "remount,rw", str(kept)], check=True)
    again = run_once(run_cli, store_args)

    assert again.returncode == 0, outcome(again)
    rows = ledger_rows(store)
    for rel in must_stay:
        assert not (inbox / rel).exists(), f"{rel} still in the inbox after the retry"
        assert (kept / rel).read_bytes() == before[rel], f"kept/{rel} differs from the original"
        assert rows[rel]["state"] == "done", dict(rows[rel])
        assert rows[rel]["store_error"] is None, f"stale store error on a moved frame: {dict(rows[rel])}"
    assert rows["bad.jpg"]["action"] == "failed_kept" and "truncated" in rows["bad.jpg"]["error"], dict(rows["bad.jpg"])
    assert rows["wellington/11374_1-1.JPG"]["error"] is None, dict(rows["wellington/11374_1-1.JPG"])


def fill(folder: Path) -> None:
    """Write until the file system says it is full."""
    fd = os.open(folder / "filler.bin", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    stats = os.statvfs(folder)
    assert stats.f_bavail == 0, f"{folder} still has {stats.f_bavail} free blocks"


@pytest.mark.parametrize("ledger_exists", [False, True], ids=["new_ledger", "existing_ledger"])
def test_full_disk_stops_the_run_and_leaves_every_frame(
    ledger_exists: bool,
    tmp_path: Path,
    make_inbox: MakeInbox,
    tmpfs: Tmpfs,
    run_cli: RunCli,
    store_args: StoreArgs,
) -> None:
    store = tmpfs("store", size="256k")
    if ledger_exists:  # the card filled up after the ledger was made
        (tmp_path / "empty").mkdir()
        first = run_once(run_cli, store_args, inbox=tmp_path / "empty", store__min_free_mb=0)
        assert first.returncode == 0 and (store / "ledger.db").is_file(), outcome(first)
    inbox = make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    put(inbox / "bad.jpg", b"")
    before = snapshot(inbox)
    fill(store)

    done = run_once(run_cli, store_args)

    assert done.returncode != 0, f"a run with a full ledger disk must fail\n{outcome(done)}"
    assert "Traceback" not in done.stderr, outcome(done)
    ledger = str(store / "ledger.db")
    line = next((ln for ln in done.stderr.splitlines() if ledger in ln), "")
    assert "disk is full" in line, f"the message must name the ledger and say the disk is full:\n{done.stderr}"
    assert "untouched" in done.stderr, f"the message must say the frames are left alone:\n{done.stderr}"
    assert snapshot(inbox) == before, "frames were moved, changed or deleted although nothing could be recorded"
    assert not (store / "kept").exists() or not any((store / "kept").rglob("*.*")), "something reached kept/"


def test_disk_filling_up_mid_run_stops_before_anything_moves(
    tmp_path: Path, make_inbox: MakeInbox, tmpfs: Tmpfs
) -> None:
    """The ledger opened fine, then the card filled: the first frame that cannot be recorded stops
    the run (LedgerUnavailable, which `run` turns into exit 1) and no file is moved or deleted."""
    store = tmpfs("store", size="512k")
    inbox = make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    before = snapshot(inbox)
    pipeline, ledger = make_loop(tmp_path)
    try:
        fill(store)
        with pytest.raises(LedgerUnavailable) as caught:
            pipeline.run()
    finally:
        ledger.close()
    message = str(caught.value)
    for part in (str(store / "ledger.db"), "disk is full", "left untouched", "store.min_free_mb"):
        assert part in message, f"message does not contain {part!r}: {message}"
    assert snapshot(inbox) == before, "frames were moved or deleted although the ledger could not record them"


def test_nearly_full_disk_deletes_blanks_instead_of_quarantining(
    tmp_path: Path, make_inbox: MakeInbox, tmpfs: Tmpfs, run_cli: RunCli, store_args: StoreArgs
) -> None:
    store = tmpfs("store", size="8m")
    inbox = make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    bad = b"not a jpeg at all"
    put(inbox / "bad.jpg", bad)
    before = snapshot(inbox)

    done = run_once(run_cli, store_args, store__discard="quarantine", store__min_free_mb=100)

    assert done.returncode == 0, outcome(done)
    assert "disk nearly full" in done.stderr and "store.min_free_mb" in done.stderr, done.stderr
    rows = ledger_rows(store)
    for name in BLANK_BURST[1]:
        rel = f"wellington/{name}"
        assert rows[rel]["action"] == "deleted", f"{rel}: {rows[rel]['action']} while the disk is nearly full"
        assert not (inbox / rel).exists() and not (store / "quarantine" / rel).exists()
    for name in NONBLANK_BURST[1]:
        rel = f"wellington/{name}"
        assert (store / "kept" / rel).read_bytes() == before[rel], f"{rel} not kept"
        assert (rows[rel]["action"], rows[rel]["state"]) == ("kept", "done"), dict(rows[rel])
    assert_kept(store, "bad.jpg", bad, ["not an image file"])


# -- bad config: exit 2 before anything is touched --------------------------------------------------
CONFIG_CASES: dict[str, tuple[str | None, list[str], list[str]]] = {
    # name: (TOML text or None, extra CLI args, substrings the message must contain; {file} = the TOML)
    "discard_trash": ('[store]\ndiscard = "trash"\n', [], ["{file}", "store.discard", "'trash'", "quarantine"]),
    "threads_zero": ("[model]\nthreads = 0\n", [], ["{file}", "model.threads", "0", "at least 1"]),
    "unknown_key": ('[store]\nroot_dir = "/srv"\n', [], ["{file}", "unknown key", "store.root_dir"]),
    "unknown_section": ("[stor]\ndiscard = 'delete'\n", [], ["{file}", "unknown section", "[stor]"]),
    "bad_toml": ("[store\ndiscard = \n", [], ["{file}", "not valid TOML", "line 1"]),
    "set_bad_value": (None, ["--set", "store.discard=trash"], ["--set store.discard=trash", "store.discard", "trash"]),
    "set_not_number": (None, ["--set", "model.threads=two"], ["model.threads", "'two'", "number"]),
    "set_no_key": (None, ["--set", "discard"], ["--set", "'discard'", "section.key=value"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_exits_2_naming_key_value_and_file(
    case: str, tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    text, extra, wanted = CONFIG_CASES[case]
    inbox = make_inbox(bursts=[NONBLANK_BURST])
    before = snapshot(inbox)
    args: list[str | Path] = ["run", "--once", *store_args(), *extra]
    config = tmp_path / "etc" / "config.toml"
    if text is not None:
        config.parent.mkdir(parents=True)
        config.write_text(text)
        args += ["--config", config]

    done = run_cli(*args)

    assert done.returncode == 2, outcome(done)
    assert "Traceback" not in done.stderr, outcome(done)
    assert done.stderr.startswith("blankfilter: error: "), outcome(done)
    for part in wanted:
        part = part.replace("{file}", str(config))
        assert part in done.stderr, f"message does not contain {part!r}:\n{done.stderr}"
    assert snapshot(inbox) == before
    assert not (tmp_path / "store").exists(), "the store was created despite a bad config"


# -- bad model files: exit 2 before anything is touched ---------------------------------------------
def text_as_tflite(folder: Path) -> Path:
    model = folder / "notamodel.tflite"
    model.write_text("this is a README, not a model\n" * 4)
    (folder / "notamodel.json").write_text((MODELS / "tiny_u8.json").read_text())
    return model


def model_without_card(folder: Path) -> Path:
    model = folder / "lonely.tflite"
    model.write_bytes(TINY_U8.read_bytes())
    return model


MODEL_CASES: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "not_tflite": (text_as_tflite, ["not a TFLite model", "TFL3"]),
    "no_card": (model_without_card, ["no model card", "lonely.json"]),
    "bad_rank": (lambda _: MODELS / "bad_rank.tflite", ["input shape", "[1, height, width, 3]"]),
}


@pytest.mark.parametrize("command", ["run", "classify"])
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_exits_2_naming_the_file(
    case: str, command: str, tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, store_args: StoreArgs
) -> None:
    build, wanted = MODEL_CASES[case]
    (tmp_path / "models").mkdir()
    model = build(tmp_path / "models")
    inbox = make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    before = snapshot(inbox)

    if command == "run":
        done = run_cli("run", "--once", *store_args(model=model))
    else:
        done = run_cli("classify", "--json", "--model", model, inbox)

    assert done.returncode == 2, outcome(done)
    assert "Traceback" not in done.stderr, outcome(done)
    assert str(model) in done.stderr, f"the message does not name {model}:\n{done.stderr}"
    for part in wanted:
        assert part in done.stderr, f"message does not contain {part!r}:\n{done.stderr}"
    assert done.stdout == "", f"classify printed results with an unusable model: {done.stdout}"
    assert snapshot(inbox) == before, "the inbox changed although the model could not be loaded"
    assert not (tmp_path / "store" / "ledger.db").exists(), "a ledger was written although the model is unusable"


def test_no_model_at_all_says_how_to_get_one(
    tmp_path: Path, make_inbox: MakeInbox, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_models = tmp_path / "models"
    empty_models.mkdir()
    monkeypatch.setenv("BLANKFILTER_MODELS_DIR", str(empty_models))  # as if nothing had shipped
    inbox = make_inbox(bursts=[NONBLANK_BURST])
    before = snapshot(inbox)

    done = run_cli(
        "run", "--once",
        "--set", f"source.inbox={inbox}",
        "--set", f"store.root={tmp_path / 'store'}",
        "--set", "source.settle_s=0",
        "--set", 'model.path=""',
    )  # fmt: skip

    assert done.returncode == 2, outcome(done)
    assert "Traceback" not in done.stderr, outcome(done)
    for part in ("no model in", str(empty_models), "--model", "model.path", "blankfilter convert"):
        assert part in done.stderr, f"message does not contain {part!r}:\n{done.stderr}"
    assert snapshot(inbox) == before
    assert not (tmp_path / "store" / "ledger.db").exists()


def test_daemon_waits_out_a_full_disk_then_carries_on(
    tmp_path: Path, make_inbox: MakeInbox, tmpfs: Tmpfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon does not exit into a restart loop when the ledger's disk is full: it logs, waits
    (with backoff) and processes the inbox once space returns, without losing a frame."""
    monkeypatch.setattr(LoopBase, "ledger_retry_min_s", 0.2)
    store = tmpfs("store", size="512k")
    inbox = make_inbox(bursts=[NONBLANK_BURST, BLANK_BURST])
    before = snapshot(inbox)
    made: list[FolderLoop] = []
    ready, go = threading.Event(), threading.Event()

    def daemon() -> None:  # SQLite objects stay in the thread that made them, as in the real daemon
        pipeline, ledger = make_loop(tmp_path, once=False)  # the ledger opens while there is still space
        made.append(pipeline)
        ready.set()
        go.wait(10)
        try:
            pipeline.run()
        finally:
            ledger.close()

    worker = threading.Thread(target=daemon, daemon=True)
    worker.start()
    assert ready.wait(10)
    pipeline = made[0]
    fill(store)  # then the card fills up
    go.set()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert worker.is_alive(), "the daemon gave up on a full disk instead of waiting"
            time.sleep(0.1)
        assert snapshot(inbox) == before, "something moved while nothing could be recorded"
        (store / "filler.bin").unlink()  # space comes back
        deadline = time.monotonic() + 30
        while any(inbox.rglob("*.JPG")) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        pipeline.stop()
        worker.join(timeout=10)
    assert not worker.is_alive(), "SIGTERM-style stop did not end the daemon"
    kept = snapshot(store / "kept")
    for name in NONBLANK_BURST[1]:
        assert kept[f"wellington/{name}"] == before[f"wellington/{name}"]
    assert not any(inbox.rglob("*.JPG")), "the inbox was not processed after space came back"
