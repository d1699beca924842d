"""One judge: `blankfilter eval --context` (the workstation replay) and `blankfilter run` (the trap)
decide the same labelled frames, in the same time order, identically: the same per-frame decision,
context state and scores; and so do `eval --context --deployment` and `run` given the references the
deployment replay chose for a burst. Real subprocesses, the shipped model and extractor, real SQLite."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import FRAMES
from PIL import Image, ImageEnhance, ImageOps

RunCli = Callable[..., subprocess.CompletedProcess[str]]

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
# camera -> (reference frames, bursts of frames); a variant letter: "f" mirrored, "b" brighter
CAMERAS = {
    "camA": (
        ["missouri/SEQ75192_IMG_0004.JPG", "missouri/SEQ75192_IMG_0005.JPG"],
        [["missouri/SEQ75192_IMG_0001.JPG", "missouri/SEQ75192_IMG_0002.JPG"], ["missouri/SEQ75192_IMG_0003.JPG"],
         ["missouri/SEQ75192_IMG_0004.JPG:b", "missouri/SEQ75192_IMG_0005.JPG:b"]],
    ),
    "camB": (
        ["wellington/1200_1-0.JPG", "wellington/1200_2-0.JPG"],
        [["wellington/11374_1-1.JPG", "wellington/11374_2-1.JPG", "wellington/11374_3-1.JPG"],
         ["wellington/1200_3-0.JPG"], ["wellington/1200_3-0.JPG:f"]],
    ),
}  # fmt: skip


def write_frame(source: str, dest: Path, when: datetime) -> None:
    """A fixture frame re-saved with its capture time in EXIF (the trap's clock, and the replay's)."""
    name, _, variant = source.partition(":")
    image = Image.open(FRAMES / name).convert("RGB")
    if variant == "f":
        image = ImageOps.mirror(image)
    elif variant == "b":
        image = ImageEnhance.Brightness(image).enhance(1.15)
    exif = Image.Exif()
    exif[0x0132] = when.strftime("%Y:%m:%d %H:%M:%S")
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.save(dest, "JPEG", quality=92, exif=exif)


def make_frames(tmp_path: Path) -> tuple[Path, Path, Path]:
    """inbox/<camera>/... for the trap, frames.csv (the same files) and refs.csv for the replay."""
    inbox, refs_dir = tmp_path / "inbox", tmp_path / "refs"
    rows, ref_rows = [], []
    for c, (camera, (refs, bursts)) in enumerate(CAMERAS.items()):
        for r, source in enumerate(refs):
            dest = refs_dir / camera / f"ref{r}.jpg"
            write_frame(source, dest, T0 - timedelta(days=1))
            ref_rows.append([f"{camera}/ref{r}.jpg", "blank", camera, "", camera, ""])
        for b, burst in enumerate(bursts):
            for i, source in enumerate(burst):
                when = T0 + timedelta(hours=c, minutes=10 * b, seconds=i)
                rel = f"{camera}/b{b}_{i}.jpg"
                write_frame(source, inbox / rel, when)
                rows.append([f"inbox/{rel}", "blank", camera, f"b{b}", camera, when.strftime("%Y:%m:%d %H:%M:%S")])
    header = ["path", "label", "location", "sequence", "camera", "datetime"]
    # The trap's inbox holds only frames: the replay's CSV goes beside it.
    for path, table in ((tmp_path / "frames.csv", rows), (refs_dir / "refs.csv", ref_rows)):
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows([header, *table])
    return inbox, tmp_path / "frames.csv", refs_dir / "refs.csv"


def trap_args(inbox: Path, store: Path) -> list[str]:
    return ["--set", f"source.inbox={inbox}", "--set", f"store.root={store}", "--set", "store.min_free_mb=0",
            "--set", "context.topup_spacing_s=0", "--set", "source.settle_s=0"]  # fmt: skip


def ledger_decisions(store: Path) -> dict[str, tuple[str, float, float | None, str | None]]:
    """What `run` recorded per frame: decision, score, context score and state."""
    db = sqlite3.connect(store / "ledger.db")
    ran = {p: (d, s, cs, st) for p, d, s, cs, st in
           db.execute("SELECT path, decision, score, context_score, context_state FROM frames")}  # fmt: skip
    db.close()
    return ran


def assert_same_decisions(ran: dict[str, tuple[str, float, float | None, str | None]],
                          replayed: dict[str, dict[str, str]]) -> set[str | None]:  # fmt: skip
    """The trap's and the replay's decision, context state and scores agree frame for frame; returns
    the context states seen."""
    states = set()
    for path, (decision, score, context_score, state) in ran.items():
        r = replayed[path]
        assert (decision, state or "") == (r["decision"], r["context_state"]), path
        assert abs(score - float(r["score"])) < 1e-6, path
        if context_score is not None or r["context_score"]:
            assert context_score is not None and abs(context_score - float(r["context_score"])) < 1e-5, path
        states.add(state)
    return states


def test_eval_context_replay_and_run_decide_every_frame_identically(tmp_path: Path, run_cli: RunCli) -> None:
    inbox, frames_csv, refs_csv = make_frames(tmp_path)
    decisions = tmp_path / "replay.csv"
    run_cli("eval", "--context", "--labels", frames_csv, "--references", refs_csv, "--decisions", decisions,
            "--quiet", check_rc=0)  # fmt: skip
    with decisions.open() as fh:
        replayed = {Path(r["path"]).relative_to(inbox).as_posix(): r for r in csv.DictReader(fh)}

    store = tmp_path / "store"
    common = trap_args(inbox, store)
    for camera in CAMERAS:
        refs = sorted((refs_csv.parent / camera).glob("*.jpg"))
        run_cli("reference", "add", *refs, "--camera", camera, *common, check_rc=0)
    run_cli("run", "--once", *common, check_rc=0)
    ran = ledger_decisions(store)
    assert set(ran) == set(replayed) and len(ran) == 10
    states = assert_same_decisions(ran, replayed)
    # The comparison means something only if context actually judged frames here.
    assert "matched" in states, states
    assert {d for d, *_ in ran.values()} == {"blank", "nonblank"}


# -- deployment mode ------------------------------------------------------------------------------
# camera -> bursts (label, frames), 3 h apart: each burst's references come from the camera's other
# blank bursts (all at least --min-gap-h 2 away), never from itself.
DEPLOYED = {
    "camA": [
        ("animal", ["missouri/SEQ75192_IMG_0001.JPG", "missouri/SEQ75192_IMG_0002.JPG"]),
        ("blank", ["missouri/SEQ75192_IMG_0003.JPG"]),
        ("blank", ["missouri/SEQ75192_IMG_0004.JPG"]),
        ("blank", ["missouri/SEQ75192_IMG_0005.JPG"]),
        ("blank", ["missouri/SEQ75192_IMG_0004.JPG:b", "missouri/SEQ75192_IMG_0005.JPG:b"]),
    ],
    "camB": [
        ("animal", ["wellington/11374_1-1.JPG", "wellington/11374_2-1.JPG", "wellington/11374_3-1.JPG"]),
        ("blank", ["wellington/1200_1-0.JPG"]),
        ("blank", ["wellington/1200_2-0.JPG"]),
        ("blank", ["wellington/1200_3-0.JPG"]),
        ("blank", ["wellington/1200_3-0.JPG:f"]),
    ],
}
REPRODUCED = ["camA|b0", "camA|b4", "camB|b0", "camB|b2", "camB|b4"]  # animal, blank, and a mirrored scene


def make_deployment_set(tmp_path: Path) -> tuple[Path, Path]:
    """frames/<camera>/b<burst>_<i>.jpg with their labels and capture times in deployment.csv."""
    folder, rows = tmp_path / "frames", []
    for c, (camera, bursts) in enumerate(DEPLOYED.items()):
        for b, (label, burst) in enumerate(bursts):
            for i, source in enumerate(burst):
                when = T0 + timedelta(hours=3 * b, minutes=30 * c, seconds=i)
                rel = f"{camera}/b{b}_{i}.jpg"
                write_frame(source, folder / rel, when)
                rows.append([f"frames/{rel}", label, camera, f"b{b}", camera, when.strftime("%Y:%m:%d %H:%M:%S")])
    labels = tmp_path / "deployment.csv"
    with labels.open("w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "location", "sequence", "camera", "datetime"], *rows])
    return folder, labels


def test_deployment_replay_and_run_with_the_same_references_decide_every_frame_identically(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """`eval --context --deployment` judges each burst with a fresh bank of known blanks from the
    camera's other bursts. A trap given exactly those references (`reference add`, in the order the
    decisions CSV lists them) and then that burst alone (`run --once`) decides it identically."""
    folder, labels = make_deployment_set(tmp_path)
    decisions = tmp_path / "deployment-decisions.csv"
    run_cli("eval", "--context", "--deployment", "--labels", labels, "--decisions", decisions, "--quiet",
            check_rc=0)  # fmt: skip
    with decisions.open() as fh:
        replayed = {Path(r["path"]).relative_to(folder).as_posix(): r for r in csv.DictReader(fh)}
    assert len(replayed) == sum(len(frames) for bursts in DEPLOYED.values() for _, frames in bursts)
    burst_of = {path: r["burst"] for path, r in replayed.items()}

    states = set()
    for burst in REPRODUCED:
        camera, _, sequence = burst.partition("|")
        members = sorted(p for p, b in burst_of.items() if b == burst)
        (refs_json,) = {replayed[p]["references"] for p in members}  # one bank per burst
        refs = [Path(p) for p in json.loads(refs_json)]
        ref_bursts = {burst_of[r.relative_to(folder).as_posix()] for r in refs}
        assert refs and burst not in ref_bursts, (burst, refs)  # never the frame or its burst
        assert all(replayed[r.relative_to(folder).as_posix()]["label"] == "blank" for r in refs)
        assert len(refs) <= 3  # --seed-blanks per lighting mode; each camera here has one mode

        trap = tmp_path / "trap" / f"{camera}-{sequence}"
        inbox, store = trap / "inbox", trap / "store"
        for path in members:
            (inbox / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / path, inbox / path)
        common = trap_args(inbox, store)
        run_cli("reference", "add", *refs, "--camera", camera, *common, check_rc=0)
        run_cli("run", "--once", *common, check_rc=0)
        ran = ledger_decisions(store)
        assert sorted(ran) == members
        states |= assert_same_decisions(ran, replayed)
    # The comparison means something only if context actually judged frames here.
    assert "matched" in states, states


def held_out_files(tmp_path: Path, labels: Path, groups: list[str]) -> tuple[Path, Path]:
    """A recipe's out-of-fold scores for every frame of `labels` (animals 0.9, blanks 0.01) and a
    held-out classifier cutoff (0.05) for each of `groups`, as models/train.py writes them."""
    scores = tmp_path / "lolo_scores.csv"
    with labels.open() as fh, scores.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label", "location", "sequence", "score", "gamma", "error"])
        for r in csv.DictReader(fh):
            p = 0.9 if r["label"] != "blank" else 0.01
            writer.writerow([labels.parent / r["path"], r["label"], r["location"], r["sequence"], p, "", ""])
    cutoffs = tmp_path / "lolo.json"
    cutoffs.write_text(json.dumps({"held_out": {g: {"cutoff": 0.05, "chosen_by": "x"} for g in groups}}))
    return scores, cutoffs


def test_deployment_lolo_judges_with_the_held_out_classifier_given_and_names_a_group_it_lacks(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """With --held-out-scores the LOLO table's classifier is the recipe's out-of-fold one at each
    group's own cutoff: every blank frame scores 0.01 < 0.05 there, so the classifier alone discards
    them all (the shipped model at its card's cutoff discards almost none). Cutoffs that lack a group
    of the labels are a usage error naming it, not a traceback."""
    _, labels = make_deployment_set(tmp_path)
    blanks = sum(len(frames) for bursts in DEPLOYED.values() for label, frames in bursts if label == "blank")
    scores, cutoffs = held_out_files(tmp_path, labels, list(DEPLOYED))
    out = tmp_path / "lolo.out.json"
    run_cli("eval", "--context", "--deployment", "--lolo", "--labels", labels, "--held-out-scores", scores,
            "--held-out-cutoffs", cutoffs, "--json", out, "--quiet", check_rc=0)  # fmt: skip
    lolo = json.loads(out.read_text())["lolo"]
    assert lolo["held_out_classifier"] is True
    assert {f["held_out"]: f["classifier_cutoff"] for f in lolo["folds"]} == {"camA": 0.05, "camB": 0.05}
    assert lolo["classifier_alone"]["blank_frames_discarded"] == lolo["classifier_alone"]["blank_frames"] == blanks
    assert lolo["pooled_held_out"]["animal_bursts_kept"] == lolo["pooled_held_out"]["animal_bursts"] == 2

    _, partial = held_out_files(tmp_path, labels, ["camA"])
    done = run_cli("eval", "--context", "--deployment", "--lolo", "--labels", labels, "--held-out-scores", scores,
                   "--held-out-cutoffs", partial, "--quiet")  # fmt: skip
    assert done.returncode == 2 and "no held-out classifier cutoff for group 'camB'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
