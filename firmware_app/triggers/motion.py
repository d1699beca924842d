"""Software motion detection on the camera's lores stream: pure numpy, cheap enough for a Pi Zero 2.

Per greyscale frame (e.g. 320x240 at 5-10 fps; on picamera2 the Y plane of the YUV420 lores
array, `array[:height, :width]`):

1. Box blur (`blur` px square, by cumulative sums): sensor noise averages out, one pixel alone
   cannot count as motion.
2. Tone matching: the frame's grey levels are mapped onto the background's by matching their
   histograms (over the watched area). A global monotone change (exposure or gain steps, clouds,
   sunrise, an IR switch with another gamma) maps each level onto the background levels it stands
   for, so it cancels out. A level that holds many pixels (clipped highlights, a black night sky)
   maps to a *range* of background levels. The darkest and brightest 2 % are extrapolated from the
   rest rather than matched, so that a new bright or dark object (eye-shine at night) is not
   mapped onto the background's extremes. The frame is matched before the blur (exact where it
   clips), the difference is blurred, and a pixel changed when it is over `threshold`.
3. Changed share = changed watched pixels / watched pixels. A share of at least `min_area`, in
   `confirm_frames` consecutive frames, triggers, unless within `cooldown_s` of the last trigger.
   A share above `lighting_share` is taken for a lighting change the tone matching could not undo
   (a spotlight, the IR illuminator lighting the foreground only): the background restarts from
   this frame instead of triggering.
4. The background follows the scene as an exponential moving average (`background_rate` per
   frame); during the first `warmup_frames` frames it is the plain mean of the frames so far,
   and nothing triggers.

Limits: an animal filling more than `lighting_share` of the view, or one that stands still long
enough to be absorbed into the background (about 1 / (rate x fps) seconds), does not trigger;
waving vegetation does, unless masked (`load_mask`). See docs/motion.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from firmware_app.errors import ConfigError

log = logging.getLogger(__name__)

GreyFrame = npt.NDArray[np.uint8]
FloatFrame = npt.NDArray[np.float32]
BoolMask = npt.NDArray[np.bool_]

MASK_KEY = "camera.motion_mask"
MASK_ASPECT_TOLERANCE = 0.02  # a mask drawn on a full-size still may differ from the lores aspect by rounding
TAIL = 0.02  # the darkest and the brightest 2 % of the unclipped pixels: their tone is extrapolated
TAIL_SLOPE_SPAN = 0.1  # the tails' slope: from the 10 % and 90 % ranks to the tail edges
MIN_UNCLIPPED = 0.2  # extrapolate the tails only when at least this share of the pixels is not clipped


@dataclass(frozen=True)
class MotionResult:
    """What the last `update` saw (for logs, the bench and tests)."""

    share: float  # changed share of the watched area; 0.0 while warming up
    triggered: bool
    lighting: bool = False  # the background was restarted: a global change, not motion
    warming_up: bool = False


class MotionDetector:
    """Frame differencing against a running background; `update(grey, now)` is True on a trigger."""

    def __init__(
        self,
        *,
        threshold: float = 25.0,
        min_area: float = 0.002,
        warmup_frames: int = 10,
        cooldown_s: float = 5.0,
        background_rate: float = 0.05,
        mask: BoolMask | None = None,
        blur: int = 5,
        confirm_frames: int = 2,
        lighting_share: float = 0.6,
    ) -> None:
        _check_range("threshold", threshold, 0.0, 255.0, low_open=True)
        _check_range("min_area", min_area, 0.0, 1.0, low_open=True)
        _check_int("warmup_frames", warmup_frames, 0)
        _check_range("cooldown_s", cooldown_s, 0.0, math.inf)
        _check_range("background_rate", background_rate, 0.0, 1.0, low_open=True)
        _check_int("blur", blur, 1)
        if blur % 2 == 0:
            raise ValueError(f"blur must be an odd number of pixels (1 = no blur), not {blur}")
        _check_int("confirm_frames", confirm_frames, 1)
        _check_range("lighting_share", lighting_share, min_area, 1.0, low_open=True)
        self.threshold = float(threshold)
        self.min_area = float(min_area)
        self.warmup_frames = warmup_frames
        self.cooldown_s = float(cooldown_s)
        self.background_rate = float(background_rate)
        self.blur = blur
        self.confirm_frames = confirm_frames
        self.lighting_share = float(lighting_share)
        self.mask = _check_mask(mask)
        self.last = MotionResult(share=0.0, triggered=False, warming_up=True)
        self.reset()

    def reset(self) -> None:
        """Forget the background (the camera was re-aimed or reconfigured): warm up again."""
        self._background: FloatFrame | None = None
        self._seen = 0
        self._streak = 0
        self._last_trigger: float | None = None

    @property
    def warmed_up(self) -> bool:
        return self._background is not None and self._seen >= max(1, self.warmup_frames)

    def update(self, grey: GreyFrame, now: float) -> bool:
        """Feed one greyscale frame taken at `now` (seconds, monotonic); True when it triggers."""
        grey = self._check_frame(grey)
        frame = grey.astype(np.float32)
        if not self.warmed_up:
            self._warm_up(frame)
            return self._report(MotionResult(share=0.0, triggered=False, warming_up=True))
        assert self._background is not None
        share = self._changed_share(grey, self._background)
        if share > self.lighting_share:
            # Too much changed to be an animal we could tell from the light: start over from this
            # frame rather than trigger (or stay blind while the average slowly catches up).
            log.debug("motion: %.0f %% of the view changed: lighting change, background restarted", 100 * share)
            self._background = frame
            self._streak = 0
            return self._report(MotionResult(share=share, triggered=False, lighting=True))
        self._background += self.background_rate * (frame - self._background)
        self._streak = self._streak + 1 if share >= self.min_area else 0
        triggered = self._streak >= self.confirm_frames and not self._cooling_down(now)
        if triggered:
            self._last_trigger = now
            log.debug("motion: %.2f %% of the watched area changed: trigger", 100 * share)
        return self._report(MotionResult(share=share, triggered=triggered))

    # -- internals ------------------------------------------------------------------------------
    def _report(self, result: MotionResult) -> bool:
        self.last = result
        return result.triggered

    def _cooling_down(self, now: float) -> bool:
        # A clock that stepped back (wall time corrected by NTP) must not hold triggers off for hours.
        return self._last_trigger is not None and 0.0 <= now - self._last_trigger < self.cooldown_s

    def _warm_up(self, frame: FloatFrame) -> None:
        # The plain mean of the frames so far: a clean background after N frames, whatever the rate.
        self._seen += 1
        if self._background is None:
            self._background = frame
        else:
            self._background += (frame - self._background) / self._seen

    def _changed_share(self, grey: GreyFrame, background: FloatFrame) -> float:
        watched_grey = grey if self.mask is None else grey[self.mask]
        watched_bg = background if self.mask is None else background[self.mask]
        lo, hi = tone_ranges(watched_grey, watched_bg)
        # The frame in the background's tones: each pixel takes the value of its level's range
        # nearest to the background, so only a change the tone curve cannot explain is left.
        # Matching the raw frame, before the blur, keeps it exact where highlights clip.
        matched = np.clip(background, lo[grey], hi[grey])
        diff = box_blur(matched - background, self.blur)
        changed = np.abs(diff) > self.threshold
        if self.mask is not None:
            changed &= self.mask
        return int(np.count_nonzero(changed)) / watched_grey.size

    def _check_frame(self, grey: GreyFrame) -> GreyFrame:
        if not isinstance(grey, np.ndarray) or grey.ndim != 2 or grey.dtype != np.uint8:
            what = f"{grey.dtype} array of shape {grey.shape}" if isinstance(grey, np.ndarray) else type(grey).__name__
            raise ValueError(f"grey must be a 2-D uint8 array (the Y plane of the lores stream), not a {what}")
        expected = self.mask.shape if self.mask is not None else None
        if expected is None and self._background is not None:
            expected = self._background.shape
        if expected is not None and grey.shape != expected:
            raise ValueError(f"grey frame is {grey.shape} (height, width) but the detector works on {expected}")
        return grey


def box_blur(image: FloatFrame, size: int) -> FloatFrame:
    """Mean over a `size` x `size` square (edges repeated), by cumulative sums: O(1) per pixel."""
    if size == 1:
        return image.astype(np.float32)
    r = size // 2
    # One extra leading row/column so that sums[i + size] - sums[i] covers rows i - r .. i + r.
    # float64 sums: float32 would lose the low bits of a 320-pixel running sum.
    padded = np.pad(image, ((r + 1, r), (r + 1, r)), mode="edge").astype(np.float64)
    sums = np.cumsum(padded, axis=0)
    rows = sums[size:] - sums[:-size]
    sums = np.cumsum(rows, axis=1)
    boxes = sums[:, size:] - sums[:, :-size]
    return (boxes * (1.0 / (size * size))).astype(np.float32)


def tone_ranges(levels: GreyFrame, background: FloatFrame) -> tuple[FloatFrame, FloatFrame]:
    """The frame's tone curve onto the background's, as a range of background values per grey level.

    `levels` and `background` are the watched pixels (1-D, same length). The body of the histogram
    is matched rank for rank: level v stands for the background levels at the ranks its pixels hold.
    The tails (the darkest and brightest TAIL of the pixels that are not clipped) are extrapolated
    from the body instead: that is where a new object shows first (an IR-lit animal is the brightest
    thing in a night scene), and matching it rank for rank would map it onto the background's
    brightest spots and hide it. Clipped levels (0, 255) stand for everything beyond as well.
    """
    frame_hist = np.bincount(levels.ravel(), minlength=256)
    frame_cum = np.cumsum(frame_hist)
    bg_levels = np.clip(np.rint(background.ravel()), 0, 255).astype(np.intp)
    bg_cum = np.cumsum(np.bincount(bg_levels, minlength=256))
    # Level v holds the ranks (frame_cum[v-1], frame_cum[v]]; the background levels at those ranks:
    first_rank = np.concatenate(([0], frame_cum[:-1]))
    lo = np.searchsorted(bg_cum, first_rank, side="right").astype(np.float32)
    hi = np.minimum(np.searchsorted(bg_cum, frame_cum, side="left"), 255).astype(np.float32)
    lo = np.minimum(lo, hi)  # only levels absent from the frame can cross; keep them harmless
    n = float(frame_cum[-1])
    # Clipped areas (a black sky, a blown-out highlight) keep their rank range; a few clipped pixels
    # are not an area but the tail (eye-shine saturates), so they are extrapolated like it.
    clipped_dark, clipped_bright = (frame_hist[v] / n if frame_hist[v] >= TAIL * n else 0.0 for v in (0, 255))
    unclipped = 1.0 - clipped_dark - clipped_bright
    if unclipped >= MIN_UNCLIPPED:  # else too little is left to extrapolate from: ranks only

        def quantiles(share: float) -> tuple[float, float]:
            rank = (clipped_dark + share * unclipped) * n  # `share` of the way through the unclipped pixels
            return float(np.searchsorted(frame_cum, rank)), float(np.searchsorted(bg_cum, rank))

        top = 255 if clipped_bright else 256  # a clipped level keeps its rank range
        _extend_tail(lo, hi, quantiles(1 - TAIL), quantiles(1 - TAIL_SLOPE_SPAN), slice(None, top), upper=True)
        bottom = 1 if clipped_dark else 0
        _extend_tail(lo, hi, quantiles(TAIL), quantiles(TAIL_SLOPE_SPAN), slice(bottom, None), upper=False)
    lo[0], hi[255] = 0.0, 255.0
    return lo, hi


def _extend_tail(
    lo: FloatFrame,
    hi: FloatFrame,
    edge: tuple[float, float],
    inner: tuple[float, float],
    levels: slice,
    *,
    upper: bool,
) -> None:
    """Levels past `edge` (frame level, background level), within `levels`, follow the line through `inner`."""
    (f_edge, b_edge), (f_in, b_in) = edge, inner
    slope = (b_edge - b_in) / (f_edge - f_in) if f_edge != f_in else 1.0
    slope = min(max(slope, 0.25), 4.0)  # a nearly flat body says little about the tail: stay near its gain
    grey = np.arange(256, dtype=np.float32)
    tail = np.zeros(256, dtype=bool)
    tail[levels] = True
    tail &= grey > f_edge if upper else grey < f_edge
    lo[tail] = hi[tail] = np.clip(b_edge + slope * (grey[tail] - f_edge), 0, 255)


def load_mask(path: Path | str, shape: tuple[int, int]) -> BoolMask:
    """Read a motion mask PNG (white = watched, black = ignored) for frames of `shape` (height, width).

    A mask drawn on a full-size still is resized (nearest neighbour) to the stream when its aspect
    ratio matches within 2 %: people draw masks on the frames they see, not on the 320x240 stream.
    A different aspect ratio means a different framing, so it is refused rather than stretched.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    height, width = shape
    try:
        with Image.open(path) as img:
            grey = img.convert("L")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ConfigError(f"{MASK_KEY}: cannot read {path} as an image: {exc}") from exc
    if grey.size != (width, height):
        mask_aspect, stream_aspect = grey.width / grey.height, width / height
        if abs(mask_aspect / stream_aspect - 1.0) > MASK_ASPECT_TOLERANCE:
            raise ConfigError(
                f"{MASK_KEY}: {path} is {grey.width}x{grey.height} but the motion stream is {width}x{height}: "
                "draw the mask on a frame of this camera (same aspect ratio)"
            )
        log.info("motion mask %s resized from %dx%d to %dx%d", path, grey.width, grey.height, width, height)
        grey = grey.resize((width, height), Image.Resampling.NEAREST)
    mask = np.asarray(grey) >= 128
    if not mask.any():
        raise ConfigError(f"{MASK_KEY}: {path} is all black: it watches nothing (white = watched)")
    return mask


# -- parameter checks ---------------------------------------------------------------------------
def _check_range(name: str, value: float, lo: float, hi: float, *, low_open: bool = False) -> None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if not is_number or value < lo or value > hi or (low_open and value == lo):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{lo:g}, {hi:g}], not {value!r}")


def _check_int(name: str, value: int, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, not {value!r}")


def _check_mask(mask: BoolMask | None) -> BoolMask | None:
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError("mask must be a 2-D boolean array (True = watched) the size of the lores frames")
    if not mask.any():
        raise ValueError("mask watches nothing: it has no True pixel")
    return mask.copy()
