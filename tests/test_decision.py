"""firmware_app.decision: bursts, keep-if-any, fail open, and the reproducible audit sample."""

from __future__ import annotations

import pytest

from firmware_app.decision import (
    Candidate,
    audit_pick,
    burst_id,
    burst_is_blank,
    camera_of,
    frame_decision,
    group_bursts,
    is_blank,
)

T0 = 1_700_000_000.0


def frame(
    frame_id: int, path: str, ts: float, score: float | None = 0.1, hint: str | None = None, sha: str = ""
) -> Candidate:
    return Candidate(frame_id, path, sha or f"{frame_id:064x}", T0 + ts, hint, score)


def ids(bursts: list[list[Candidate]]) -> list[list[int]]:
    return [[f.frame_id for f in burst] for burst in bursts]


# -- grouping ---------------------------------------------------------------------------------
def test_time_gap_splits_bursts() -> None:
    frames = [frame(1, "a.jpg", 0), frame(2, "b.jpg", 1), frame(3, "c.jpg", 2), frame(4, "d.jpg", 30)]
    assert ids(group_bursts(frames, gap_s=10)) == [[1, 2, 3], [4]]


def test_gap_is_measured_from_the_previous_frame_not_the_first() -> None:
    # A slow trigger: each frame 8 s after the last, 24 s in all; with a 10 s gap it is one burst.
    frames = [frame(i, f"{i}.jpg", 8 * i) for i in range(4)]
    assert ids(group_bursts(frames, gap_s=10)) == [[0, 1, 2, 3]]


def test_gap_boundary_is_inclusive() -> None:
    frames = [frame(1, "a.jpg", 0), frame(2, "b.jpg", 10), frame(3, "c.jpg", 20.001)]
    assert ids(group_bursts(frames, gap_s=10)) == [[1, 2], [3]]


def test_gap_zero_makes_every_frame_its_own_burst() -> None:
    frames = [frame(1, "a.jpg", 0), frame(2, "b.jpg", 1), frame(3, "c.jpg", 2)]
    assert ids(group_bursts(frames, gap_s=0)) == [[1], [2], [3]]


def test_arrival_order_does_not_matter() -> None:
    frames = [frame(3, "c.jpg", 2), frame(1, "a.jpg", 0), frame(4, "d.jpg", 60), frame(2, "b.jpg", 1)]
    assert ids(group_bursts(frames, gap_s=10)) == [[1, 2, 3], [4]]


def test_cameras_are_never_mixed() -> None:
    frames = [
        frame(1, "cam1/a.jpg", 0),
        frame(2, "cam2/a.jpg", 0.5),
        frame(3, "cam1/b.jpg", 1),
        frame(4, "cam2/b.jpg", 1.5),
    ]
    bursts = group_bursts(frames, gap_s=10)
    assert ids(bursts) == [[1, 3], [2, 4]]
    assert all(len({camera_of(f.path) for f in burst}) == 1 for burst in bursts)


def test_camera_of_uses_the_folder() -> None:
    assert camera_of("cam1/a.jpg") == "cam1"
    assert camera_of("site/cam1/a.jpg") == "site/cam1"
    assert camera_of("a.jpg") == "."


def test_burst_hint_wins_over_time() -> None:
    frames = [
        frame(1, "a.jpg", 0, hint="trig-1"),
        frame(2, "b.jpg", 1, hint="trig-2"),  # close in time, but another trigger
        frame(3, "c.jpg", 100, hint="trig-1"),  # far in time, but the same trigger
    ]
    assert ids(group_bursts(frames, gap_s=10)) == [[1, 3], [2]]


def test_same_hint_in_two_cameras_is_two_bursts() -> None:
    frames = [frame(1, "cam1/a.jpg", 0, hint="0001"), frame(2, "cam2/a.jpg", 0, hint="0001")]
    assert ids(group_bursts(frames, gap_s=10)) == [[1], [2]]


def test_hinted_and_unhinted_frames_do_not_mix() -> None:
    frames = [frame(1, "a.jpg", 0, hint="t"), frame(2, "b.jpg", 1), frame(3, "c.jpg", 2)]
    assert ids(group_bursts(frames, gap_s=10)) == [[1], [2, 3]]


def test_every_frame_in_exactly_one_burst() -> None:
    frames = [frame(i, f"cam{i % 3}/{i}.jpg", (i * 7) % 50, hint="h" if i % 5 == 0 else None) for i in range(40)]
    bursts = group_bursts(frames, gap_s=4)
    flat = sorted(f.frame_id for burst in bursts for f in burst)
    assert flat == list(range(40))
    starts = [burst[0].captured_ts for burst in bursts]
    assert starts == sorted(starts)  # bursts come out in capture order


# -- blank or not -----------------------------------------------------------------------------
def test_frame_level_decision_at_the_cutoff() -> None:
    assert is_blank(0.249, 0.25) and not is_blank(0.25, 0.25) and not is_blank(0.9, 0.25)
    assert not is_blank(None, 0.25)
    assert frame_decision(0.1, 0.25) == "blank"
    assert frame_decision(0.25, 0.25) == "nonblank"
    assert frame_decision(None, 0.25) == "unknown"


def test_burst_kept_if_any_frame_reaches_the_cutoff() -> None:
    burst = [frame(1, "a.jpg", 0, 0.1), frame(2, "b.jpg", 1, 0.3), frame(3, "c.jpg", 2, 0.05)]
    assert not burst_is_blank(burst, cutoff=0.3)  # one frame exactly at the cutoff keeps all three
    assert burst_is_blank(burst, cutoff=0.31)


def test_failed_frame_makes_the_burst_non_blank() -> None:
    burst = [frame(1, "a.jpg", 0, 0.01), frame(2, "b.jpg", 1, None), frame(3, "c.jpg", 2, 0.02)]
    assert not burst_is_blank(burst, cutoff=0.9)
    assert burst_is_blank([burst[0], burst[2]], cutoff=0.9)


# -- audit sample -----------------------------------------------------------------------------
def test_audit_pick_is_deterministic() -> None:
    keys = [f"burst-{i}" for i in range(500)]
    first = [audit_pick(k, 0.1) for k in keys]
    assert first == [audit_pick(k, 0.1) for k in keys]
    assert any(first) and not all(first)


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.5])
def test_audit_rate_is_close_to_the_setting(rate: float) -> None:
    n = 10_000
    picked = sum(audit_pick(f"{i:016x}", rate) for i in range(n))
    # A uniform hash behaves like a fair draw: binomial standard deviation 0.0014 at 2 %, 0.005 at
    # 50 %. Allow 3.5 of them (0.005 at 2 %).
    tolerance = 3.5 * (rate * (1 - rate) / n) ** 0.5
    assert abs(picked / n - rate) <= tolerance


def test_audit_rate_edges() -> None:
    keys = [f"k{i}" for i in range(10_000)]
    assert not any(audit_pick(k, 0.0) for k in keys)
    assert all(audit_pick(k, 1.0) for k in keys)


def test_audit_sample_is_nested() -> None:
    """Raising the rate only adds bursts: one hash draw per burst, compared with the rate."""
    keys = [f"k{i}" for i in range(2_000)]
    low = {k for k in keys if audit_pick(k, 0.05)}
    high = {k for k in keys if audit_pick(k, 0.2)}
    assert low <= high and len(high) > len(low)


# -- burst identity ---------------------------------------------------------------------------
def test_burst_id_is_stable_and_from_the_first_frame() -> None:
    burst = [frame(1, "cam1/a.jpg", 0), frame(2, "cam1/b.jpg", 1)]
    same = {"sha": burst[0].sha256}
    rebuilt = [frame(7, "cam1/a.jpg", 0, **same), frame(8, "cam1/b.jpg", 1)]  # same frames, new row ids after a restart
    assert burst_id(burst) == burst_id(rebuilt)
    assert len(burst_id(burst)) == 16 and all(c in "0123456789abcdef" for c in burst_id(burst))
    assert burst_id(burst) != burst_id([frame(1, "cam2/a.jpg", 0)])
    assert burst_id(burst) != burst_id([frame(1, "cam1/a.jpg", 5)])
    assert burst_id(burst) == burst_id(burst[:1])  # frames joining later do not change it
    # a reset camera's new frame under an old name and time: other bytes, another burst
    assert burst_id(burst) != burst_id([frame(1, "cam1/a.jpg", 0, sha="e" * 64), frame(2, "cam1/b.jpg", 1)])


def test_burst_id_uses_the_source_hint() -> None:
    assert burst_id([frame(1, "a.jpg", 0, hint="trigger-42")]) == "trigger-42"


def test_grouping_then_ids_survive_a_restart() -> None:
    frames = [frame(i, f"cam{i % 2}/{i}.jpg", i * 2.0) for i in range(10)]
    first = [burst_id(b) for b in group_bursts(frames, gap_s=5)]
    again = [burst_id(b) for b in group_bursts(list(reversed(frames)), gap_s=5)]
    assert first == again and len(set(first)) == len(first)


# -- camera context may only discard where the scene matched ------------------------------------------
@pytest.mark.parametrize(
    ("state", "score", "context_score", "blank"),
    [
        ("matched", 0.9, 0.1, True),  # the scene matched its references: context decides
        ("matched", 0.01, 0.5, False),  # a local change keeps the frame whatever the classifier says
        ("drift", 0.01, 0.1, True),  # drift: blank only if both say blank ...
        ("drift", 0.5, 0.1, False),  # ... the classifier keeps it
        ("drift", 0.01, 0.5, False),  # ... context keeps it
        ("inconsistent", 0.5, 0.1, False),  # references that disagree: the same, fail open
        ("vetoed", 0.9, 0.1, False),  # the classifier is sure: never overruled
        ("no_references", 0.01, None, True),  # no context: the classifier alone
        ("failed", 0.9, None, False),
    ],
)
def test_context_can_discard_only_where_the_scene_matched(
    state: str, score: float, context_score: float | None, blank: bool
) -> None:
    from firmware_app.actions import ContextState
    from firmware_app.decision import Cutoffs

    cutoffs = Cutoffs(classifier=0.1, context=0.3)
    assert is_blank(score, cutoffs, context_score, ContextState(state)) is blank
    # whatever the context, it can never discard a frame the classifier keeps unless the scene matched
    if state != "matched":
        assert not is_blank(score, cutoffs, context_score, ContextState(state)) or score < cutoffs.classifier
