"""Files that lie about who they are: a name and time reused for new bytes, an upload that stalls
half way and then finishes, a name that is not UTF-8. Real JPEGs, the shipped model, real SQLite;
the CLI as a subprocess where a whole run is the point, the loop itself where a test must stop it
between two steps (an upload that resumes at a chosen moment)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import FRAMES, TESTS
from PIL import Image

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
