"""Blank-filter metrics: pure numpy, no model, no files.

Conventions: `y` is 1 for non-blank (animal, human, vehicle) and 0 for blank; `s` is p(non-blank).
A frame is kept when s >= cutoff. Recall is the share of non-blanks kept (animals not lost); TNR is
the share of blanks discarded (the work saved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AtCutoff:
    cutoff: float
    n: int
    nonblank: int
    blank: int
    kept_nonblank: int  # true positives
    discarded_blank: int  # true negatives
    recall: float | None
    tnr: float | None
    precision: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def at_cutoff(y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, cutoff: float) -> AtCutoff:
    y_arr, s_arr = np.asarray(y, dtype=bool), np.asarray(s, dtype=np.float64)
    kept = s_arr >= cutoff
    tp = int(np.count_nonzero(kept & y_arr))
    tn = int(np.count_nonzero(~kept & ~y_arr))
    kept_total = int(np.count_nonzero(kept))
    nonblank = int(np.count_nonzero(y_arr))
    return AtCutoff(
        cutoff=float(cutoff),
        n=len(y_arr),
        nonblank=nonblank,
        blank=len(y_arr) - nonblank,
        kept_nonblank=tp,
        discarded_blank=tn,
        recall=_ratio(tp, nonblank),
        tnr=_ratio(tn, len(y_arr) - nonblank),
        precision=_ratio(tp, kept_total),
    )


def roc_auc(y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve: P(score of a non-blank > score of a blank), ties counting half."""
    y_arr, s_arr = np.asarray(y, dtype=bool), np.asarray(s, dtype=np.float64)
    pos, neg = s_arr[y_arr], s_arr[~y_arr]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    values = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(values))
    # Average ranks over ties (1-based), then the Mann-Whitney U statistic.
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or values[end] != values[start]:
            ranks[start:end] = (start + end + 1) / 2
            start = end
    rank_of = np.empty(len(values))
    rank_of[order] = ranks
    u = rank_of[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def tune_cutoff(y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, target_recall: float) -> float:
    """The highest cutoff that keeps at least `target_recall` of the non-blanks.

    Candidates are the non-blank scores themselves: keeping the k highest-scoring non-blanks needs
    a cutoff at the k-th highest non-blank score, and any higher cutoff would lose one more.
    """
    y_arr, s_arr = np.asarray(y, dtype=bool), np.asarray(s, dtype=np.float64)
    positives = np.sort(s_arr[y_arr])[::-1]
    if not len(positives):
        raise ValueError("no non-blank frames: a cutoff cannot be tuned for recall")
    need = int(np.ceil(target_recall * len(positives) - 1e-9))
    need = min(max(need, 1), len(positives))
    return float(positives[need - 1])


def group_max(
    y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, groups: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per burst: non-blank if any frame is, scored by its highest frame (the trap keeps a burst
    whole when any frame reaches the cutoff)."""
    y_arr, s_arr = np.asarray(y, dtype=bool), np.asarray(s, dtype=np.float64)
    keys = sorted(set(groups))
    index = {key: i for i, key in enumerate(keys)}
    gy = np.zeros(len(keys), dtype=bool)
    gs = np.full(len(keys), -np.inf)
    for label, score, group in zip(y_arr, s_arr, groups, strict=True):
        i = index[group]
        gy[i] |= bool(label)
        gs[i] = max(gs[i], score)
    return gy.astype(int), gs, keys


def bootstrap_recall_bound(
    y: Sequence[int] | np.ndarray,
    s: Sequence[float] | np.ndarray,
    groups: Sequence[str],
    cutoff: float,
    alpha: float = 0.05,
    rounds: int = 2000,
    seed: int = 0,
) -> float | None:
    """One-sided lower (1 - alpha) bound of recall at `cutoff`, resampling whole bursts.

    Frames of a burst are near duplicates, so resampling frames would overstate the certainty.
    """
    y_arr, s_arr = np.asarray(y, dtype=bool), np.asarray(s, dtype=np.float64)
    keys = sorted(set(groups))
    lookup = {key: i for i, key in enumerate(keys)}
    index = np.array([lookup[g] for g in groups])
    kept = s_arr >= cutoff
    tp = np.bincount(index, weights=(kept & y_arr).astype(float), minlength=len(keys))
    pos = np.bincount(index, weights=y_arr.astype(float), minlength=len(keys))
    if pos.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), size=(rounds, len(keys)))
    tp_sum, pos_sum = tp[draws].sum(axis=1), pos[draws].sum(axis=1)
    valid = pos_sum > 0
    recalls = tp_sum[valid] / pos_sum[valid]
    return float(np.quantile(recalls, alpha))


def curve(y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, points: int = 201) -> dict[str, list[float]]:
    """Recall and TNR against the cutoff, for plots."""
    cutoffs = np.linspace(0.0, 1.0, points)
    rows = [at_cutoff(y, s, float(c)) for c in cutoffs]
    return {
        "cutoff": cutoffs.tolist(),
        "recall": [r.recall if r.recall is not None else float("nan") for r in rows],
        "tnr": [r.tnr if r.tnr is not None else float("nan") for r in rows],
    }
