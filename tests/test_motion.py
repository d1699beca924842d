"""MotionDetector on real fixture frames turned into 320x240 lores greyscale sequences.

Static scenes get fresh sensor noise in every frame; lighting changes are applied to the scene
before the noise (as in a camera: light, then noise, then clipping to 0..255).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FRAMES
from PIL import Image

from firmware_app.errors import ConfigError
from firmware_app.triggers.motion import MotionDetector, box_blur, load_mask, tone_ranges

W, H = 320, 240
FPS = 10.0
NOISE = 4.0  # grey levels: sensor noise of a lores stream at moderate gain
BLANK_SCENES = ["missouri/SEQ75192_IMG_0003.JPG", "wellington/1200_1-0.JPG", "speciesnet/blank.jpg"]
STILLS: dict[str, Any] = {"warmup_frames": 1, "cooldown_s": 0.0, "confirm_frames": 1}  # stills: each its own decision


@functools.cache
def rgb(rel: str) -> np.ndarray:
    with Image.open(FRAMES / rel) as img:
        return np.asarray(img.convert("RGB").resize((W, H), Image.Resampling.BILINEAR)).astype(np.float64)


def scene(rel: str) -> np.ndarray:
    """The fixture frame as the lores Y plane would see it (float: light before noise and clipping)."""
    return rgb(rel) @ np.array([0.299, 0.587, 0.114])


def lores(rel: str) -> np.ndarray:
    return np.clip(np.rint(scene(rel)), 0, 255).astype(np.uint8)


def bars_mask(rows: int = 14) -> np.ndarray:
    """The trap's info bars (time stamp, frame counter) are not scene: a Pi lores stream has none."""
    mask = np.ones((H, W), dtype=bool)
    mask[:rows] = mask[-rows:] = False
    return mask


class Camera:
    """Feeds float frames as noisy uint8 lores frames at FPS; remembers which frames triggered."""

    def __init__(self, detector: MotionDetector, seed: int = 0, noise: float = NOISE) -> None:
        self.detector = detector
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.t = 0.0
        self.hits: list[int] = []
        self.count = 0

    def feed(self, frames: Iterable[np.ndarray]) -> list[bool]:
        out = []
        for frame in frames:
            grey = np.clip(frame + self.rng.normal(0.0, self.noise, frame.shape), 0, 255).astype(np.uint8)
            hit = self.detector.update(grey, self.t)
            if hit:
                self.hits.append(self.count)
            out.append(hit)
            self.t += 1.0 / FPS
            self.count += 1
        return out


def blob(base: np.ndarray, cx: float, cy: float, radius: float = 10, value: float = 10) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    frame = base.copy()
    frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = value
    return frame


def crossing(
    base: np.ndarray, n: int = 20, y: float = 150, x0: float = 30, step: float = 12, **kw: Any
) -> list[np.ndarray]:
    return [blob(base, x0 + step * k, y, **kw) for k in range(n)]


def contrasting(base: np.ndarray) -> float:
    """A blob value that stands out along the crossing's path: dark on a bright scene, bright on a dark one."""
    return 10.0 if base[140:160].mean() > 100 else 250.0


def warmed(base: np.ndarray, **settings: Any) -> Camera:
    camera = Camera(MotionDetector(**settings))
    assert not any(camera.feed([base] * 15))
    assert camera.detector.warmed_up
    return camera


# -- static scenes and real stills ----------------------------------------------------------------
@pytest.mark.parametrize("rel", BLANK_SCENES)
def test_static_scene_with_noise_never_triggers(rel: str) -> None:
    camera = Camera(MotionDetector())
    assert not any(camera.feed([scene(rel)] * 300))  # 30 s at 10 fps
    assert camera.detector.last.share < 0.0005


def test_stronger_noise_still_does_not_trigger() -> None:
    camera = Camera(MotionDetector(), noise=12.0)
    assert not any(camera.feed([scene(BLANK_SCENES[0])] * 200))


def test_blank_stills_of_one_burst_do_not_trigger() -> None:
    """The Wellington blank burst and the Missouri fox burst's blank frames, one second apart."""
    for burst in (["wellington/1200_1-0.JPG", "wellington/1200_2-0.JPG", "wellington/1200_3-0.JPG"],
                  [f"missouri/SEQ75192_IMG_000{i}.JPG" for i in (5, 4, 3)]):  # fmt: skip
        detector = MotionDetector(mask=bars_mask(), **STILLS)
        assert [detector.update(lores(rel), float(i)) for i, rel in enumerate(burst)] == [False] * 3


def test_fox_arriving_in_a_blank_scene_triggers() -> None:
    """Background: the burst's blank frames (3-5) with fresh noise; then the frames with the fox."""
    blanks = [scene(f"missouri/SEQ75192_IMG_000{i}.JPG") for i in (3, 4, 5)]
    camera = Camera(MotionDetector(mask=bars_mask()))
    assert not any(camera.feed(blanks * 5))
    fox = scene("missouri/SEQ75192_IMG_0001.JPG")
    assert camera.feed([fox, fox]) == [False, True], "two frames in a row (confirm_frames=2)"
    assert camera.detector.last.share > 0.005


def test_fox_burst_reversed_as_stills() -> None:
    detector = MotionDetector(mask=bars_mask(), **STILLS)
    frames = [lores(f"missouri/SEQ75192_IMG_000{i}.JPG") for i in (5, 4, 3, 2, 1)]
    hits = [detector.update(frame, float(t)) for t, frame in enumerate(frames)]
    assert hits == [False, False, False, True, True]


# -- lighting ---------------------------------------------------------------------------------------
def sunrise(base: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    return base * 0.3, [base * (0.3 + 0.7 * k / 29) for k in range(30)]


def ir_switch(base: np.ndarray, rel: str) -> tuple[np.ndarray, list[np.ndarray]]:
    # Under IR light the channels look alike and the camera's tone curve differs: grey, gamma 0.6, lifted.
    grey = rgb(rel).mean(axis=-1)
    return base, [255 * (grey / 255) ** 0.6 + 10] * 30


LIGHTING: dict[str, Callable[[np.ndarray, str], tuple[np.ndarray, list[np.ndarray]]]] = {
    "darker x0.5": lambda base, _: (base, [base * 0.5] * 30),
    "brighter x1.5 (clipping)": lambda base, _: (base, [base * 1.5] * 30),
    "sunrise ramp over 30 frames": lambda base, _: sunrise(base),
    "sunset ramp over 30 frames": lambda base, _: (base, [base * (1.0 - 0.7 * k / 29) for k in range(30)]),
    "IR switch to grey with another gamma": ir_switch,
}


@pytest.mark.parametrize("rel", [*BLANK_SCENES, "peru/cam1_EK000001.JPG"])
@pytest.mark.parametrize("case", list(LIGHTING))
def test_global_lighting_changes_do_not_trigger(case: str, rel: str) -> None:
    before, change = LIGHTING[case](scene(rel), rel)
    camera = warmed(before, mask=bars_mask())
    assert not any(camera.feed(change)), f"{case} on {rel}: share {camera.detector.last.share:.4f}"
    assert not any(camera.feed([change[-1]] * 30))
    # ... and the detector is not blinded by it: an animal in the new light still triggers.
    assert any(camera.feed(crossing(change[-1], n=10, value=contrasting(change[-1]))))


def test_a_change_of_most_of_the_view_restarts_the_background() -> None:
    base = scene(BLANK_SCENES[1])
    camera = warmed(base)
    inverted = 255 - base  # no tone curve maps a scene onto its negative
    assert camera.feed([inverted]) == [False]
    assert camera.detector.last.lighting
    assert not any(camera.feed([inverted] * 30)), "the new scene is the background now"


# -- motion -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", ["missouri/SEQ75192_IMG_0003.JPG", "wellington/1200_1-0.JPG"])
def test_small_dark_blob_crossing_a_real_scene_triggers(rel: str) -> None:
    base = scene(rel)
    camera = warmed(base)
    hits = camera.feed(crossing(base))
    assert hits.index(True) <= 2, "the second frame with the blob confirms it"
    assert sum(hits) == 1, "then the 5 s cooldown holds (20 frames = 2 s)"


def test_blob_smaller_than_min_area_is_ignored() -> None:
    base = scene(BLANK_SCENES[1])
    small = crossing(base, radius=4)  # ~50 px: 0.07 % of the frame
    assert not any(warmed(base).feed(small))
    assert any(warmed(base, min_area=0.0005).feed(small))


def test_single_frame_glitch_needs_confirm_frames_1() -> None:
    base = scene(BLANK_SCENES[0])
    glitch = [blob(base, 160, 120, radius=15), base, base]
    assert not any(warmed(base).feed(glitch))
    assert any(warmed(base, confirm_frames=1).feed(glitch))


def test_mask_suppresses_motion_in_the_masked_region() -> None:
    base = scene(BLANK_SCENES[1])
    left_only = crossing(base, n=10, x0=20, step=8)  # x 20..92: the left third
    ignore_left = np.ones((H, W), dtype=bool)
    ignore_left[:, : W // 3 + 15] = False
    assert not any(warmed(base, mask=ignore_left).feed(left_only))
    assert any(warmed(base, mask=~ignore_left).feed(left_only))


def test_cooldown_is_honoured() -> None:
    base = scene(BLANK_SCENES[0])
    camera = warmed(base, cooldown_s=5.0)
    start = camera.count
    # 12 s of continuous motion: a blob going back and forth.
    frames = [blob(base, 40 + 10 * (k % 24) if (k // 24) % 2 == 0 else 270 - 10 * (k % 24), 150) for k in range(120)]
    camera.feed(frames)
    times = [(i - start) / FPS for i in camera.hits]
    assert len(times) == 3, times
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(times))
    assert times[1] - times[0] < 5.2, "continued motion triggers again as soon as the cooldown ends"


def test_warmup_frames_are_honoured() -> None:
    base = scene(BLANK_SCENES[0])
    camera = Camera(MotionDetector(warmup_frames=10))
    # Motion from the very first frame: nothing triggers while the background forms.
    assert not any(camera.feed(crossing(base, n=10)))
    assert camera.detector.warmed_up
    assert camera.detector.last.warming_up
    assert any(camera.feed(crossing(base, n=10, x0=200, step=-12)))


def test_warmup_zero_still_needs_a_first_frame() -> None:
    base = scene(BLANK_SCENES[0])
    detector = MotionDetector(warmup_frames=0, confirm_frames=1)
    assert not detector.warmed_up
    assert detector.update(lores(BLANK_SCENES[0]), 0.0) is False
    assert detector.warmed_up
    assert detector.update(np.clip(blob(base, 160, 120, 20), 0, 255).astype(np.uint8), 0.1) is True


def test_reset_warms_up_again() -> None:
    base = scene(BLANK_SCENES[0])
    camera = warmed(base)
    camera.detector.reset()
    assert not camera.detector.warmed_up
    assert not any(camera.feed(crossing(base, n=9)))


# -- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("threshold", 0),
        ("threshold", 300),
        ("threshold", float("nan")),
        ("min_area", 0.0),
        ("min_area", 1.5),
        ("warmup_frames", -1),
        ("warmup_frames", 2.5),
        ("cooldown_s", -0.1),
        ("background_rate", 0.0),
        ("background_rate", 2.0),
        ("blur", 4),
        ("blur", 0),
        ("confirm_frames", 0),
        ("confirm_frames", True),
        ("lighting_share", 0.001),
        ("lighting_share", "0.6"),
        ("mask", np.ones((H, W), dtype=np.uint8)),
        ("mask", np.zeros((H, W), dtype=bool)),
        ("mask", np.ones(W, dtype=bool)),
    ],
)
def test_bad_parameters_name_the_parameter(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        MotionDetector(**{name: value})


@pytest.mark.parametrize(
    "frame",
    [np.zeros((H, W), dtype=np.float32), np.zeros((H, W, 3), dtype=np.uint8), [[0, 1], [2, 3]]],
    ids=["float", "colour", "list"],
)
def test_bad_frames_are_refused(frame: Any) -> None:
    with pytest.raises(ValueError, match="grey"):
        MotionDetector().update(frame, 0.0)


def test_frame_size_must_match_mask_and_background() -> None:
    with pytest.raises(ValueError, match=r"grey frame is \(120, 160\).*\(240, 320\)"):
        MotionDetector(mask=bars_mask()).update(np.zeros((120, 160), dtype=np.uint8), 0.0)
    detector = MotionDetector()
    detector.update(np.zeros((H, W), dtype=np.uint8), 0.0)
    with pytest.raises(ValueError, match="grey frame"):
        detector.update(np.zeros((H // 2, W // 2), dtype=np.uint8), 0.1)


# -- load_mask ----------------------------------------------------------------------------------------
def save_mask(path: Path, size: tuple[int, int], black_box: tuple[int, int, int, int] | None = None) -> Path:
    img = Image.new("L", size, 255)
    if black_box:
        img.paste(0, black_box)
    img.save(path)
    return path


def test_load_mask_white_is_watched(tmp_path: Path) -> None:
    mask = load_mask(save_mask(tmp_path / "m.png", (W, H), (0, 0, 100, 50)), (H, W))
    assert mask.shape == (H, W) and mask.dtype == np.bool_
    assert not mask[:50, :100].any() and mask[50:, :].all() and mask[:, 100:].all()
    MotionDetector(mask=mask)


def test_load_mask_drawn_on_a_full_size_still_is_resized(tmp_path: Path) -> None:
    mask = load_mask(save_mask(tmp_path / "full.png", (2028, 1521), (0, 0, 1014, 1521)), (H, W))
    assert mask.shape == (H, W)
    assert not mask[:, : W // 2 - 1].any() and mask[:, W // 2 + 1 :].all()


def test_load_mask_errors_name_the_file(tmp_path: Path) -> None:
    wide = save_mask(tmp_path / "wide.png", (1920, 1080))
    with pytest.raises(ConfigError, match=r"camera\.motion_mask: .*wide\.png is 1920x1080 .* 320x240"):
        load_mask(wide, (H, W))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read .*junk\.png"):
        load_mask(junk, (H, W))
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.png"):
        load_mask(tmp_path / "missing.png", (H, W))
    black = save_mask(tmp_path / "black.png", (W, H), (0, 0, W, H))
    with pytest.raises(ConfigError, match=r"black\.png is all black"):
        load_mask(black, (H, W))


# -- the pieces ---------------------------------------------------------------------------------------
def test_box_blur_is_the_mean_of_the_square() -> None:
    image = np.random.default_rng(3).integers(0, 256, (24, 32)).astype(np.float32)
    padded = np.pad(image, 2, mode="edge").astype(np.float64)
    expected = np.lib.stride_tricks.sliding_window_view(padded, (5, 5)).mean(axis=(2, 3))
    np.testing.assert_allclose(box_blur(image, 5), expected, atol=1e-3)
    np.testing.assert_array_equal(box_blur(image, 1), image)


@pytest.mark.parametrize("rel", [*BLANK_SCENES, "peru/cam1_EK000001.JPG"])
@pytest.mark.parametrize(("gamma", "gain"), [(0.6, 0.5), (0.6, 1.5), (1.5, 0.5), (1.5, 1.5), (1.0, 1.6)])
def test_tone_ranges_undo_a_monotone_tone_curve(rel: str, gamma: float, gain: float) -> None:
    """Rank for rank in the body, extrapolated in the tails: after the blur, far below the threshold."""
    mask = bars_mask()
    background = lores(rel).astype(np.float32)
    curve = np.clip(255 * (np.arange(256) / 255) ** gamma * gain, 0, 255)  # gain > 1 clips highlights
    frame = curve[background.astype(np.uint8)].round().astype(np.uint8)
    lo, hi = tone_ranges(frame[mask], background[mask])
    residual = box_blur(np.clip(background, lo[frame], hi[frame]) - background, 5)
    assert np.abs(residual[mask]).max() < 12.5
    clipped = (frame == 255) & mask
    if clipped.sum() >= 0.02 * mask.sum():  # a clipped area, not a few pixels (those are the tail)
        outside = np.maximum(lo[frame] - background, background - hi[frame])
        assert np.all(outside[clipped] <= 0), "a clipped area fits any brighter background"


@pytest.mark.parametrize("value", [230, 255])
def test_tone_ranges_keep_a_new_bright_object_visible(value: int) -> None:
    """Matched rank for rank, eye-shine would map onto the scene's brightest spots (and 255 is clipped)."""
    background = (scene(BLANK_SCENES[0]) * 0.5).astype(np.float32)  # a dark night scene
    frame = np.clip(blob(background.astype(np.float64), 160, 120, radius=8, value=value), 0, 255).astype(np.uint8)
    lo, _ = tone_ranges(frame, background)
    assert lo[value] > 200


@pytest.mark.parametrize("value", [230, 255])
@pytest.mark.parametrize("rel", BLANK_SCENES)
def test_a_bright_animal_in_a_dark_scene_triggers(rel: str, value: int) -> None:
    """An animal close to the IR light is the brightest thing in the view, often clipped at 255.

    On the dark NACTI scene (info bars masked) plain histogram matching would hide it."""
    base = scene(rel) * 0.5
    assert any(warmed(base, mask=bars_mask()).feed(crossing(base, n=5, value=value)))
