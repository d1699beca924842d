"""The guarantees both loops give, one test body each, run over the folder loop and the camera loop:
the card never fills (the disk guard and the quarantine caps), an unwritable ledger is waited out,
and a crash mid-work loses and duplicates nothing. Real model (tiny_u8), real SQLite, real files;
the camera and its trigger are stand-ins (no hardware here) behind the same interfaces."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FRAMES, TINY_U8
from PIL import Image

from firmware_app.actions import Action, State, Verdict
from firmware_app.app import Trap, build_trap
from firmware_app.classifiers import load_classifier
from firmware_app.config import load_config
from firmware_app.errors import LedgerUnavailable
from firmware_app.hashing import sha256_file
from firmware_app.ledger import Decision, Ledger, NewFrame
from firmware_app.loops.base import LoopBase

KINDS = ("folder", "camera")
NONBLANK = ["wellington/11374_1-1.JPG", "wellington/11374_2-1.JPG", "wellington/11374_3-1.JPG"]  # tiny_u8 >= 0.85
BLANK = ["wellington/1200_1-0.JPG", "wellington/1200_2-0.JPG", "wellington/1200_3-0.JPG"]  # about 0.5
STORE_FOLDERS = ("kept", "audit", "quarantine", "blank")
TINY_CUTOFF = 0.85  # the tiny fixture model's card cutoff: its scale of "may hold an animal"


class ScriptedCamera:
    """The Camera interface, capturing the given fixture frames in turn."""

    name = "cam0"

    def __init__(self, frames: list[str]) -> None:
        self.frames = [np.asarray(Image.open(FRAMES / f).convert("RGB")) for f in frames]
        self.taken = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def lores(self) -> np.ndarray:
        return np.zeros((24, 32), np.uint8)

    def capture(self) -> np.ndarray:
        frame = self.frames[self.taken % len(self.frames)]
        self.taken += 1
        return frame


class Pulses:
    """The Trigger interface: fires `count` times, then stays quiet."""

    def __init__(self, count: int) -> None:
        self.left = count

    def wait(self, timeout: float) -> bool:
        if self.left <= 0:
            time.sleep(min(timeout, 0.05))
            return False
        self.left -= 1
        return True

    def close(self) -> None: ...


@dataclass
class Setup:
    kind: str
    tmp: Path
    bursts: list[list[str]]

    @property
    def store(self) -> Path:
        return self.tmp / "store"

    @property
    def inbox(self) -> Path:
        return self.tmp / "inbox"

    def config_sets(self, **sets: Any) -> list[str]:
        base = {"source.inbox": self.inbox, "store.root": self.store, "source.settle_s": 0, "source.watch": "poll",
                "source.poll_s": 0.2, "store.min_free_mb": 0, "store.audit_rate": 0, "context.enabled": "false",
                "camera.burst_frames": 3, "camera.burst_interval_s": 0, "camera.cooldown_s": 0}  # fmt: skip
        if self.kind == "camera":
            base["source.kind"] = "opencv"
        base |= {k.replace("__", "."): v for k, v in sets.items()}
        return [f"{k}={v}" for k, v in base.items()]

    def trap(self, once: bool = True, **sets: Any) -> Trap:
        """The trap as `blankfilter run` builds it, over the fixture bursts."""
        config = load_config(None, self.config_sets(**sets))
        classifier = load_classifier(TINY_U8, threads=1)
        if self.kind == "folder":
            for b, burst in enumerate(self.bursts):
                for i, rel in enumerate(burst):
                    dest = self.inbox / f"b{b}" / Path(rel).name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not dest.exists():
                        shutil.copyfile(FRAMES / rel, dest)
                        os.utime(dest, (1_700_000_000 + 600 * b + i,) * 2)
            return build_trap(config, once=once, classifier=classifier)
        frames = [rel for burst in self.bursts for rel in burst]
        camera = ScriptedCamera(frames)
        pulses = Pulses(len(self.bursts))
        return build_trap(config, max_bursts=len(self.bursts), classifier=classifier, camera=camera,
                          triggers=(pulses, None))  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(self.store / "ledger.db")
        db.row_factory = sqlite3.Row
        out = [dict(r) for r in db.execute("SELECT * FROM frames ORDER BY id")]
        db.close()
        return out


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    yield Setup(request.param, tmp_path, [NONBLANK, BLANK])


def run(trap: Trap) -> None:
    try:
        trap.loop.run()
    finally:
        trap.close()


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- the card never fills ---------------------------------------------------------------------------
def test_under_the_free_space_floor_blanks_are_not_kept_quarantined_or_audited(setup: Setup) -> None:
    # A floor no card meets: the disk guard says "low" from the first pass on.
    run(setup.trap(store__discard="quarantine", store__audit_rate=1.0, store__min_free_mb=10**9))
    rows = setup.rows()
    blank = [r for r in rows if r["decision"] == Verdict.BLANK]
    kept = [r for r in rows if r["decision"] == Verdict.NONBLANK]
    assert len(blank) == 3 and len(kept) == 3
    gone = Action.DELETED if setup.kind == "folder" else Action.NOT_WRITTEN
    assert {r["action"] for r in blank} == {gone}
    assert {r["action"] for r in kept} == {Action.KEPT}
    assert files_in(setup.store / "quarantine") == [] and files_in(setup.store / "audit") == []
    assert len(files_in(setup.store / "kept")) == 3  # the animals are still written


def test_quarantine_caps_are_enforced_whatever_the_source(setup: Setup) -> None:
    setup.store.mkdir(parents=True)
    old = setup.store / "quarantine" / "old" / "x.jpg"
    old.parent.mkdir(parents=True)
    shutil.copyfile(FRAMES / BLANK[0], old)
    ledger = Ledger(setup.store / "ledger.db")
    frame_id = ledger.add(NewFrame("old/x.jpg", "0" * 64, old.stat().st_size, None, 0.0, "mtime", None, 0.1, 1.0,
                                   None, None, "tiny_u8", "0"))  # fmt: skip
    ledger.decide([Decision(frame_id, "old", Verdict.BLANK, Action.QUARANTINED, "quarantine/old/x.jpg", 0.85)])
    ledger.done(frame_id)
    forty_days_ago = (datetime.now(UTC) - timedelta(days=40)).isoformat(timespec="seconds")
    ledger.db.execute("UPDATE frames SET done_at = ? WHERE id = ?", (forty_days_ago, frame_id))
    ledger.close()

    run(setup.trap(store__discard="quarantine", store__quarantine_max_days=30))
    rows = {r["id"]: r for r in setup.rows()}
    assert rows[frame_id]["action"] == Action.QUARANTINE_EXPIRED and not old.exists()
    new_blanks = [r for r in rows.values() if r["decision"] == Verdict.BLANK and r["id"] != frame_id]
    assert len(new_blanks) == 3 and {r["action"] for r in new_blanks} == {Action.QUARANTINED}
    assert all((setup.store / r["dest"]).is_file() for r in new_blanks)


# -- an unwritable ledger -----------------------------------------------------------------------------
def test_an_unwritable_ledger_is_waited_out_and_nothing_is_lost(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(LoopBase, "ledger_retry_min_s", 0.05)
    # The first two writes of new frames fail as on a full card; then space comes back.
    method = "add" if setup.kind == "folder" else "record_captured"
    real, failures = getattr(Ledger, method), [2]

    def full_then_fine(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise LedgerUnavailable(f"cannot write the ledger {self.path} (database or disk is full)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, method, full_then_fine)
    made: list[Trap] = []

    def daemon() -> None:  # SQLite objects stay in the thread that made them, as in the real daemon
        made.append(setup.trap(once=False))
        run(made[0])

    worker = threading.Thread(target=daemon, daemon=True)
    with caplog.at_level("ERROR"):
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.is_alive():
            if setup.kind == "folder" and made and len(files_in(setup.inbox)) == 0:
                break
            time.sleep(0.05)
        made[0].loop.stop()
        worker.join(timeout=20)
    assert not worker.is_alive()
    assert failures == [0] and any("Retrying in" in r.getMessage() for r in caplog.records)
    rows = setup.rows()
    assert len(rows) == 6 and {r["state"] for r in rows} == {State.DONE}
    assert sorted(r["decision"] for r in rows) == [Verdict.BLANK] * 3 + [Verdict.NONBLANK] * 3


# -- a crash mid-work ---------------------------------------------------------------------------------
class PowerCut(BaseException):
    """Not an Exception: nothing in a loop may catch it, as nothing survives a power cut."""


def test_a_crash_mid_burst_replays_without_loss_or_duplicates(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The power goes while the kept burst's second frame is being stored; the next start finishes
    the work. Every recorded frame's file is where the ledger says, with its bytes; no temporary
    file survives; no frame is recorded twice."""
    from firmware_app.store import Store

    name = "move" if setup.kind == "folder" else "write_new"
    real, calls = getattr(Store, name), []

    def cut_on_second(self: Store, *args: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:
            if name == "write_new":  # half a file on the card, as a cut mid-write leaves it
                (self.root / "kept" / "cam0").mkdir(parents=True, exist_ok=True)
                (self.root / "kept" / "cam0" / ".half.jpg.partial").write_bytes(b"\xff\xd8")
            raise PowerCut
        return real(self, *args)

    monkeypatch.setattr(Store, name, cut_on_second)
    trap = setup.trap(store__discard="quarantine")
    with pytest.raises(PowerCut):
        trap.loop.run()
    trap.close()
    monkeypatch.undo()

    if setup.kind == "folder":
        run(setup.trap(store__discard="quarantine"))  # the next start: replay, then the rest of the inbox
    else:  # a camera's burst only lived in memory: the next start takes new bursts
        setup.bursts = [BLANK, NONBLANK]
        run(setup.trap(store__discard="quarantine"))
    rows = setup.rows()
    assert all(r["state"] == State.DONE for r in rows)
    assert len({(r["path"], r["sha256"]) for r in rows}) == len(rows)
    stored = [p for folder in STORE_FOLDERS for p in files_in(setup.store / folder)]
    assert not [p for p in stored if p.name.endswith(".partial")]
    for r in rows:
        if r["dest"]:
            assert sha256_file(setup.store / r["dest"]) == r["sha256"], r["dest"]
    recorded = {setup.store / r["dest"] for r in rows if r["dest"]}
    if setup.kind == "folder":  # every frame accounted for: in the store with its row, nothing left behind
        assert files_in(setup.inbox) == [] and set(stored) == recorded and len(rows) == 6
    else:  # the cut burst is lost (memory only); its first frame may sit unrecorded on the card
        assert len(rows) == 6 and recorded <= set(stored)


def test_both_loops_are_built_by_the_composition_root(setup: Setup) -> None:
    trap = setup.trap()
    expected = "FolderLoop" if setup.kind == "folder" else "CameraLoop"
    assert type(trap.loop).__name__ == expected and trap.loop.judge is trap.judge
    trap.close()


# -- the camera covers the day's light itself -------------------------------------------------------
@pytest.mark.parametrize(("scene", "taken"), [(BLANK, True), (NONBLANK, False)], ids=["empty", "animal"])
def test_a_quiet_camera_takes_its_own_references_but_never_of_an_animal(
    tmp_path: Path, scene: list[str], taken: bool
) -> None:
    setup = Setup("camera", tmp_path, [scene])
    # The tiny classifier's scale: these animals score over 0.85, these empty frames under it.
    config = load_config(None, setup.config_sets(context__enabled="true", context__quiet_reference_s=0.2,
                                                 context__quiet_after_trigger_s=0,
                                                 context__reference_max_p=TINY_CUTOFF))  # fmt: skip
    made: list[Trap] = []

    def daemon() -> None:
        made.append(build_trap(config, classifier=load_classifier(TINY_U8, threads=1), camera=ScriptedCamera(scene),
                               triggers=(Pulses(0), None)))  # fmt: skip
        run(made[0])

    worker = threading.Thread(target=daemon, daemon=True)
    worker.start()
    time.sleep(1.5)  # several quiet periods, no trigger at all
    made[0].loop.stop()
    worker.join(timeout=20)
    summary = made[0].loop.summary  # type: ignore[attr-defined]
    db = sqlite3.connect(setup.store / "references.db")
    refs = db.execute("SELECT origin, source FROM refs").fetchall()
    crops = db.execute("SELECT camera FROM views").fetchall()
    db.close()
    assert setup.rows() == []  # a reference is not a frame: nothing written, nothing in the ledger
    if taken:
        assert refs and all(o == "auto" and s.startswith("cam0/quiet-") for o, s in refs)
        assert crops == [("cam0",)]  # its info bars were found from the first one
        assert summary.counts["quiet_reference"] >= 1
    else:  # the tiny classifier scores these frames >= 0.85: an animal may be lying there
        assert refs == [] and summary.counts["quiet_reference_refused"] >= 2


def test_with_the_shipped_classifier_an_empty_quiet_frame_becomes_a_reference_and_an_animal_does_not(
    tmp_path: Path,
) -> None:
    """The shipped classifier's cutoff keeps almost every frame (it is tuned for recall), so it is no
    test of "empty": an empty frame it scores over that cutoff is still taken, under
    context.reference_max_p; a frame it is sure holds an animal never is."""
    from firmware_app.app import load_context, load_model
    from firmware_app.imaging import prepare_array_views
    from firmware_app.judge import Judge

    config = load_config(None, [f"store.root={tmp_path}", "context.enabled=true"])
    judge = Judge(config, load_model(config), load_context(config))
    empty = np.asarray(Image.open(FRAMES / "missouri" / "SEQ75192_IMG_0004.JPG").convert("RGB"))
    fox = np.asarray(Image.open(FRAMES / "missouri" / "SEQ75192_IMG_0001.JPG").convert("RGB"))
    (seen,) = prepare_array_views(empty, [judge.classifier.card.input], judge.imaging)  # as the camera loop
    p_empty = judge.classifier.score(seen.pixels)
    assert judge.cutoff <= p_empty < config.context.reference_max_p  # the cutoff alone would refuse it
    assert judge.quiet_reference("cam0", empty, "cam0/quiet-1", "a" * 64, 1_700_000_000.0).startswith("taken")
    refused = judge.quiet_reference("cam0", fox, "cam0/quiet-2", "b" * 64, 1_700_003_600.0)
    assert refused.startswith("not taken: the classifier scores it"), refused


def test_time_lapse_frames_of_a_folder_source_become_references_when_empty(tmp_path: Path) -> None:
    setup = Setup("folder", tmp_path, [])
    for i, rel in enumerate([*BLANK, NONBLANK[0]]):  # three empty time-lapse frames and one with an animal
        dest = setup.inbox / "cam1" / f"TLAPSE_{i:04d}.JPG"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FRAMES / rel, dest)
        os.utime(dest, (1_700_000_000 + 3600 * i,) * 2)
    run(
        setup.trap(context__enabled="true", context__reference_pattern="TLAPSE_*", context__reference_max_p=TINY_CUTOFF)
    )
    db = sqlite3.connect(setup.store / "references.db")
    sources = sorted(r[0] for r in db.execute("SELECT source FROM refs WHERE origin = 'auto'"))
    db.close()
    assert sources == [f"cam1/TLAPSE_{i:04d}.JPG" for i in range(3)], sources
    assert "cam1/TLAPSE_0003.JPG" not in sources  # the classifier keeps it: never background
    assert len(setup.rows()) == 4  # and every one of them is still a frame, judged and stored as usual
