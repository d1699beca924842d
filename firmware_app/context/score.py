"""The camera-context score: how far a frame is from the camera's known-empty scene. Pure numpy.

For each cell of the stride-32 feature map: the cosine distance to the same cell of each reference,
allowing the reference to sit one cell off (wind, a slightly nudged camera), the smallest over the
references. An animal is a *local* change, so the frame's score is its most changed cell; a change
everywhere (the camera was moved, the scene flooded, day and IR mixed up) is drift instead, seen in
a low percentile of the cells (`DRIFT_PERCENTILE`): a moved camera changes nearly every cell, a big
animal standing close a third or half of them, so the median, which the first version used, took
big animals for drift (on unseen cameras it flagged 43 animal frames of 45 flagged). Drift never
discards more: the judge then needs the classifier to agree before calling a frame blank.
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
    score: float  # most changed cell, minus the bank's baseline level
    mismatch: float  # drift level (a low percentile of the cells): the whole scene differs
    cell: tuple[int, int]  # (row, column) of the most changed cell


def compare(features: np.ndarray, references: np.ndarray, base: Baseline) -> Comparison:
    dmap = distance_map(features, references)
    row, col = np.unravel_index(int(np.argmax(dmap)), dmap.shape)
    return Comparison(float(dmap[row, col]) - base.level, drift_level(dmap), (int(row), int(col)))
