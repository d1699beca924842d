"""`tune` and `eval`: metrics on constructed scores with known answers, and the CLI on the
labelled fixture frames (tests/fixtures/frames/labels.csv) with the real runtime."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
from conftest import FRAMES, TINY_U8
from PIL import Image

from convert.metrics import at_cutoff, bootstrap_recall_bound, group_max, roc_auc, tune_cutoff
from convert.scoring import ScoredFrame
from convert.tune import tune

RunCli = Callable[..., CompletedProcess[str]]
LABELS = FRAMES / "labels.csv"


def frames(rows: list[tuple[str, float, str]]) -> list[ScoredFrame]:
    """(label, score, burst) -> ScoredFrame."""
    return [
        ScoredFrame(f"f{i}.jpg", label, "site", burst, score, 1.0, None) for i, (label, score, burst) in enumerate(rows)
    ]


# -- metrics with known answers -----------------------------------------------------------------
def test_tuned_cutoff_is_the_exact_score_that_keeps_the_target_share() -> None:
    y = [1] * 100 + [0] * 50
    s = [i / 100 for i in range(1, 101)] + [0.005] * 50  # non-blanks score 0.01 .. 1.00
    # Keeping 97 of 100 non-blanks: the 97th highest is 0.04; 0.0401 would keep only 96.
    assert tune_cutoff(y, s, 0.97) == pytest.approx(0.04)
    assert tune_cutoff(y, s, 1.0) == pytest.approx(0.01)
    assert tune_cutoff(y, s, 0.5) == pytest.approx(0.51)
    m = at_cutoff(y, s, tune_cutoff(y, s, 0.97))
    assert (m.kept_nonblank, m.recall, m.tnr) == (97, 0.97, 1.0)


def test_tuned_cutoff_with_an_awkward_count_never_undershoots_the_target() -> None:
    rng = np.random.default_rng(3)
    for n in (7, 33, 101):
        s = rng.random(n)
        cutoff = tune_cutoff([1] * n, s, 0.97)
        recall = at_cutoff([1] * n, s, cutoff).recall
        assert recall is not None and recall >= 0.97
        assert at_cutoff([1] * n, s, np.nextafter(cutoff, 1)).recall < 0.97, "not the highest such cutoff"


def test_burst_level_uses_the_highest_frame_of_each_burst() -> None:
    scored = frames(
        [
            ("animal", 0.9, "a"), ("blank", 0.1, "a"),  # burst a: non-blank, max 0.9
            ("blank", 0.2, "b"), ("animal", 0.3, "b"),  # burst b: non-blank, max 0.3
            ("blank", 0.6, "c"), ("blank", 0.05, "c"),  # burst c: blank, max 0.6
            ("blank", 0.1, "d"),  # burst d: blank, max 0.1
        ]
    )  # fmt: skip
    result = tune(scored, 1.0, level="burst", rounds=200)
    assert result.cutoff == pytest.approx(0.3)
    assert (result.at.nonblank, result.at.blank, result.at.discarded_blank) == (2, 2, 1)
    assert result.bursts == 4 and result.frames == 7
    frame_level = tune(scored, 1.0, level="frame", rounds=200)
    assert frame_level.cutoff == pytest.approx(0.3)
    assert frame_level.at.n == 7


def test_group_max_marks_a_burst_non_blank_if_any_frame_is() -> None:
    gy, gs, keys = group_max([0, 1, 0], [0.2, 0.1, 0.7], ["x", "x", "y"])
    assert keys == ["x", "y"]
    assert gy.tolist() == [1, 0]
    assert gs.tolist() == [0.2, 0.7]


def test_auc_matches_pairwise_counting_with_ties() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert roc_auc(y, s) == pytest.approx(sum(pairs) / len(pairs))
    assert roc_auc([1, 1], [0.1, 0.2]) is None


def test_recall_bound_resamples_bursts() -> None:
    y = [1] * 40 + [0] * 10
    s = [0.9] * 38 + [0.1, 0.1] + [0.05] * 10
    bursts = [f"b{i // 2}" for i in range(50)]  # pairs of frames
    bound = bootstrap_recall_bound(y, s, bursts, cutoff=0.5, seed=1)
    assert bound is not None and bound < 0.95 <= at_cutoff(y, s, 0.5).recall
    assert bound == bootstrap_recall_bound(y, s, bursts, cutoff=0.5, seed=1), "seeded: reproducible"
    perfect = bootstrap_recall_bound(y, [0.9] * 40 + [0.05] * 10, bursts, cutoff=0.5)
    assert perfect == 1.0


def test_tune_refuses_a_set_without_non_blanks() -> None:
    with pytest.raises(ValueError, match="no non-blank"):
        tune(frames([("blank", 0.2, "a")]))


# -- the CLI on real frames ---------------------------------------------------------------------
def classify_scores(run_cli: RunCli, model: Path, *extra: str) -> dict[str, float]:
    done = run_cli("classify", "--json", "--model", model, *extra, FRAMES, check_rc=0)
    return {
        Path(r["path"]).relative_to(FRAMES).as_posix(): r["score"] for r in map(json.loads, done.stdout.splitlines())
    }


def fixture_labels() -> dict[str, tuple[str, str, str]]:
    lines = LABELS.read_text().splitlines()[1:]
    return {p: (label, loc, seq) for p, label, loc, seq in (line.split(",") for line in lines)}


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    for suffix in (".tflite", ".json"):
        shutil.copyfile(TINY_U8.with_suffix(suffix), tmp_path / f"model{suffix}")
    return tmp_path / "model.tflite"


def test_tune_cli_writes_the_cutoff_the_scores_call_for(run_cli: RunCli, model_copy: Path, tmp_path: Path) -> None:
    labels = fixture_labels()
    scores = classify_scores(run_cli, model_copy)
    y = [int(labels[p][0] != "blank") for p in labels]
    s = [scores[p] for p in labels]
    expected = tune_cutoff(y, s, 0.97)
    plot = tmp_path / "curves.png"
    done = run_cli(
        "tune", "--model", model_copy, "--labels", LABELS, "--level", "frame", "--plot", plot, "--quiet", "--json",
        check_rc=0,
    )  # fmt: skip
    result = json.loads(done.stdout)
    assert result["cutoff"] == pytest.approx(expected, abs=1e-9)
    assert result["at"]["recall"] >= 0.97
    card = json.loads(model_copy.with_suffix(".json").read_text())
    assert card["cutoff"] == result["cutoff"], "the exact cutoff goes into the card, not a rounded one"
    assert card["target_recall"] == 0.97 and card["metrics"]["tune"]["level"] == "frame"
    with Image.open(plot) as png:
        assert png.format == "PNG" and png.width > 500
    # The card's cutoff keeps every frame the tuned recall counted on.
    kept = classify_scores(run_cli, model_copy)
    assert all(kept[p] >= card["cutoff"] for p in labels if labels[p][0] != "blank" and scores[p] >= expected)


def test_tune_no_write_leaves_the_card_alone(run_cli: RunCli, model_copy: Path) -> None:
    card_before = model_copy.with_suffix(".json").read_bytes()
    run_cli("tune", "--model", model_copy, "--labels", LABELS, "--no-write", "--quiet", check_rc=0)
    assert model_copy.with_suffix(".json").read_bytes() == card_before


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder standing in for the checkout's shipped one (BLANKFILTER_MODELS_DIR), so a
    tune that writes where it must not never touches the real shipped card."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copyfile(TINY_U8.with_suffix(suffix), folder / f"shipped-model{suffix}")
    monkeypatch.setenv("BLANKFILTER_MODELS_DIR", str(folder))
    return folder / "shipped-model.tflite"


def test_tune_without_model_never_writes_the_shipped_card(run_cli: RunCli, shipped: Path, tmp_path: Path) -> None:
    card = shipped.with_suffix(".json")
    before = card.read_bytes()
    scores = tmp_path / "scores.csv"
    done = run_cli("tune", "--labels", LABELS, "--level", "frame", "--save-scores", scores, "--quiet", check_rc=0)
    assert card.read_bytes() == before, "tune without --model rewrote the shipped model card"
    assert "cutoff" in done.stdout, done.stdout  # the result is still printed
    assert "not written" in done.stderr and "--model PATH" in done.stderr, done.stderr
    assert str(card) not in done.stderr.replace("not written", ""), "it must not claim to have written the card"
    done = run_cli("tune", "--scores", scores, "--level", "frame", "--json", check_rc=0)
    assert card.read_bytes() == before
    assert json.loads(done.stdout)["cutoff"] > 0 and "--model PATH" in done.stderr, done.stderr


def test_tune_with_model_writes_its_card_and_says_what_changed(run_cli: RunCli, model_copy: Path) -> None:
    card = model_copy.with_suffix(".json")
    old = json.loads(card.read_text())["cutoff"]
    done = run_cli("tune", "--model", model_copy, "--labels", LABELS, "--level", "frame", "--json", "--quiet",
                   check_rc=0)  # fmt: skip
    new = json.loads(done.stdout)["cutoff"]
    assert json.loads(card.read_text())["cutoff"] == new != old
    assert f"cutoff {old:.4f} → {new:.4f}" in done.stderr and str(card) in done.stderr, done.stderr
    again = run_cli("tune", "--model", model_copy, "--labels", LABELS, "--level", "frame", "--quiet", check_rc=0)
    assert f"cutoff {new:.4f} → {new:.4f} (unchanged)" in again.stderr, again.stderr


def test_tune_into_a_model_without_a_card_is_a_clear_error(run_cli: RunCli, tmp_path: Path) -> None:
    scores = tmp_path / "scores.csv"
    run_cli("tune", "--model", TINY_U8, "--labels", LABELS, "--save-scores", scores, "--no-write", "--quiet",
            check_rc=0)  # fmt: skip
    missing = tmp_path / "nowhere" / "model.tflite"
    done = run_cli("tune", "--scores", scores, "--model", missing)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert str(missing.with_suffix(".json")) in done.stderr, done.stderr


def test_eval_numbers_agree_with_classify(run_cli: RunCli, model_copy: Path, tmp_path: Path) -> None:
    labels = fixture_labels()
    cutoff = 0.7
    out = tmp_path / "eval.json"
    run_cli(
        "eval", "--model", model_copy, "--labels", LABELS, "--cutoff", str(cutoff), "--json", out, "--quiet",
        check_rc=0,
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    for gamma in ("auto", "off"):
        scores = classify_scores(run_cli, model_copy, "--set", f"imaging.gamma={gamma}")
        for location in ("(all)", "wellington", "missouri"):
            paths = [p for p in labels if location == "(all)" or labels[p][1] == location]
            y = [int(labels[p][0] != "blank") for p in paths]
            s = [scores[p] for p in paths]
            row = next(r for r in rows if (r["gamma"], r["location"], r["level"]) == (gamma, location, "frame"))
            expect = at_cutoff(y, s, cutoff)
            assert (row["n"], row["nonblank"], row["kept_nonblank"], row["discarded_blank"]) == (
                expect.n, expect.nonblank, expect.kept_nonblank, expect.discarded_blank,
            ), (gamma, location)  # fmt: skip
            assert row["auc"] == pytest.approx(roc_auc(y, s)) if roc_auc(y, s) is not None else row["auc"] is None
        # Per burst: the missouri fox burst is one non-blank burst scored by its best frame.
        burst = next(r for r in rows if (r["gamma"], r["location"], r["level"]) == (gamma, "missouri", "burst"))
        best = max(scores[p] for p in labels if labels[p][1] == "missouri")
        assert (burst["n"], burst["nonblank"], burst["kept_nonblank"]) == (1, 1, int(best >= cutoff))


def test_reference_kernels_score_as_the_portable_integer_code(run_cli: RunCli, tmp_path: Path) -> None:
    """`--kernels reference` scores every frame with the runtime's reference kernels (what an arm64 Pi
    computes, tests/test_arm64.py): the same numbers as an interpreter opened on BUILTIN_REF by hand."""
    from convert.scoring import read_scores
    from firmware_app.classifiers import default_model_path, load_classifier
    from firmware_app.classifiers.tflite import import_runtime
    from firmware_app.imaging import ImagingSettings, prepare_jpeg

    model = default_model_path()  # the shipped int8 model: its kernels matter, a tiny one's may not
    saved = tmp_path / "scores.csv"
    run_cli("eval", "--model", model, "--labels", LABELS, "--kernels", "reference", "--save-scores", saved,
            "--quiet", check_rc=0)  # fmt: skip
    got = {Path(f.path).name: f.score for f in read_scores(saved)}
    classifier = load_classifier(model, 1)
    _, module = import_runtime(classifier.runtime)
    by_hand = module.Interpreter(
        model_path=str(model), num_threads=1, experimental_op_resolver_type=module.OpResolverType.BUILTIN_REF
    )
    by_hand.allocate_tensors()
    classifier.interpreter = by_hand  # type: ignore[attr-defined]
    for rel in fixture_labels():
        pixels = prepare_jpeg((FRAMES / rel).read_bytes(), classifier.card.input, ImagingSettings()).pixels
        assert got[Path(rel).name] == pytest.approx(classifier.score(pixels), abs=1e-9), rel
    assert len(got) == len(fixture_labels())


def test_bad_labels_file_is_a_clear_error(run_cli: RunCli, model_copy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("path,label\nx.jpg,maybe\n")
    done = run_cli("tune", "--model", model_copy, "--labels", bad, "--quiet")
    assert done.returncode == 2
    assert f"{bad}:2" in done.stderr and "maybe" in done.stderr
    assert "Traceback" not in done.stderr
