"""End-to-end: `blankfilter classify` run as a real subprocess on real fixture frames.

Scores are never hard-coded: expectations come from the model card and from classify's own output.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ALL_FRAMES, FRAMES, MODELS, TINY_U8

RunCli = Callable[..., subprocess.CompletedProcess[str]]
KEYS = {"path", "score", "blank", "cutoff", "gamma", "error"}
CARD_CUTOFF = float(json.loads(TINY_U8.with_suffix(".json").read_text())["cutoff"])


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under `folder`: relative path -> (sha256, mtime_ns, size)."""
    out: dict[str, tuple[str, int, int]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[path.relative_to(folder).as_posix()] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mtime_ns,
                st.st_size,
            )
    return out


def json_lines(stdout: str) -> list[dict[str, Any]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def classify_json(run_cli: RunCli, *args: str | Path) -> list[dict[str, Any]]:
    done = run_cli("classify", "--model", TINY_U8, "--json", *args, check_rc=0)
    return json_lines(done.stdout)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the fixture frames (never the fixture folder itself: we check nothing changes)."""
    dest = tmp_path / "frames"
    shutil.copytree(FRAMES, dest)
    return dest


def test_classify_json_on_files(run_cli: RunCli) -> None:
    paths = [FRAMES / rel for rel in ALL_FRAMES[::-1]]  # explicit files: reported in the order given
    results = classify_json(run_cli, *paths)
    assert [r["path"] for r in results] == [str(p) for p in paths]
    for r in results:
        assert set(r) == KEYS, r
        assert r["error"] is None, r
        assert isinstance(r["score"], float) and 0.0 <= r["score"] <= 1.0
        assert r["cutoff"] == pytest.approx(CARD_CUTOFF)
        assert r["blank"] is (r["score"] < r["cutoff"])
        assert isinstance(r["gamma"], float) and r["gamma"] > 0
    # The fixture set must exercise both verdicts, or the other end-to-end tests prove little.
    assert {r["blank"] for r in results} == {True, False}


def test_classify_folder_matches_files_and_changes_nothing(run_cli: RunCli, folder: Path) -> None:
    before = snapshot(folder)
    by_folder = classify_json(run_cli, folder)
    assert snapshot(folder) == before, "classify must not move, delete or modify anything"

    assert [Path(r["path"]).relative_to(folder).as_posix() for r in by_folder] == sorted(ALL_FRAMES)
    by_file = {Path(r["path"]).relative_to(FRAMES).as_posix(): r for r in classify_json(run_cli, FRAMES)}
    for r in by_folder:
        assert set(r) == KEYS
        twin = by_file[Path(r["path"]).relative_to(folder).as_posix()]
        assert (r["score"], r["blank"], r["gamma"]) == (twin["score"], twin["blank"], twin["gamma"])


def test_classify_cutoff_overrides_the_card(run_cli: RunCli) -> None:
    base = classify_json(run_cli, FRAMES)
    scores = sorted({r["score"] for r in base})
    # A cutoff between two observed scores, so the verdicts differ from the card's somewhere.
    mid = len(scores) // 2
    cutoff = round((scores[mid - 1] + scores[mid]) / 2, 6)
    assert cutoff != pytest.approx(CARD_CUTOFF)
    over = {r["path"]: r for r in classify_json(run_cli, "--cutoff", str(cutoff), FRAMES)}
    assert len(over) == len(base)
    changed = 0
    for r in base:
        o = over[r["path"]]
        assert o["cutoff"] == pytest.approx(cutoff)
        assert o["score"] == r["score"]  # the cutoff decides, it does not change the score
        assert o["blank"] is (o["score"] < cutoff)
        changed += o["blank"] != r["blank"]
    assert changed > 0
    assert {o["blank"] for o in over.values()} == {True, False}


def test_classify_bad_files_are_reported_and_exit_0(run_cli: RunCli, folder: Path) -> None:
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes((FRAMES / ALL_FRAMES[0]).read_bytes()[:200])
    before = snapshot(folder)
    good = folder / ALL_FRAMES[0]
    results = classify_json(run_cli, folder / "empty.jpg", good, folder / "truncated.jpg", folder)
    assert snapshot(folder) == before

    first = results[:3]
    assert [r["path"] for r in first] == [str(folder / "empty.jpg"), str(good), str(folder / "truncated.jpg")]
    for r in results:
        assert set(r) == KEYS
    empty, ok, cut = first
    assert empty["score"] is None and empty["blank"] is None and empty["gamma"] is None
    assert isinstance(empty["error"], str) and ("empty" in empty["error"] or "0 bytes" in empty["error"])
    assert empty["cutoff"] == pytest.approx(CARD_CUTOFF)
    assert ok["error"] is None and ok["score"] is not None
    assert (cut["score"] is None) == (cut["error"] is not None)

    # The folder pass covers every fixture frame plus the two bad files, each on its own line.
    in_folder = {Path(r["path"]).relative_to(folder).as_posix(): r for r in results[3:]}
    assert set(in_folder) == set(ALL_FRAMES) | {"empty.jpg", "truncated.jpg"}
    assert in_folder["empty.jpg"]["error"] and in_folder["empty.jpg"]["score"] is None
    truncated = in_folder["truncated.jpg"]
    assert (truncated["score"] is None) == (truncated["error"] is not None)
    assert sum(r["error"] is None for r in in_folder.values()) >= len(ALL_FRAMES)


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_classify_a_path_that_does_not_exist_is_a_usage_error_naming_it(
    run_cli: RunCli, tmp_path: Path, json_flag: list[str]
) -> None:
    missing_dir, missing_file = tmp_path / "no" / "such" / "dir", tmp_path / "not-there.jpg"
    done = run_cli("classify", "--model", TINY_U8, *json_flag, FRAMES / ALL_FRAMES[0], missing_dir, missing_file)
    assert done.returncode == 2, done
    assert done.stdout == "", "no result is printed, not even for the path that exists"
    assert done.stderr.startswith("blankfilter: error:"), done.stderr
    assert str(missing_dir) in done.stderr and str(missing_file) in done.stderr
    assert "cannot read" not in done.stderr and "Traceback" not in done.stderr


def test_classify_text_output(run_cli: RunCli, folder: Path) -> None:
    (folder / "empty.jpg").write_bytes(b"")
    before = snapshot(folder)
    as_json = {r["path"]: r for r in classify_json(run_cli, folder)}
    done = run_cli("classify", "--model", TINY_U8, folder, check_rc=0)
    assert snapshot(folder) == before
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == len(as_json)
    for line in lines:
        score_text, verdict, path = line.split(None, 2)
        if verdict == "error":
            path = path.split("  (")[0]
            assert score_text == "-"
            assert as_json[path]["error"]
            assert "(" in line  # the reason is shown
            continue
        r = as_json[path]
        assert float(score_text) == pytest.approx(r["score"], abs=1e-4)
        assert verdict == ("blank" if r["blank"] else "KEEP")
    assert {line.split()[1] for line in lines} == {"blank", "KEEP", "error"}


@pytest.mark.parametrize("kind", ["missing", "not_tflite", "not_tflite_with_card"])
def test_classify_bad_model_exits_2(run_cli: RunCli, tmp_path: Path, kind: str) -> None:
    model = tmp_path / "model.tflite"
    if kind != "missing":
        model.write_bytes(b"this is not a flatbuffer\n" * 10)
    if kind == "not_tflite_with_card":
        shutil.copyfile(MODELS / "tiny_u8.json", tmp_path / "model.json")
    done = run_cli("classify", "--model", model, "--json", FRAMES / ALL_FRAMES[0])
    assert done.returncode == 2, done
    assert done.stdout == ""  # no half-made results
    assert "blankfilter: error:" in done.stderr
    assert str(model) in done.stderr
    assert "Traceback" not in done.stderr
    if kind == "missing":
        assert "No such file" in done.stderr or "not found" in done.stderr
    else:
        assert "TFLite" in done.stderr
