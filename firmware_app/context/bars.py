"""A camera's stamped info bars (date, temperature, moon phase, maker's logo), found from its own
references, so camera context sees the whole scene except exactly the bar.

The first version cut a fixed 7 % off the top and the bottom of every frame. Real bars are 2-3 %
(Reconyx, Bushnell, Browning) or 4-7 % (white bottom bars), and a fixed cut hid the animals standing
at the bottom edge just above a thin bar. Measured leave-one-location-out on the shared data, the
per-camera crop discarded more blanks in every tunnel than the fixed one and lost no more animals
(models/README.md). Pure numpy; run once per camera when it gets its first references.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _row_profile(stack: np.ndarray, rows: np.ndarray, tolerance: int) -> tuple[np.ndarray, ...]:
    """Per row of `rows`: its dominant grey level, the share of pixels near it, how stable the row is
    across the references (median over columns of max - min) and the share of text-like edges."""
    band = stack[:, rows].astype(np.int16)  # [k, r, w]
    median = np.median(band, axis=0)  # [r, w]
    levels = np.clip(np.rint(median), 0, 255).astype(np.int64)
    dominant = np.array([np.bincount(line >> 3, minlength=32).argmax() * 8 + 4 for line in levels])
    near = (np.abs(median - dominant[:, None]) <= tolerance).mean(axis=1)
    unstable = np.median(band.max(axis=0) - band.min(axis=0), axis=1)
    edges = (np.abs(np.diff(median, axis=1)) >= 64).mean(axis=1)
    return dominant, near, unstable, edges


def _bar_rows(stack: np.ndarray, from_top: bool, max_share: float, tolerance: int) -> int:
    height = stack.shape[1]
    depth = max(1, round(height * max_share))
    rows = np.arange(depth) if from_top else np.arange(height - 1, height - 1 - depth, -1)
    dominant, near, unstable, edges = _row_profile(stack, rows, tolerance)
    colour = dominant[0]
    run = 0
    for i in range(depth):
        bar_like = near[i] >= 0.5 and unstable[i] <= 8 and abs(int(dominant[i]) - int(colour)) <= 16
        if not bar_like:
            break
        run = i + 1
    text = np.nonzero(edges[:run] >= 0.02)[0]
    gap = max(2, round(0.006 * height))  # padding rows and the JPEG ringing of the bar's edge
    if run == 0 or len(text) == 0 or text[0] > max(2 * gap, run // 2):
        return 0  # no stamped text at this edge: a dark sky or a plain border is scene, keep it
    # The bar ends where its first block of text lines ends (rows of text no more than `gap` apart):
    # stakes or branches against a black night sky further in are scene.
    end = int(text[0])
    for row in text[1:]:
        if row - end > gap:
            break
        end = int(row)
    if end + 1 + gap >= depth:
        return 0  # "text" all the way down the search band: branches or sky, not a stamp bar
    if run <= end + 1 + 4 * gap:
        return min(run + 1, depth)  # the bar's colour ends just after its text: cut there
    return min(end + 1 + gap, depth)  # the bar's colour runs on into a dark scene: cut after the text


def detect_info_bars(
    references: Sequence[np.ndarray], max_share: float = 0.12, tolerance: int = 24
) -> tuple[float, float]:
    """(top, bottom): the share of the frame's height taken by the camera's stamped info bars.

    `references` are a few of the camera's frames (known blanks), HxW grey or HxWx3 RGB uint8, all one
    size (the trap's decoded frames). A bar is a run of rows from the edge that is dominated by one
    grey level (its background: near-black, white, or the vendor's colour), the same in every
    reference (the scene changes between references; the bar does not), and that holds text-like
    edges. The crop ends at the last text row plus a small pad. No text at an edge: 0 (a black night
    sky at the top is scene, not a bar). One reference works; more make the stability test real.
    """
    if not references:
        return 0.0, 0.0
    frames = [np.asarray(r) for r in references]
    if any(f.shape[:2] != frames[0].shape[:2] for f in frames):
        raise ValueError("references differ in size")
    greys = [f if f.ndim == 2 else (f[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114])) for f in frames]
    stack = np.stack([np.asarray(g, np.float32) for g in greys])
    height = stack.shape[1]
    top = _bar_rows(stack, True, max_share, tolerance)
    bottom = _bar_rows(stack, False, max_share, tolerance)
    return top / height, bottom / height
