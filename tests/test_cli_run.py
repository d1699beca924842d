"""End-to-end: `blankfilter run` (and `stats`) as real subprocesses on real fixture frames.

What is kept and what is blank is never hard-coded: it is derived from `blankfilter classify --json`
on the same files, and the burst rule (a burst is kept whole if any frame is at or over the cutoff).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import ALL_FRAMES, BURSTS, FRAMES, TINY_U8, cli_env

RunCli = Callable[..., subprocess.CompletedProcess[str]]
MakeInbox = Callable[..., Path]
StoreArgs = Callable[..., list[str]]

CARD = json.loads(TINY_U8.with_suffix(".json").read_text())
CARD_CUTOFF = float(CARD["cutoff"])
STORE_FOLDERS = ("kept", "audit", "quarantine", "blank")
FRAME_ENDINGS = (".jpg", ".jpeg")


# -- helpers ----------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file under `folder` (empty when it does not exist)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def frames_under(folder: Path) -> dict[str, str]:
    return {rel: h for rel, h in files_under(folder).items() if rel.lower().endswith(FRAME_ENDINGS)}


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mtime_ns): content and timestamps, to prove nothing was touched."""
    return {rel: (h, (folder / rel).stat().st_mtime_ns) for rel, h in files_under(folder).items()}


def ledger_rows(root: Path) -> list[dict[str, Any]]:
    """All frame rows, read with plain sqlite3 (read-only: never creates a ledger)."""
    db_path = root / "ledger.db"
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM frames ORDER BY id")]
    finally:
        db.close()


def rows_while_running(root: Path) -> list[dict[str, Any]]:
    """ledger_rows() while a run may still be creating the ledger (file there, tables not yet)."""
    try:
        return ledger_rows(root)
    except sqlite3.OperationalError:
        return []


def skipped_rows(root: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{root / 'ledger.db'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM skipped ORDER BY path")]
    finally:
        db.close()


def classify(run_cli: RunCli, folder: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """relative path -> classify's JSON result for every frame under `folder`."""
    done = run_cli("classify", "--model", TINY_U8, "--json", *extra, folder, check_rc=0)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {Path(r["path"]).relative_to(folder).as_posix(): r for r in results}


def bursts_of(prefix: str = "", bursts: list[tuple[str, list[str]]] = BURSTS) -> list[list[str]]:
    return [[f"{prefix}{folder}/{name}" for name in names] for folder, names in bursts]


def expected_kept(scores: dict[str, dict[str, Any]], bursts: list[list[str]], cutoff: float) -> set[str]:
    """Frames of every burst with at least one frame at or over the cutoff (the whole burst)."""
    kept: set[str] = set()
    for burst in bursts:
        if any(scores[rel]["score"] >= cutoff for rel in burst):
            kept.update(burst)
    return kept


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def started(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`blankfilter ARGS` as a background process logging to `log`; killed if the test leaves it running."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_app", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=cli_env(),
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def log_has(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


def copy_fixture_set(inbox: Path, copies: int, make_inbox: MakeInbox) -> dict[str, str]:
    """The fixture set `copies` times, each in its own sub-folder (its own cameras); rel -> sha256."""
    for c in range(copies):
        make_inbox(inbox / f"copy{c}")
    originals = frames_under(inbox)
    assert len(originals) == copies * len(ALL_FRAMES)
    return originals


def assert_accounted_once(originals: dict[str, str], inbox: Path, root: Path) -> list[dict[str, Any]]:
    """Every original frame is in exactly one store folder with its bytes intact; the ledger agrees."""
    assert frames_under(inbox) == {}, "frames left in the inbox"
    stored: dict[str, list[tuple[str, str]]] = defaultdict(list)  # inbox rel -> [(folder, sha)]
    for folder in STORE_FOLDERS:
        for rel, digest in files_under(root / folder).items():
            stored[rel].append((folder, digest))
    assert set(stored) == set(originals), (
        f"lost: {sorted(set(originals) - set(stored))[:5]}, extra: {sorted(set(stored) - set(originals))[:5]}"
    )
    duplicates = {rel: where for rel, where in stored.items() if len(where) != 1}
    assert not duplicates, f"frames stored more than once: {list(duplicates.items())[:5]}"
    for rel, [(_, digest)] in stored.items():
        assert digest == originals[rel], f"{rel}: bytes changed"

    rows = ledger_rows(root)
    assert sorted(r["path"] for r in rows) == sorted(originals), "ledger must have exactly one row per frame"
    for r in rows:
        assert r["state"] == "done", r
        assert r["sha256"] == originals[r["path"]]
        folder = stored[r["path"]][0][0]
        assert r["dest"] == f"{folder}/{r['path']}", r
    return rows


def assert_bursts_whole(rows: list[dict[str, Any]], bursts: list[list[str]]) -> None:
    """Each camera burst was decided as one: one burst id and one action for all its frames."""
    by_path = {r["path"]: r for r in rows}
    for burst in bursts:
        ids = {by_path[rel]["burst"] for rel in burst}
        actions = {by_path[rel]["action"] for rel in burst}
        assert len(ids) == 1 and len(actions) == 1, f"burst of {burst[0]} (+{len(burst) - 1}) split: {ids}, {actions}"


def stats_json(run_cli: RunCli, store_args: StoreArgs, **sets: object) -> dict[str, Any]:
    done = run_cli("stats", "--json", *store_args(**sets)[2:], check_rc=0)  # stats takes no --model
    return json.loads(done.stdout)


# -- run --once -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("discard", "blank_folder"), [("delete", None), ("quarantine", "quarantine"), ("keep", "blank")]
)
def test_run_once_keeps_nonblank_bursts_and_discards_blanks(
    run_cli: RunCli,
    make_inbox: MakeInbox,
    store_args: StoreArgs,
    tmp_path: Path,
    discard: str,
    blank_folder: str | None,
) -> None:
    inbox = make_inbox()
    originals = frames_under(inbox)
    assert set(originals) == set(ALL_FRAMES)
    (inbox / "notes.txt").write_text("battery swapped 2024-05-01\n")
    notes_before = snapshot(inbox)["notes.txt"]
    scores = classify(run_cli, inbox)
    bursts = bursts_of()
    kept = expected_kept(scores, bursts, CARD_CUTOFF)
    blank = set(ALL_FRAMES) - kept
    # The fixture set as laid out by make_inbox: these two bursts are kept, the rest are blank.
    assert kept == {"wellington/11374_1-1.JPG", "wellington/11374_2-1.JPG", "wellington/11374_3-1.JPG"} | {
        "peru/cam1_EK000004.JPG"
    }

    root = tmp_path / "store"
    done = run_cli("run", "--once", *store_args(store__discard=discard, store__audit_rate=0.0), check_rc=0)

    # Files: kept/ holds the non-blank bursts byte for byte; blanks went where store.discard says.
    assert frames_under(root / "kept") == {rel: originals[rel] for rel in kept}
    for folder in ("audit", "quarantine", "blank"):
        expected = {rel: originals[rel] for rel in blank} if folder == blank_folder else {}
        assert frames_under(root / folder) == expected, folder
    assert frames_under(inbox) == {}, "every frame leaves the inbox"
    assert snapshot(inbox) == {"notes.txt": notes_before}, "a non-frame file is left alone"

    # Ledger: one row per frame with everything needed to audit the decision later.
    rows = ledger_rows(root)
    assert sorted(r["path"] for r in rows) == sorted(ALL_FRAMES)
    discard_action = {"delete": "deleted", "quarantine": "quarantined", "keep": "blank_kept"}[discard]
    for r in rows:
        rel = r["path"]
        assert r["sha256"] == originals[rel]
        assert r["size"] == (FRAMES / rel).stat().st_size
        assert r["score"] == pytest.approx(scores[rel]["score"], abs=1e-4)
        assert r["gamma"] == pytest.approx(scores[rel]["gamma"])
        assert r["cutoff"] == pytest.approx(CARD_CUTOFF)
        assert r["decision"] == ("blank" if scores[rel]["blank"] else "nonblank")
        assert r["action"] == ("kept" if rel in kept else discard_action)
        assert r["dest"] == (None if r["action"] == "deleted" else f"{'kept' if rel in kept else blank_folder}/{rel}")
        assert r["state"] == "done"
        assert (r["model"], r["model_version"]) == (CARD["name"], CARD["version"])
        assert r["error"] is None
    assert_bursts_whole(rows, bursts)
    assert len({r["burst"] for r in rows}) == len(BURSTS)

    skipped = skipped_rows(root)
    assert [s["path"] for s in skipped] == ["notes.txt"]
    assert "extension" in skipped[0]["reason"]
    assert "notes.txt" in done.stderr

    # `stats --json` agrees with the ledger.
    stats = stats_json(run_cli, store_args)
    assert stats["frames"] == len(rows)
    assert stats["bursts"] == len({r["burst"] for r in rows})
    assert stats["pending"] == 0
    assert stats["skipped"] == 1
    assert stats["by_action"] == {a: sum(r["action"] == a for r in rows) for a in {r["action"] for r in rows}}
    assert stats["by_decision"] == {d: sum(r["decision"] == d for r in rows) for d in {r["decision"] for r in rows}}
    assert stats["blank_ratio"] == pytest.approx(sum(r["decision"] == "blank" for r in rows) / len(rows))
    assert stats["models"] == [{"model": CARD["name"], "version": CARD["version"], "frames": len(rows)}]


def test_run_once_keeps_a_burst_whole_when_some_frames_are_under_the_cutoff(
    run_cli: RunCli, make_inbox: MakeInbox, store_args: StoreArgs, tmp_path: Path
) -> None:
    missouri = [b for b in BURSTS if b[0] == "missouri"]
    inbox = make_inbox(bursts=missouri)
    originals = frames_under(inbox)
    scores = classify(run_cli, inbox)
    distinct = sorted({r["score"] for r in scores.values()})
    assert len(distinct) >= 2, "the missouri burst needs frames with different scores for this test"
    cutoff = round((distinct[0] + distinct[-1]) / 2, 6)  # some frames under, some at or over
    under = {rel for rel, r in scores.items() if r["score"] < cutoff}
    assert under and under != set(scores)

    root = tmp_path / "store"
    run_cli("run", "--once", "--cutoff", str(cutoff), *store_args(store__discard="quarantine"), check_rc=0)
    assert frames_under(root / "kept") == originals, "the whole burst is kept, frames under the cutoff too"
    rows = ledger_rows(root)
    assert {r["path"]: r["decision"] for r in rows} == {
        rel: ("blank" if rel in under else "nonblank") for rel in originals
    }
    assert {r["action"] for r in rows} == {"kept"}
    assert all(r["cutoff"] == pytest.approx(cutoff) for r in rows)
    assert len({r["burst"] for r in rows}) == 1


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_run_once_audit_sample(
    run_cli: RunCli, make_inbox: MakeInbox, store_args: StoreArgs, tmp_path: Path, rate: float
) -> None:
    inbox = make_inbox()
    originals = frames_under(inbox)
    kept = expected_kept(classify(run_cli, inbox), bursts_of(), CARD_CUTOFF)
    blank = {rel: h for rel, h in originals.items() if rel not in kept}
    assert blank and kept

    root = tmp_path / "store"
    run_cli("run", "--once", *store_args(store__discard="quarantine", store__audit_rate=rate), check_rc=0)
    assert frames_under(root / "kept") == {rel: originals[rel] for rel in kept}
    assert frames_under(root / "audit") == (blank if rate == 1.0 else {})
    assert frames_under(root / "quarantine") == ({} if rate == 1.0 else blank)
    actions = {r["path"]: r["action"] for r in ledger_rows(root)}
    assert {actions[rel] for rel in blank} == {"audit" if rate == 1.0 else "quarantined"}


def test_run_once_again_finds_nothing_new_and_never_processes_a_frame_twice(
    run_cli: RunCli, make_inbox: MakeInbox, store_args: StoreArgs, tmp_path: Path
) -> None:
    inbox = make_inbox()
    (inbox / "notes.txt").write_text("not a frame\n")
    root = tmp_path / "store"
    args = store_args(store__discard="quarantine", store__audit_rate=0.0)
    run_cli("run", "--once", *args, check_rc=0)
    rows = ledger_rows(root)
    store_before = snapshot(root / "kept") | {f"q/{k}": v for k, v in snapshot(root / "quarantine").items()}
    assert len(rows) == len(ALL_FRAMES)

    again = run_cli("run", "--once", *args, check_rc=0)
    assert "nothing new" in again.stderr
    assert ledger_rows(root) == rows
    assert len(skipped_rows(root)) == 1, "the skipped file is recorded once, not once per run"
    after = snapshot(root / "kept") | {f"q/{k}": v for k, v in snapshot(root / "quarantine").items()}
    assert after == store_before

    # The same bytes dropped again at the same path (a card copied twice): recognised, not scored,
    # moved or recorded twice; the redundant copy leaves the inbox since the original is stored.
    kept_rel = next(r["path"] for r in rows if r["action"] == "kept")
    blank_rel = next(r["path"] for r in rows if r["action"] == "quarantined")
    inbox_before = snapshot(inbox)
    for rel in (kept_rel, blank_rel):
        shutil.copyfile(FRAMES / rel, inbox / rel)
    third = run_cli("run", "--once", *args, check_rc=0)
    assert ledger_rows(root) == rows
    after = snapshot(root / "kept") | {f"q/{k}": v for k, v in snapshot(root / "quarantine").items()}
    assert after == store_before
    assert snapshot(inbox) == inbox_before, "the second copies are removed, nothing else in the inbox changes"
    assert third.stderr.count("already processed") == 2, third.stderr

    # When the stored original is gone (taken off the trap), the copy stays and is not re-read.
    (root / "kept" / kept_rel).unlink()
    shutil.copyfile(FRAMES / kept_rel, inbox / kept_rel)
    fourth = run_cli("run", "--once", *args, check_rc=0)
    assert (inbox / kept_rel).read_bytes() == (FRAMES / kept_rel).read_bytes()
    assert "stored copy is gone" in fourth.stderr
    fifth = run_cli("run", "--once", *args, check_rc=0)
    assert "already processed" not in fifth.stderr, "a copy left in place is looked at once, not every run"
    assert ledger_rows(root) == rows


def test_dry_run_moves_deletes_and_records_nothing(
    run_cli: RunCli, make_inbox: MakeInbox, store_args: StoreArgs, tmp_path: Path
) -> None:
    inbox = make_inbox()
    (inbox / "notes.txt").write_text("not a frame\n")
    before = snapshot(inbox)
    kept = expected_kept(classify(run_cli, inbox), bursts_of(), CARD_CUTOFF)
    root = tmp_path / "store"
    done = run_cli("run", "--once", "--dry-run", *store_args(store__discard="delete"), check_rc=0)
    assert snapshot(inbox) == before
    assert not root.exists(), "a dry run creates no store and no ledger"
    assert "DRY RUN" in done.stderr
    # It still says what it would have done with every frame.
    for rel in ALL_FRAMES:
        action = "would keep" if rel in kept else "would delete"
        assert f"dry run: {action} {rel} " in done.stderr, rel


def test_run_with_a_missing_model_exits_2_and_touches_nothing(
    run_cli: RunCli, make_inbox: MakeInbox, store_args: StoreArgs, tmp_path: Path
) -> None:
    inbox = make_inbox()
    before = snapshot(inbox)
    missing = tmp_path / "no-such-model.tflite"
    done = run_cli("run", "--once", *store_args(model=missing))
    assert done.returncode == 2, done
    assert "blankfilter: error:" in done.stderr and str(missing) in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(inbox) == before
    assert not (tmp_path / "store" / "ledger.db").exists()


# -- crashes and signals --------------------------------------------------------------------------
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    run_cli: RunCli, make_inbox: MakeInbox, store_args: StoreArgs, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    root = tmp_path / "store"
    copies = 16  # enough work that a kill 0.05-0.6 s into a run lands mid-work, however fast the machine
    originals = copy_fixture_set(inbox, copies, make_inbox)
    scores = classify(run_cli, inbox)
    bursts = [b for c in range(copies) for b in bursts_of(f"copy{c}/")]
    args = ["run", "--once", *store_args(store__discard="quarantine", store__audit_rate=0.5)]

    rng = random.Random(20240501)
    kill_rounds = 8
    interrupted_mid_work = 0
    for round_no in range(kill_rounds + 1):
        log = tmp_path / f"kill-{round_no}.log"
        with started(args, log) as proc:
            if round_no % 2:
                # Odd rounds count the delay from the start-up line (model loaded): kills land in
                # the real work. Even rounds count it from exec: kills land in start-up and recovery too.
                wait_for(lambda: proc.poll() is not None or log_has(log, "cutoff"), 30, "start-up", 0.01)  # noqa: B023
            try:
                rc = proc.wait(timeout=rng.uniform(0.05, 0.6) if round_no < kill_rounds else 60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=10) == -signal.SIGKILL
                if rows_while_running(root) and frames_under(inbox):
                    interrupted_mid_work += 1
                continue
        assert rc == 0, log.read_text()
        break  # a run finished on its own: the inbox is done
    assert interrupted_mid_work >= 2, "kills did not land while frames were being processed: the test proved nothing"

    rows = assert_accounted_once(originals, inbox, root)
    assert_bursts_whole(rows, bursts)
    kept = expected_kept(scores, bursts, CARD_CUTOFF)
    assert {r["path"] for r in rows if r["action"] == "kept"} == kept
    assert {r["action"] for r in rows if r["path"] not in kept} <= {"audit", "quarantined"}


def make_long_burst(folder: Path, frames: int) -> list[str]:
    """One camera, one long burst (frames 1 s apart, no EXIF time) whose only non-blank frame is
    the last one: kept whole only if it is decided whole. Returns the frames, inbox-relative."""
    sources = [f"missouri/{n}" for n in BURSTS[2][1]]
    last = f"wellington/{BURSTS[0][1][0]}"
    folder.mkdir(parents=True)
    names = []
    for i in range(frames):
        src = FRAMES / (last if i == frames - 1 else sources[i % len(sources)])
        dest = folder / f"IMG_{i:04d}.JPG"
        shutil.copyfile(src, dest)
        os.utime(dest, (1_690_000_000 + i, 1_690_000_000 + i))
        names.append(f"{folder.name}/{dest.name}")
    return names


def test_sigterm_during_a_long_once_run_stops_cleanly_and_the_next_run_finishes(
    run_cli: RunCli, make_inbox: MakeInbox, store_args: StoreArgs, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    root = tmp_path / "store"
    copies = 5
    long_burst = make_long_burst(inbox / "burst_long", 30)  # sorts first: read first
    copy_fixture_set(inbox / "copies", copies, make_inbox)
    originals = frames_under(inbox)
    scores = classify(run_cli, inbox)
    assert any(scores[rel]["score"] >= CARD_CUTOFF for rel in long_burst)
    assert any(scores[rel]["score"] < CARD_CUTOFF for rel in long_burst)
    bursts = [long_burst] + [b for c in range(copies) for b in bursts_of(f"copies/copy{c}/")]

    args = ["run", "--once", *store_args(store__discard="quarantine", store__audit_rate=0.0)]
    log = tmp_path / "term.log"
    with started(args, log) as proc:
        # SIGTERM once a few frames of the long burst are recorded: mid-burst, mid-run.
        wait_for(lambda: proc.poll() is not None or len(rows_while_running(root)) >= 3, 30, "the first frames", 0.005)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
    text = log.read_text()
    assert rc == 0, text
    assert "SIGTERM" in text and "stopping" in text
    assert frames_under(inbox), "the run finished before SIGTERM: nothing was left to resume"
    first = ledger_rows(root)
    assert len(first) < len(originals)
    # What was stopped is not half-done: a frame is either still in the inbox or finished.
    assert all(r["state"] == "done" or (inbox / r["path"]).exists() for r in first)

    run_cli(*args, check_rc=0)
    rows = assert_accounted_once(originals, inbox, root)
    assert_bursts_whole(rows, bursts)
    assert {r["path"] for r in rows if r["action"] == "kept"} == expected_kept(scores, bursts, CARD_CUTOFF)
    assert {r["path"]: r["action"] for r in rows if r["path"] in long_burst} == dict.fromkeys(long_burst, "kept")


# -- daemon ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_daemon_picks_up_new_bursts_and_stops_on_sigterm(
    run_cli: RunCli, store_args: StoreArgs, tmp_path: Path, watch: str
) -> None:
    inbox = tmp_path / "inbox"
    root = tmp_path / "store"
    for cam in ("cam_a", "cam_b"):
        (inbox / cam).mkdir(parents=True)
    renamed = [("wellington", n) for n in BURSTS[0][1]]  # written to a temporary name, then renamed
    written = [("wellington", n) for n in BURSTS[1][1]]  # plain write and close
    scores = classify(run_cli, FRAMES / "wellington")
    kept_a = any(scores[n]["score"] >= CARD_CUTOFF for _, n in renamed)
    kept_b = any(scores[n]["score"] >= CARD_CUTOFF for _, n in written)
    assert kept_a != kept_b, "one burst should be kept and one blank"

    sets: dict[str, object] = {"store__discard": "quarantine", "store__audit_rate": 0.0, "decision__burst_gap_s": 1}
    if watch == "poll":
        sets |= {"source__watch": "poll", "source__poll_s": 0.2, "source__settle_s": 0.5}
    else:
        # No periodic rescan worth the name: only inotify events can find the new files.
        sets |= {"source__watch": "auto", "source__poll_s": 3600, "source__settle_s": 1}
    log = tmp_path / "daemon.log"
    with started(["run", *store_args(**sets)], log) as proc:
        started_line = "with inotify" if watch == "inotify" else "cutoff"
        wait_for(lambda: proc.poll() is not None or log_has(log, started_line), 30, "the daemon to start")
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)  # let the initial scan of the (empty) inbox pass; correctness does not depend on it

        for folder, name in renamed:
            tmp = inbox / "cam_a" / f"{name}.part"
            tmp.write_bytes((FRAMES / folder / name).read_bytes())
            os.rename(tmp, inbox / "cam_a" / name)
        for folder, name in written:
            with (inbox / "cam_b" / name).open("wb") as fh:
                fh.write((FRAMES / folder / name).read_bytes())

        def all_done() -> bool:
            rows = rows_while_running(root)
            return len(rows) == 6 and all(r["state"] == "done" for r in rows)

        wait_for(all_done, 20, f"the daemon to process both bursts ({watch})", 0.1)
        assert proc.poll() is None, "the daemon must keep running"

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        stopped_in = time.monotonic() - t0
    text = log.read_text()
    assert rc == 0, text
    assert stopped_in < 10
    assert "SIGTERM" in text and "stopping" in text
    if watch == "poll":
        assert "inotify" not in text

    rows = ledger_rows(root)
    expected = {f"cam_a/{n}": ("kept" if kept_a else "quarantined") for _, n in renamed} | {
        f"cam_b/{n}": ("kept" if kept_b else "quarantined") for _, n in written
    }
    assert {r["path"]: r["action"] for r in rows} == expected
    assert len({r["burst"] for r in rows}) == 2, "one burst per camera folder"
    stored = frames_under(root / "kept") | frames_under(root / "quarantine")
    assert stored == {rel: sha256(FRAMES / "wellington" / rel.split("/")[1]) for rel in expected}
    assert files_under(inbox) == {}, "no frame and no temporary file left in the inbox"
