"""The camera-context score: how far a frame is from the camera's known-empty scene. Pure numpy.

For each cell of the stride-32 feature map: the cosine distance to the same cell of each reference,
allowing the reference to sit one cell off (wind, a slightly nudged camera), the smallest over the
references. An animal is a *local* change, so the frame's score is its most changed cell; a change
everywhere (the camera was moved, the scene flooded, day and IR mixed up) is drift instead, seen in
a low percentile of the cells (`DRIFT_PERCENTILE`): a moved camera changes nearly every cell, a big
animal standing close a third or half of them, so the median, which the first version used, took
big animals for drift (on unseen cameras it flagged 43 animal frames of 45 flagged). Drift never
discards more: the judge then needs the classifier to agree before calling a frame blank.

The score calibrates the most changed cell (`peak`) by the camera's own noise (`level`, how far its
references are from each other): `excess_share`. One context cutoff then means the same at a tunnel
floor whose empty frames differ by 0.2 from each other and at a camera whose references are a few
frames of one moment (level 0.05), where the first version's `peak - level` sat its blanks
0.3-0.4 over the cutoff that the tunnels' animals allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHIFTS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
DRIFT_PERCENTILE = 25.0  # the drift measure: this percentile of a frame's cell distances


def drift_level(dmap: np.ndarray) -> float:
    """How far the whole scene is from the references: a low percentile of the cells, which a local
    change (an animal, however big) leaves alone and a moved camera or a flooded scene does not."""
    return float(np.percentile(dmap, DRIFT_PERCENTILE))


def distance_map(features: np.ndarray, references: np.ndarray) -> np.ndarray:
    """[h, w] cosine distance of each cell to its best match among the references' cells within ±1.

    `features` is [h, w, c], `references` [k, h, w, c]; both unit-length per cell.
    """
    if references.ndim != 4 or references.shape[1:] != features.shape:
        raise ValueError(f"references {references.shape[1:]} do not match the frame's features {features.shape}")
    h, w, _ = features.shape
    best = np.full((h, w), 2.0, np.float32)
    for dy, dx in SHIFTS:
        # frame cell (y, x) against reference cell (y + dy, x + dx), where both exist
        fy, ry = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
        fx, rx = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
        similarity = np.einsum("hwc,khwc->khw", features[fy, fx], references[:, ry, rx]).max(axis=0)
        np.minimum(best[fy, fx], 1.0 - similarity, out=best[fy, fx])
    return best


@dataclass(frozen=True)
class Baseline:
    """How far the bank's references are from each other (leave one out): the camera's own noise."""

    level: float  # median over references of their score against the others: subtracted from scores
    spread: float  # median over references of their drift level against the others: drift inside the bank


def baseline(references: np.ndarray) -> Baseline:
    """A windy forest gives higher blank scores than a tunnel floor; subtracting this camera's own
    reference-to-reference level lets one cutoff serve every camera. Fewer than 2 references: 0."""
    if len(references) < 2:
        return Baseline(0.0, 0.0)
    maps = [distance_map(references[i], np.delete(references, i, axis=0)) for i in range(len(references))]
    return Baseline(float(np.median([m.max() for m in maps])), float(np.median([drift_level(m) for m in maps])))


@dataclass(frozen=True)
class Comparison:
    score: float  # the context score: `excess_share` of the most changed cell over the bank's level
    mismatch: float  # drift level (a low percentile of the cells): the whole scene differs
    cell: tuple[int, int]  # (row, column) of the most changed cell
    peak: float = 0.0  # the most changed cell's distance, before calibration
    level: float = 0.0  # the bank's baseline level it was calibrated by


def excess_share(peak: float, level: float, noise_floor: float | None) -> float:
    """The context score: the share of the most changed cell's distance that lies beyond the camera's
    own noise, (peak - level) / (peak + noise_floor). 0: no more changed than the references are from
    each other; towards 1: far beyond it; negative: closer than they are. Equivalent, for ranking, to
    (peak - level) / (level + noise_floor), the change in units of the camera's own noise, but bounded
    under 1, so its cutoff fits a model card. `noise_floor` keeps a bank of near-copies (level ~0)
    from calling every speck a change; it was chosen leave one location out (models/README.md).
    None: the first version's plain `peak - level` (extractor cards made before the calibration)."""
    if noise_floor is None:
        return peak - level
    return (peak - level) / (peak + noise_floor)


def compare(
    features: np.ndarray, references: np.ndarray, base: Baseline, noise_floor: float | None = None
) -> Comparison:
    dmap = distance_map(features, references)
    row, col = np.unravel_index(int(np.argmax(dmap)), dmap.shape)
    peak = float(dmap[row, col])
    return Comparison(excess_share(peak, base.level, noise_floor), drift_level(dmap), (int(row), int(col)), peak,
                      base.level)  # fmt: skip
