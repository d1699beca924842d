"""Camera context, the pure parts: the per-cell score, the drift measure, the reference bank, fusion."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from firmware_app.actions import ContextState
from firmware_app.context import (
    Assessment,
    CameraContext,
    ContextSettings,
    TopUpFrame,
)
from firmware_app.context.bank import ANY_CAMERA, BankError, ReferenceBank
from firmware_app.context.extractor import unit_cells
from firmware_app.context.score import baseline, compare, distance_map, excess_share
from firmware_app.decision import Candidate, Cutoffs, burst_is_blank, frame_decision, is_blank
from firmware_app.ledger import Ledger

RNG = np.random.default_rng(7)


def scene(h: int = 6, w: int = 8, c: int = 16, noise: float = 0.0, base: np.ndarray | None = None) -> np.ndarray:
    """A feature map: a fixed 'scene' plus a little per-frame noise (wind, sensor), unit cells."""
    start = base if base is not None else RNG.normal(size=(h, w, c))
    return unit_cells(start + noise * RNG.normal(size=start.shape))


BASE = RNG.normal(size=(6, 8, 16))


# -- the score ----------------------------------------------------------------------------------
def test_identical_frame_is_zero_everywhere() -> None:
    frame = scene(base=BASE)
    assert np.allclose(distance_map(frame, frame[None]), 0.0, atol=1e-5)


def test_a_local_change_shows_in_that_cell_only() -> None:
    ref = scene(base=BASE)
    changed = BASE.copy()
    changed[2, 3] = RNG.normal(size=16) * 5  # an animal in one cell
    dmap = distance_map(scene(base=changed), ref[None])
    assert np.unravel_index(np.argmax(dmap), dmap.shape) == (2, 3)
    assert dmap[2, 3] > 0.3
    assert np.median(dmap) < 1e-4  # the rest of the scene still matches: not drift


def test_a_one_cell_shift_still_matches() -> None:
    """A camera nudged by wind (or a strap) by less than a cell is the same scene."""
    ref = scene(base=BASE)
    shifted = np.roll(BASE, 1, axis=1)
    dmap = distance_map(scene(base=shifted), ref[None])
    assert np.allclose(dmap[:, 1:], 0.0, atol=1e-5)  # every cell that has its old neighbour in view


def test_best_reference_wins_and_moved_camera_is_drift() -> None:
    refs = np.stack([scene(base=BASE), scene()])  # the right scene and an unrelated one
    near = compare(scene(base=BASE, noise=0.05), refs, baseline(refs[:1]))
    moved = compare(scene(), refs[:1], baseline(refs[:1]))
    assert near.score < 0.05 and near.mismatch < 0.05
    assert moved.mismatch > 0.5  # a change everywhere: the references do not describe this scene


def test_baseline_is_the_banks_own_noise() -> None:
    assert baseline(scene(base=BASE)[None]).level == 0.0  # one reference: nothing to compare
    calm = np.stack([scene(base=BASE, noise=0.01) for _ in range(4)])
    windy = np.stack([scene(base=BASE, noise=0.4) for _ in range(4)])
    assert baseline(windy).level > baseline(calm).level + 0.05
    frame = scene(base=BASE, noise=0.4)
    # the same windy frame scores lower against a windy bank than it would raw: one cutoff for all
    assert compare(frame, windy, baseline(windy)).score < compare(frame, windy, baseline(calm)).score


def test_the_score_is_the_share_of_the_change_beyond_the_cameras_own_noise() -> None:
    """excess_share: (peak - level) / (peak + noise floor). The same most-changed cell (peak 0.5)
    means less at a camera whose references differ by 0.3 from each other than at one whose
    references are near-copies; one cutoff then serves both."""
    assert excess_share(0.5, 0.3, None) == pytest.approx(0.2)  # cards made before the calibration
    assert excess_share(0.5, 0.3, 0.1) == pytest.approx(0.2 / 0.6)
    assert excess_share(0.5, 0.02, 0.1) == pytest.approx(0.48 / 0.6)
    assert excess_share(0.3, 0.3, 0.1) == 0.0  # as changed as the references are from each other
    assert excess_share(0.1, 0.3, 0.1) < 0  # closer to them than they are to each other
    assert all(excess_share(peak, 0.0, 0.1) < 1 for peak in (0.5, 1.0, 2.0))  # bounded: fits a card's cutoff
    # the noise floor: a bank of near-copies (level 0) does not make a speck of change a certain animal
    assert excess_share(0.02, 0.0, 0.1) == pytest.approx(0.02 / 0.12)


def test_compare_reports_the_peak_and_level_it_calibrated() -> None:
    refs = np.stack([scene(base=BASE, noise=0.3) for _ in range(3)])
    changed = BASE.copy()
    changed[2, 3] = RNG.normal(size=16) * 5
    frame, base = scene(base=changed), baseline(refs)
    plain, calibrated = compare(frame, refs, base), compare(frame, refs, base, noise_floor=0.1)
    assert plain.peak == calibrated.peak > 0.3 and plain.level == calibrated.level == base.level > 0
    assert plain.score == pytest.approx(plain.peak - base.level)
    assert calibrated.score == pytest.approx((calibrated.peak - base.level) / (calibrated.peak + 0.1))
    assert calibrated.cell == plain.cell == (2, 3) and calibrated.mismatch == plain.mismatch


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="do not match"):
        distance_map(scene(4, 4, 16), scene(base=BASE)[None])


# -- fusion -------------------------------------------------------------------------------------
def test_context_decides_when_the_scene_matched() -> None:
    c = Cutoffs(classifier=0.1, context=0.3)
    assert is_blank(0.2, c) is False  # no context: the classifier keeps it
    assert is_blank(0.2, c, context_score=0.1) is True  # the scene matched: blank despite the classifier
    assert is_blank(0.05, c, context_score=0.4) is False  # a local change: kept despite the classifier
    assert frame_decision(None, c, 0.0) == "unknown"  # unscored: kept, whatever the context
    burst = [Candidate(1, "a/1.jpg", "x", 0, None, 0.2, 0.1), Candidate(2, "a/2.jpg", "y", 1, None, 0.05, 0.35)]
    assert not burst_is_blank(burst, c)  # one frame with a local change keeps the burst


# -- the bank -----------------------------------------------------------------------------------
def bank_at(tmp_path: Path, max_refs: int = 3, extractor: str = "ext 1") -> ReferenceBank:
    return ReferenceBank(tmp_path / "references.db", extractor, max_refs)


def add(bank: ReferenceBank, origin: str, n: int, camera: str = "cam1", mode: str = "day") -> int | None:
    return bank.add(camera, mode, scene(base=BASE, noise=0.1), origin=origin, source=f"{origin}{n}.jpg",
                    sha256=f"{origin}{n}", burst=f"b{n}", captured_ts=float(n))  # fmt: skip


def test_bank_keeps_modes_apart_and_survives_a_restart(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    add(bank, "manual", 1)
    add(bank, "manual", 2, mode="ir")
    bank.close()
    bank = bank_at(tmp_path)
    day, ir = bank.view("cam1", "day"), bank.view("cam1", "ir")
    assert day is not None and ir is not None and len(day.ids) == 1 and len(ir.ids) == 1
    assert bank.view("cam2", "day") is None
    assert day.features.shape == (1, 6, 8, 16) and day.features.dtype == np.float32


def test_top_up_replaces_only_automatic_references(tmp_path: Path) -> None:
    bank = bank_at(tmp_path, max_refs=3)
    add(bank, "manual", 1)
    for n in range(2, 6):
        add(bank, "auto", n)
    origins = [r.origin for r in bank.list("cam1")]
    assert origins == ["manual", "auto", "auto"]  # oldest auto ones went
    assert [r.source for r in bank.list("cam1")][1:] == ["auto4.jpg", "auto5.jpg"]
    for n in range(6, 9):
        add(bank, "manual", n)  # a person's choice replaces anything, autos first
    assert [r.origin for r in bank.list("cam1")] == ["manual"] * 3
    assert add(bank, "auto", 9) is None  # a full bank of chosen frames is never overwritten by top-up


def test_same_frame_twice_and_other_extractor(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    assert add(bank, "manual", 1) is not None
    assert add(bank, "manual", 1) is None
    bank.close()
    other = bank_at(tmp_path, extractor="ext 2")
    assert other.view("cam1", "day") is None  # features of another model are never compared
    assert other.stale() == 1


def test_view_sees_changes_made_by_another_process(tmp_path: Path) -> None:
    daemon, cli = bank_at(tmp_path), bank_at(tmp_path)
    assert daemon.view("cam1", "day") is None
    add(cli, "manual", 1)
    view = daemon.view("cam1", "day")
    assert view is not None and len(view.ids) == 1
    cli.reset("cam1")
    assert daemon.view("cam1", "day") is None


def test_references_never_include_the_scored_burst(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    add(bank, "manual", 1)
    add(bank, "manual", 2)
    view = bank.view("cam1", "day")
    assert view is not None
    assert view.excluding_burst("b1").bursts == ("b2",)
    assert view.excluding_burst("elsewhere") is view


def test_capture_requests(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    bank.request_capture("cam1", 2)
    assert not bank.take_capture("cam2")
    assert bank.take_capture("cam1") and bank.take_capture("cam1") and not bank.take_capture("cam1")
    bank.request_capture(ANY_CAMERA, 1)
    assert bank.take_capture("cam9") and bank.captures() == {}


def test_bank_errors_are_clear(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    with pytest.raises(BankError, match="shape"):
        bank.add("cam1", "day", np.zeros((4, 4)), origin="manual", source="x.jpg", sha256="s")
    with pytest.raises(BankError, match="origin"):
        bank.add("cam1", "dusk", scene(), origin="manual", source="x.jpg", sha256="s")
    (tmp_path / "not-a-folder").write_text("x")  # store.root is a file: the bank cannot be created there
    with pytest.raises(BankError, match=r"not-a-folder/references\.db"):
        ReferenceBank(tmp_path / "not-a-folder" / "references.db", "ext 1")


# -- top-up rules -------------------------------------------------------------------------------
class FixedExtractor:
    """Stands in for the TFLite extractor where the test is about bank rules, not features."""

    def __init__(self) -> None:
        self.card = type("Card", (), {"label": "ext 1"})()


def matched(score: float, features: np.ndarray | None = None) -> Assessment:
    return Assessment(
        ContextState.MATCHED, "day", score, 0.01, 2, features if features is not None else scene(base=BASE)
    )


def test_top_up_only_from_bursts_both_call_blank(tmp_path: Path) -> None:
    bank = bank_at(tmp_path, max_refs=12)
    ctx = CameraContext(FixedExtractor(), bank, ContextSettings(cutoff=0.3, veto=0.5, drift_limit=0.25,
                                                                topup_spacing_s=600))  # fmt: skip

    def frames(ts: float, scores: list[float], context: list[Assessment]) -> list[TopUpFrame]:
        return [TopUpFrame(f"cam1/{ts + i}.jpg", f"{ts + i}", ts + i, s, a) for i, (s, a) in
                enumerate(zip(scores, context, strict=True))]  # fmt: skip

    assert not ctx.top_up("cam1", "day", "k1", frames(0, [0.01, 0.5], [matched(0.1), matched(0.1)]), 0.1)
    assert not ctx.top_up("cam1", "day", "k2", frames(0, [0.01, 0.01], [matched(0.1), matched(0.4)]), 0.1)
    no_refs = Assessment(ContextState.NO_REFERENCES, "day")
    assert not ctx.top_up("cam1", "day", "k3", frames(0, [0.01], [no_refs]), 0.1)
    assert ctx.top_up("cam1", "day", "k4", frames(0, [0.01, 0.02, 0.01], [matched(0.1)] * 3), 0.1)
    assert [r.source for r in bank.list()] == ["cam1/1.jpg"]  # one frame of the burst, its middle
    assert not ctx.top_up("cam1", "day", "k5", frames(300, [0.01], [matched(0.1)]), 0.1)  # too soon
    assert ctx.top_up("cam1", "day", "k6", frames(1000, [0.01], [matched(0.1)]), 0.1)


# -- the veto: a confident classifier is never overruled, at every camera ---------------------------
TINY_FEATURES = Path(__file__).parent / "fixtures" / "models" / "tiny_features.tflite"


@pytest.mark.parametrize(
    ("reference_score", "frame_score", "state"),
    [
        (0.01, 0.7, ContextState.VETOED),  # it calls the empty scene empty and is sure of this frame: kept
        (0.01, 0.3, ContextState.MATCHED),  # not sure enough
        (0.5, 0.96, ContextState.VETOED),  # empty frames score 0.5 here; 0.96 clears them by 2 logits: kept
        (0.5, 0.79, ContextState.MATCHED),  # ... 0.79 does not: context decides
        (0.99, 0.995, ContextState.MATCHED),  # a scene it always calls an animal (a tunnel floor): no veto
        (None, 0.99, ContextState.VETOED),  # references never scored: the plain veto
    ],
)
def test_a_confident_classifier_is_not_overruled_where_its_confidence_means_something(
    tmp_path: Path, reference_score: float | None, frame_score: float, state: str
) -> None:
    from firmware_app.context import FrameFacts
    from firmware_app.context.extractor import TFLiteFeatureExtractor

    extractor = TFLiteFeatureExtractor(TINY_FEATURES, threads=1)
    pixels = np.full((extractor.card.input.height, extractor.card.input.width, 3), 90, np.uint8)
    pixels[::4] = 160  # some texture
    bank = ReferenceBank(tmp_path / "references.db", extractor.card.label)
    bank.add("cam1", "day", extractor.features(pixels), origin="manual", source="ref.jpg", sha256="r",
             score=reference_score)  # fmt: skip
    context = CameraContext(extractor, bank, ContextSettings(cutoff=0.3, veto=0.5, drift_limit=0.25,
                                                             topup_spacing_s=0))  # fmt: skip
    facts = FrameFacts("cam1/f.jpg", "f", 0.0, None, frame_score, classifier_cutoff=0.1)
    assert context.assess("cam1", "day", pixels, facts).state == state


# -- the ledger ---------------------------------------------------------------------------------
def test_version_1_ledger_gains_the_context_columns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE frames (id INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,"
        " captured_at TEXT, captured_ts REAL NOT NULL, time_source TEXT NOT NULL, burst_hint TEXT, burst TEXT,"
        " score REAL, cutoff REAL, gamma REAL, exposure TEXT, decision TEXT, action TEXT, dest TEXT,"
        " state TEXT NOT NULL, error TEXT, store_error TEXT, model TEXT, model_version TEXT, seen_at TEXT NOT NULL,"
        " decided_at TEXT, done_at TEXT, UNIQUE (path, sha256));"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "INSERT INTO frames (path, sha256, size, captured_ts, time_source, score, state, seen_at)"
        " VALUES ('a.jpg', 'x', 1, 0, 'mtime', 0.2, 'scored', 'now');"
    )
    old.commit()
    old.close()
    ledger = Ledger(path)
    row = ledger.in_state("scored")[0]
    assert row.path == "a.jpg" and row.context_score is None and row.context_state is None
    assert ledger.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
