"""`eval --context --lolo`'s choice of the context cutoff (convert/context_eval.py), on constructed
replays: every number here is worked out by hand from the frames the test makes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from convert.context_eval import ON_CONTEXT_ALONE, ReplayFrame, context_alone_floor, lolo
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
    assert (trail["blank_frames_with_references_discarded"], trail["blank_frames_with_references"]) == (10, 10)
    # with every group in, the unsure place's lowest animal (0.28) sets it, by both rules
    assert result["shipping_cutoff"] == pytest.approx(0.28)
    assert result["shipping_chosen_by"] == sorted([ON_CONTEXT_ALONE, "trail"])


def test_a_held_out_group_never_chooses_its_own_cutoff() -> None:
    rows = sure_animals("tunnel") + unsure_animals("trail", lowest=0.10)
    folds = {f["held_out"]: f for f in lolo(rows, CLASSIFIER_CUTOFF, 0.97, fallback=0.5)["folds"]}
    assert folds["tunnel"]["context_cutoff"] == pytest.approx(0.10)  # the trail's lowest animal
    assert "trail" in folds["tunnel"]["chosen_by"] and "tunnel" not in folds["tunnel"]["chosen_by"]
    assert folds["trail"]["context_cutoff"] == pytest.approx(0.30)  # the tunnel's animals on context alone
