"""`eval --context --lolo`'s choice of the context cutoff (convert/context_eval.py), on constructed
replays: every number here is worked out by hand from the frames the test makes."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from convert.context_eval import ReplayFrame
from convert.context_lolo import (
    ON_CONTEXT_ALONE,
    HeldOutScoresError,
    context_alone_floor,
    held_out_classifier,
    lolo,
    read_held_out,
    render_lolo,
)
from convert.labels import LabelledFrame
from firmware_app.actions import ContextState
from firmware_app.context import Assessment

CLASSIFIER_CUTOFF = 0.05
_numbers = itertools.count()


def frame(group: str, burst: str, label: str, p: float, state: ContextState, context: float) -> ReplayFrame:
    n = next(_numbers)
    labelled = LabelledFrame(Path(f"/{group}/{burst}/{n}.jpg"), label, group, burst, camera=f"{group}-cam")
    return ReplayFrame(labelled, f"{group}-cam", f"{group}|{burst}", n, p, assessment=Assessment(state, "day", context))


def sure_animals(group: str) -> list[ReplayFrame]:
    """A place where the classifier is sure of every animal (vetoed) and context scores them 0.30-0.39,
    its blanks 0.05: the veto keeps its animals at any context cutoff."""
    rows = [frame(group, f"a{i}", "animal", 0.99, ContextState.VETOED, 0.30 + i / 100) for i in range(10)]
    return rows + [frame(group, f"b{i}", "blank", 0.01, ContextState.MATCHED, 0.05) for i in range(10)]


def unsure_animals(group: str, lowest: float) -> list[ReplayFrame]:
    """A place where the classifier is unsure (p 0.3: no veto), so context alone decides its animals."""
    rows = [frame(group, f"a{i}", "animal", 0.3, ContextState.MATCHED, lowest + i / 100) for i in range(10)]
    return rows + [frame(group, f"b{i}", "blank", 0.01, ContextState.MATCHED, 0.1) for i in range(10)]


def test_the_floor_keeps_the_target_share_of_animal_frames_compared_in_a_matched_scene() -> None:
    rows = sure_animals("tunnel")  # 10 animal frames, context 0.30 ... 0.39
    assert context_alone_floor(rows, 0.9) == pytest.approx(0.31)  # keeps 9 of 10
    assert context_alone_floor(rows, 0.97) == pytest.approx(0.30)  # 9.7 of 10: all of them
    drift = [frame("x", "d", "animal", 0.3, ContextState.DRIFT, 0.0)]  # not a matched scene: not counted
    assert context_alone_floor(rows + drift, 0.9) == pytest.approx(0.31)
    assert context_alone_floor([r for r in rows if not r.y], 0.9) is None


def test_groups_whose_animals_the_veto_keeps_still_limit_the_cutoff_by_their_context_scores() -> None:
    """Held out, the unsure place gets its cutoff from the sure places only. Their bursts alone
    allow any cutoff (2.0); without the frame floor it would discard every animal of the unsure
    place. The floor (their animals' lowest context score, 0.30) keeps the unsure place's animals
    from 0.30 up."""
    rows = sure_animals("tunnel") + sure_animals("burrow") + unsure_animals("trail", lowest=0.28)
    result = lolo(rows, CLASSIFIER_CUTOFF, 0.97, fallback=0.5)
    assert result["highest_safe_cutoff_per_group"]["tunnel"] == 2.0  # the veto keeps them all
    trail = next(f for f in result["folds"] if f["held_out"] == "trail")
    assert trail["context_cutoff"] == pytest.approx(0.30) and trail["chosen_by"] == [ON_CONTEXT_ALONE]
    assert (trail["animal_bursts_kept"], trail["animal_bursts"]) == (8, 10)  # 0.30 ... 0.37 kept
    assert (trail["matched_animal_frames_kept_on_context_alone"], trail["matched_animal_frames"]) == (8, 10)
    # the tunnel's animals, held out at the others' cutoff (0.28): all kept by the veto, and by context alone too
    tunnel = next(f for f in result["folds"] if f["held_out"] == "tunnel")
    assert tunnel["animal_bursts_kept"] == tunnel["matched_animal_frames_kept_on_context_alone"] == 10
    assert (trail["blank_frames_with_references_discarded"], trail["blank_frames_with_references"]) == (10, 10)
    # with every group in, the unsure place's lowest animal (0.28) sets it, by both rules
    assert result["shipping_cutoff"] == pytest.approx(0.28)
    assert result["shipping_chosen_by"] == sorted([ON_CONTEXT_ALONE, "trail"])


def test_each_held_out_group_names_its_failures_worst_first() -> None:
    """The trail, held out at 0.30, loses its two animals under it (0.28, 0.29): named as lost bursts
    and as frames context alone missed, lowest first; the tunnel, held out at 0.28, loses nothing,
    and its blanks (0.05) are all discarded; a blank kept is named with what it was judged against."""
    kept_blank = frame("trail", "bk", "blank", 0.01, ContextState.MATCHED, 0.9)
    kept_blank = replace(kept_blank, references=("/trail/ref/1.jpg",))
    rows = sure_animals("tunnel") + sure_animals("burrow") + unsure_animals("trail", lowest=0.28) + [kept_blank]
    folds = {f["held_out"]: f for f in lolo(rows, CLASSIFIER_CUTOFF, 0.97, fallback=0.5)["folds"]}
    trail = folds["trail"]["failures"]
    assert [f["burst"] for f in trail["animal_bursts_lost"]] == ["trail|a0", "trail|a1"]
    missed = trail["animal_frames_missed_on_context_alone"]
    assert [f["context"] for f in missed] == pytest.approx([0.28, 0.29])
    assert [(f["burst"], f["references"]) for f in trail["blank_frames_with_references_kept"]] == [
        ("trail|bk", ["/trail/ref/1.jpg"])
    ]
    assert folds["tunnel"]["failures"] == {"animal_bursts_lost": [], "animal_frames_missed_on_context_alone": [],
                                           "blank_frames_with_references_kept": []}  # fmt: skip


def test_the_report_names_each_burst_lost_held_out(capsys: pytest.CaptureFixture[str]) -> None:
    rows = sure_animals("tunnel") + sure_animals("burrow") + unsure_animals("trail", lowest=0.28)
    render_lolo(lolo(rows, CLASSIFIER_CUTOFF, 0.97, fallback=0.5))
    lost = [line for line in capsys.readouterr().out.splitlines() if line.startswith("lost held out")]
    assert [line.split(",")[0] for line in lost] == ["lost held out (trail): burst trail|a0",
                                                     "lost held out (trail): burst trail|a1"]  # fmt: skip


def test_a_held_out_group_never_chooses_its_own_cutoff() -> None:
    rows = sure_animals("tunnel") + unsure_animals("trail", lowest=0.10)
    folds = {f["held_out"]: f for f in lolo(rows, CLASSIFIER_CUTOFF, 0.97, fallback=0.5)["folds"]}
    assert folds["tunnel"]["context_cutoff"] == pytest.approx(0.10)  # the trail's lowest animal
    assert "trail" in folds["tunnel"]["chosen_by"] and "tunnel" not in folds["tunnel"]["chosen_by"]
    assert folds["trail"]["context_cutoff"] == pytest.approx(0.30)  # the tunnel's animals on context alone


def calibrated(group: str, burst: str, label: str, peak: float, level: float) -> ReplayFrame:
    """A frame compared in a matched scene (p 0.3: no veto, not classifier-blank): context alone
    decides, and its score can be recomputed under any calibration from its peak and level."""
    row = frame(group, burst, label, 0.3, ContextState.MATCHED, peak - level)
    assert row.assessment is not None
    return replace(row, assessment=replace(row.assessment, peak=peak, level=level))


def trial(recall_met: bool, kept_on_context_alone: int, blanks_discarded: int) -> dict[str, object]:
    """One calibration's result inside a choice, as `lolo` reports it."""
    return {"recall_met": recall_met, "matched_animal_frames_kept_on_context_alone": kept_on_context_alone,
            "blank_frames_with_references_discarded": blanks_discarded}  # fmt: skip


def place(group: str, blank_peak: float, level: float) -> list[ReplayFrame]:
    """Ten animal bursts: one faint animal, the same at every place (peak 0.45 over a level of 0.1:
    difference 0.35, share at noise floor 0.1 = 0.35 / 0.55 = 0.636), so every cutoff any fold
    chooses keeps it, and nine clear ones (peak 0.95, level 0.1); and ten blank frames."""
    rows = [calibrated(group, "faint", "animal", 0.45, 0.1)]
    rows += [calibrated(group, f"a{i}", "animal", 0.95, 0.1) for i in range(9)]
    return rows + [calibrated(group, f"b{i}", "blank", blank_peak, level) for i in range(10)]


def test_the_calibration_is_chosen_leave_one_location_out_within_the_other_groups() -> None:
    """Three places whose empty frames differ a lot from their references (peak 0.9 over a noisy
    level of 0.5): as a difference they score 0.4, over the 0.35 that the faint animal allows, and
    are all kept; as a share at noise floor 0.1 they score 0.4 / 1.0 = 0.4, under 0.636, and all go.
    A calm place (blank peak 0.05 over a level of 0.02) discards its blanks either way. Every fold,
    choosing among the other groups only, picks the noise floor; so does shipping."""
    rows = place("tunnel", 0.9, 0.5) + place("burrow", 0.9, 0.5) + place("forest", 0.9, 0.5)
    rows += place("desert", 0.05, 0.02)
    result = lolo(rows, CLASSIFIER_CUTOFF, 0.97, fallback=0.5, forms=(None, 0.1))
    for fold in result["folds"]:
        assert fold["noise_floor"] == 0.1 and fold["context_cutoff"] == pytest.approx(0.35 / 0.55)
        assert (fold["animal_bursts_kept"], fold["animal_bursts"]) == (10, 10)
        assert fold["blank_frames_with_references_discarded"] == 10
        assert fold["held_out"] not in fold["calibration_trials"]  # trials name calibrations, not groups
    tunnel = next(f for f in result["folds"] if f["held_out"] == "tunnel")
    # inside burrow, forest and desert: the difference discards only the desert's 10; the share all 30
    assert tunnel["calibration_trials"] == {"difference": trial(True, 30, 10), "noise floor 0.1": trial(True, 30, 30)}
    assert result["shipping_noise_floor"] == 0.1 and result["shipping_cutoff"] == pytest.approx(0.35 / 0.55)
    assert result["pooled_held_out"]["blank_frames_with_references_discarded"] == 40
    # each blank frame is its own burst here: every one of the 40 blank bursts is gone
    assert result["pooled_held_out"]["blank_bursts_with_references_discarded"] == 40


def test_recall_comes_before_blanks_in_the_calibration_choice() -> None:
    """A calibration that discards more but loses animals at an inner group is not chosen. Two
    tunnels (animals peak 0.9 over level 0.1: difference 0.8, share 0.8 / 1.0 = 0.8; blanks 0.5 over
    0.3: 0.2, share 0.33) and a desert of near-copy references (level 0: animals peak 0.5, so 0.5 as
    a difference and 0.5 / 0.6 = 0.83 as a share; blanks peak 0.45, so 0.45 and 0.45 / 0.55 = 0.82)."""

    def desert() -> list[ReplayFrame]:
        rows = [calibrated("desert", f"a{i}", "animal", 0.5, 0.0) for i in range(10)]
        return rows + [calibrated("desert", f"b{i}", "blank", 0.45, 0.0) for i in range(10)]

    def tunnel(group: str) -> list[ReplayFrame]:
        rows = [calibrated(group, f"a{i}", "animal", 0.9, 0.1) for i in range(10)]
        return rows + [calibrated(group, f"b{i}", "blank", 0.5, 0.3) for i in range(10)]

    result = lolo(tunnel("tunnel") + tunnel("burrow") + desert(), CLASSIFIER_CUTOFF, 0.97, 0.5, forms=(None, 0.1))
    # as a difference the desert, held out inside the choice, gets the tunnels' 0.8 and loses all ten
    # animals (0.5), though every blank of all three places goes (0.2, 0.2 and 0.45 under their cutoffs);
    # as a share it keeps them (0.83 >= 0.8) and its own blanks (0.82) stay
    trials = result["shipping_calibration_trials"]
    difference, share = trials["difference"], trials["noise floor 0.1"]
    assert (difference["recall_met"], difference["blank_frames_with_references_discarded"]) == (False, 30)
    assert (share["recall_met"], share["blank_frames_with_references_discarded"]) == (True, 20)
    assert result["shipping_noise_floor"] == 0.1


def test_animals_kept_on_context_alone_come_before_blanks_in_the_calibration_choice() -> None:
    """Where the veto keeps every animal burst, the calibration that keeps more animal frames on
    context alone wins over one that discards more blanks: at an unseen camera the veto can be wrong.
    Two noisy places (level 0.3; animals peak 0.62: difference 0.32, share 0.32 / 0.72 = 0.44; blanks
    peak 0.55: 0.25 and 0.25 / 0.65 = 0.38) and a quiet one (level 0; animals peak 0.3: 0.30 and 0.75;
    blanks peak 0.28: 0.28 and 0.74). As a difference the quiet place, held out inside the choice, gets
    the noisy places' 0.32: its animals (0.30) stand on the veto alone, and its blanks go; as a share
    it gets 0.44 and keeps both."""

    def place(group: str, level: float, animal: float, blank: float) -> list[ReplayFrame]:
        rows = []
        for i in range(10):
            row = calibrated(group, f"a{i}", "animal", animal, level)
            assert row.assessment is not None
            rows.append(replace(row, score=0.99, assessment=replace(row.assessment, state=ContextState.VETOED)))
        return rows + [calibrated(group, f"b{i}", "blank", blank, level) for i in range(10)]

    rows = place("tunnel", 0.3, 0.62, 0.55) + place("burrow", 0.3, 0.62, 0.55) + place("desert", 0.0, 0.3, 0.28)
    result = lolo(rows, CLASSIFIER_CUTOFF, 0.97, 0.5, forms=(None, 0.1))
    trials = result["shipping_calibration_trials"]
    assert trials == {"difference": trial(True, 20, 30), "noise floor 0.1": trial(True, 30, 20)}
    assert result["shipping_noise_floor"] == 0.1


# -- the classifier that never saw the group (--held-out-scores) -------------------------------------
def with_references(row: ReplayFrame, refs: dict[str, str]) -> ReplayFrame:
    """`refs`: reference path -> its lighting mode, as the deployment replay records them."""
    return replace(row, references=tuple(refs), reference_modes=tuple(refs.values()))


def test_a_frame_vetoed_by_the_shipped_classifier_is_judged_by_context_when_the_held_out_one_is_unsure() -> None:
    """The shipped classifier trained on this place: p 0.99, vetoed. The one that never saw it says
    0.30: no veto, so context (0.20, under its cutoff) decides, and the animal is lost there."""
    animal = with_references(frame("trail", "a", "animal", 0.99, ContextState.VETOED, 0.20), {"/trail/r1.jpg": "day"})
    held = held_out_classifier([animal], {str(animal.frame.path): 0.30, "/trail/r1.jpg": 0.01}, veto=0.5, margin=2.0)
    assert held[0].score == pytest.approx(0.30)
    assert held[0].assessment is not None and held[0].assessment.state == ContextState.MATCHED
    folds = lolo(held + sure_animals("tunnel"), CLASSIFIER_CUTOFF, 0.97, fallback=0.5)["folds"]
    trail = next(f for f in folds if f["held_out"] == "trail")
    assert trail["animal_bursts_kept"] == 0  # at the tunnel's floor (0.30), context alone loses it
    # the same frame with its recorded (flattered) classifier: the veto keeps it
    flattered = next(f for f in lolo([animal, *sure_animals("tunnel")], CLASSIFIER_CUTOFF, 0.97, 0.5)["folds"]
                     if f["held_out"] == "trail")  # fmt: skip
    assert flattered["animal_bursts_kept"] == 1


def test_the_held_out_veto_clears_the_margin_over_the_references_of_the_frames_own_lighting_mode() -> None:
    """p 0.95 (logit 2.94) clears a day reference at 0.2 (logit -1.39) by far more than 2 logits; an
    IR reference at 0.9 (logit 2.20) is another mode's and does not count. With a day reference at
    0.9 it no longer clears the margin: the scene is one this classifier calls an animal when empty."""
    row = frame("trail", "a", "animal", 0.2, ContextState.MATCHED, 0.1)
    refs = {"/trail/day.jpg": "day", "/trail/ir.jpg": "ir"}
    scores = {str(row.frame.path): 0.95, "/trail/day.jpg": 0.2, "/trail/ir.jpg": 0.9}
    (fired,) = held_out_classifier([with_references(row, refs)], scores, veto=0.5, margin=2.0)
    assert fired.assessment is not None and fired.assessment.state == ContextState.VETOED
    (refused,) = held_out_classifier([with_references(row, refs)], scores | {"/trail/day.jpg": 0.9}, 0.5, 2.0)
    assert refused.assessment is not None and refused.assessment.state == ContextState.MATCHED


def test_drift_keeps_its_state_and_each_group_is_judged_at_its_own_held_out_classifier_cutoff() -> None:
    """A drifted blank frame is blank only if the classifier agrees: p 0.05 is under the trail's own
    held-out cutoff (0.1) but not the tunnel's (0.01)."""
    trail = frame("trail", "b", "blank", 0.5, ContextState.DRIFT, 0.0)
    tunnel = frame("tunnel", "b", "blank", 0.5, ContextState.DRIFT, 0.0)
    rows = held_out_classifier([trail, tunnel], {str(trail.frame.path): 0.05, str(tunnel.frame.path): 0.05}, 0.5, 2.0)
    assert all(r.assessment is not None and r.assessment.state == ContextState.DRIFT for r in rows)
    folds = {f["held_out"]: f for f in lolo(rows, {"trail": 0.1, "tunnel": 0.01}, 0.97, fallback=0.5)["folds"]}
    assert folds["trail"]["classifier_cutoff"] == 0.1 and folds["trail"]["blank_frames_discarded"] == 1
    assert folds["tunnel"]["classifier_cutoff"] == 0.01 and folds["tunnel"]["blank_frames_discarded"] == 0
    with pytest.raises(HeldOutScoresError, match="'elsewhere'"):
        lolo([replace(trail, frame=replace(trail.frame, location="elsewhere"))], {"trail": 0.1}, 0.97, 0.5)


def test_a_replayed_frame_without_a_held_out_score_is_named() -> None:
    row = frame("trail", "a", "animal", 0.9, ContextState.MATCHED, 0.5)
    with pytest.raises(HeldOutScoresError, match=r"1 replayed frames .*first: /trail/a/"):
        held_out_classifier([row], {}, 0.5, 2.0)


def test_held_out_scores_are_read_from_the_recipes_files_whatever_the_path_spelling(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    scores_csv = tmp_path / "lolo_scores.csv"
    scores_csv.write_text("path,label,location,sequence,score,gamma,error\n"
                          f"{tmp_path}/data/../data/a.jpg,animal,trail,s1,0.250000,,\n")  # fmt: skip
    lolo_json = tmp_path / "lolo.json"
    lolo_json.write_text('{"held_out": {"trail": {"cutoff": 0.0101, "chosen_by": "wellington"}}}')
    scores, cutoffs = read_held_out(scores_csv, lolo_json)
    assert scores == {str((tmp_path / "data" / "a.jpg").resolve()): 0.25} and cutoffs == {"trail": 0.0101}
    lolo_json.write_text('{"shipping_cutoff": 0.01}')
    with pytest.raises(HeldOutScoresError, match="no held_out table"):
        read_held_out(scores_csv, lolo_json)
    lolo_json.write_text('{"held_out": {"trail": {"cutoff": NaN}}}')
    with pytest.raises(HeldOutScoresError, match=r"held_out\.trail\.cutoff is not a number in 0\.\.1"):
        read_held_out(scores_csv, lolo_json)
    scores_csv.write_text("path,label,location,sequence,score,gamma,error\na.jpg,animal,trail,s1,nan,,\n")
    with pytest.raises(HeldOutScoresError, match=r"line 2: needs a path and a score in 0\.\.1"):
        read_held_out(scores_csv, lolo_json)
