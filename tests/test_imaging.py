"""firmware_app.imaging: reduced-size decoding, orientation, exposure, gamma, resize, tensor tables."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from camera_jpegs import VARIANTS
from conftest import FRAMES, TINY_U8
from PIL import Image

from firmware_app.classifiers import Classifier, load_classifier
from firmware_app.imaging import (
    EXIF_DATETIME,
    EXIF_DATETIME_ORIGINAL,
    EXIF_IFD,
    EXIF_ORIENTATION,
    EXIF_SUBSEC_ORIGINAL,
    LETTERBOX_FILL,
    ImagingSettings,
    choose_gamma,
    decode_jpeg,
    exposure_stats,
    gamma_lut,
    input_luts,
    normalise,
    prepare_array,
    prepare_jpeg,
    to_tensor,
)
from firmware_app.modelcard import InputSpec

SPEC = InputSpec(64, 64)
SETTINGS = ImagingSettings()
PERU = [FRAMES / "peru" / "cam1_EK000001.JPG", FRAMES / "peru" / "cam1_EK000004.JPG"]


def jpeg_bytes(image: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def uniform(value: int | tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> np.ndarray:
    """An HxWx3 uint8 frame of one colour (size is width, height)."""
    return np.full((size[1], size[0], 3), value, dtype=np.uint8)


@pytest.fixture(scope="module")
def classifier() -> Iterator[Classifier]:
    yield load_classifier(TINY_U8, threads=1)


# -- reduced-size decoding --------------------------------------------------------------------
@pytest.mark.parametrize("path", PERU, ids=lambda p: p.name)
def test_large_frame_is_decoded_at_reduced_size(path: Path) -> None:
    prepared = prepare_jpeg(path.read_bytes(), SPEC, SETTINGS)
    assert prepared.source_size == (3264, 2448)
    # A 64x64 model needs far less than 12 MP: the DCT decode must scale by 1/8 (the most JPEG
    # allows), which still leaves at least the model size in both axes.
    width, height = prepared.decoded_size
    assert width * height <= 3264 * 2448 / 32
    assert width >= SPEC.width and height >= SPEC.height
    assert prepared.decoded_size == (3264 // 8, 2448 // 8)
    assert prepared.pixels.shape == (SPEC.height, SPEC.width, 3)
    assert prepared.pixels.dtype == np.uint8


def test_decode_never_goes_below_model_size() -> None:
    """A bigger model input means a smaller DCT scale: the decode must still cover the model."""
    data = PERU[0].read_bytes()
    spec = InputSpec(1000, 800)
    prepared = prepare_jpeg(data, spec, SETTINGS)
    width, height = prepared.decoded_size
    assert width >= 1000 and height >= 800
    assert (width, height) == (3264 // 2, 2448 // 2)  # 1/4 would give 816x612: too small for 1000x800
    assert prepared.pixels.shape == (800, 1000, 3)


# -- EXIF orientation -------------------------------------------------------------------------
def half_white_half_black(width: int, height: int) -> Image.Image:
    """Left half white, right half black, as stored in the file."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = 255
    return Image.fromarray(array, "RGB")


def rotated_jpeg(width: int, height: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return jpeg_bytes(half_white_half_black(width, height), exif=exif.tobytes())


def test_exif_orientation_6_is_turned_upright() -> None:
    # Orientation 6: the viewer turns the stored image 90 degrees clockwise, so the stored left
    # (white) half becomes the top half and the stored 200x100 becomes 100x200 (portrait).
    image, source_size, _ = decode_jpeg(rotated_jpeg(200, 100, 6), (100, 200), SETTINGS)
    assert source_size == (200, 100)
    assert image.size == (100, 200)
    array = np.asarray(image).astype(int)
    top, bottom = array[:90].mean(), array[110:].mean()
    assert top > 240 and bottom < 15


def test_exif_orientation_1_is_left_alone() -> None:
    image, _, _ = decode_jpeg(rotated_jpeg(200, 100, 1), (200, 100), SETTINGS)
    assert image.size == (200, 100)
    array = np.asarray(image).astype(int)
    assert array[:, :90].mean() > 240 and array[:, 110:].mean() < 15


def test_orientation_is_honoured_in_the_model_pixels() -> None:
    spec = InputSpec(32, 64)  # portrait model input, so an upright portrait frame fills it
    prepared = prepare_jpeg(rotated_jpeg(1600, 800, 6), spec, ImagingSettings(gamma="off"))
    pixels = prepared.pixels.astype(int)
    assert pixels[:28].mean() > 240 and pixels[36:].mean() < 15
    # The draft size is asked for in the file's own axes: 1600x800 stored at 1/8 is 200x100,
    # which, turned upright, is 100x200: enough for 32x64. Without the swap it would be 1/4.
    assert prepared.decoded_size == (100, 200)


# -- exposure statistics ----------------------------------------------------------------------
def test_exposure_mean_of_grey_levels() -> None:
    for level in (0, 64, 128, 255):
        # For equal channels BT.601 luma is the level itself (the weights sum to 1000).
        assert exposure_stats(uniform(level)).mean == pytest.approx(level / 255)


def test_exposure_mean_weights_green_over_blue() -> None:
    green, blue = exposure_stats(uniform((0, 200, 0))), exposure_stats(uniform((0, 0, 200)))
    assert green.mean == pytest.approx(0.587 * 200 / 255, abs=1 / 255)
    assert blue.mean == pytest.approx(0.114 * 200 / 255, abs=1 / 255)


def test_exposure_shadows_and_highlights_fractions() -> None:
    frame = uniform(128, (40, 40))
    frame[:10] = 0  # 25 % crushed black
    frame[10:14] = 8  # 10 % at the shadow limit (8/255 counts as shadow)
    frame[14:18] = 9  # 10 % just over it
    frame[18:22] = 255  # 10 % blown out
    frame[22:24] = 247  # 5 % at the highlight limit
    frame[24:26] = 246  # 5 % just under it
    stats = exposure_stats(frame)
    assert stats.shadows == pytest.approx(0.35)
    assert stats.highlights == pytest.approx(0.15)


def test_greyscale_flag() -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(32, 32, 1), dtype=np.uint8).repeat(3, axis=2)
    assert exposure_stats(grey).greyscale
    colourful = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert not exposure_stats(colourful).greyscale
    assert not exposure_stats(uniform((200, 40, 40))).greyscale
    # IR frames are not perfectly neutral after JPEG: a channel off by 1 is still greyscale.
    near = grey.copy()
    near[..., 2] = np.clip(near[..., 2].astype(int) + 1, 0, 255).astype(np.uint8)
    assert exposure_stats(near).greyscale


def test_real_ir_night_frame_is_flagged_greyscale() -> None:
    night = prepare_jpeg(PERU[1].read_bytes(), SPEC, SETTINGS)  # EXIF time 02:54, an IR frame
    day = prepare_jpeg(PERU[0].read_bytes(), SPEC, SETTINGS)  # 15:22, colour
    assert night.captured_at is not None and night.captured_at.hour == 2
    assert night.exposure.greyscale
    assert not day.exposure.greyscale


# -- gamma ------------------------------------------------------------------------------------
def noisy(level: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = np.clip(rng.normal(level, 6, size=(80, 120, 1)), 0, 255).astype(np.uint8)
    return grey.repeat(3, axis=2)


def test_dark_frame_is_brightened_towards_target() -> None:
    frame = noisy(40)
    prepared = prepare_array(frame, SPEC, SETTINGS)
    before = exposure_stats(np.asarray(Image.fromarray(frame).resize((64, 64), Image.Resampling.BILINEAR)))
    assert prepared.exposure.mean == pytest.approx(before.mean)  # measured before gamma
    assert before.mean < SETTINGS.dark_below
    assert prepared.gamma < 1.0
    after = exposure_stats(prepared.pixels).mean
    assert after > before.mean
    # Not clamped here (log 0.45 / log 0.157 = 0.43 > gamma_min): the mean lands near the target.
    assert prepared.gamma > SETTINGS.gamma_min
    assert after == pytest.approx(SETTINGS.target_mean, abs=0.03)


def test_very_dark_frame_gamma_is_clamped() -> None:
    prepared = prepare_array(noisy(10), SPEC, SETTINGS)
    assert prepared.gamma == SETTINGS.gamma_min
    assert exposure_stats(prepared.pixels).mean > prepared.exposure.mean


def test_bright_frame_is_darkened() -> None:
    prepared = prepare_array(noisy(215), SPEC, SETTINGS)
    assert prepared.exposure.mean > SETTINGS.bright_above
    assert 1.0 < prepared.gamma <= SETTINGS.gamma_max
    assert exposure_stats(prepared.pixels).mean < prepared.exposure.mean


def test_normal_frame_keeps_gamma_one_and_pixels() -> None:
    frame = noisy(120)
    prepared = prepare_array(frame, SPEC, SETTINGS)
    assert prepared.gamma == 1.0
    resized = np.asarray(Image.fromarray(frame).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.array_equal(prepared.pixels, resized)


def test_gamma_off_leaves_dark_frames_alone() -> None:
    frame = noisy(40)
    off = prepare_array(frame, SPEC, ImagingSettings(gamma="off"))
    auto = prepare_array(frame, SPEC, SETTINGS)
    assert off.gamma == 1.0
    assert auto.gamma != 1.0
    assert off.exposure == auto.exposure
    assert exposure_stats(off.pixels).mean == pytest.approx(off.exposure.mean)


def test_choose_gamma_band_edges() -> None:
    settings = ImagingSettings(dark_below=0.3, bright_above=0.7)
    stats = exposure_stats(uniform(0))
    for mean, expect_one in ((0.3, True), (0.7, True), (0.29, False), (0.71, False)):
        exposure = type(stats)(mean=mean, shadows=0.0, highlights=0.0, greyscale=False)
        assert (choose_gamma(exposure, settings) == 1.0) is expect_one, mean


@pytest.mark.parametrize("gamma", [0.4, 0.55, 1.0, 1.7, 2.5])
def test_gamma_lut_monotonic_with_fixed_endpoints(gamma: float) -> None:
    lut = gamma_lut(gamma)
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    assert lut[0] == 0 and lut[255] == 255
    assert np.all(np.diff(lut.astype(int)) >= 0)
    mid = int(lut[128])
    if gamma < 1:
        assert mid > 128
    elif gamma > 1:
        assert mid < 128
    else:
        assert np.array_equal(lut, np.arange(256))


def test_gamma_lut_is_read_only() -> None:
    with pytest.raises(ValueError):
        gamma_lut(0.5)[10] = 0  # a cached table must not be corrupted by a caller


# -- resize -----------------------------------------------------------------------------------
def test_stretch_fills_the_input() -> None:
    red = Image.new("RGB", (200, 100), (200, 0, 0))
    prepared = prepare_jpeg(jpeg_bytes(red), InputSpec(64, 64, resize="stretch"), ImagingSettings(gamma="off"))
    assert np.abs(prepared.pixels.astype(int) - (200, 0, 0)).max() <= 6  # JPEG colour noise


def test_letterbox_keeps_aspect_on_grey() -> None:
    red = Image.new("RGB", (200, 100), (200, 0, 0))
    prepared = prepare_jpeg(jpeg_bytes(red), InputSpec(64, 64, resize="letterbox"), ImagingSettings(gamma="off"))
    pixels = prepared.pixels.astype(int)
    # 200x100 scaled into 64x64 is 64x32, centred: 16 grey rows above and below.
    assert np.array_equal(pixels[:16], np.broadcast_to(LETTERBOX_FILL, (16, 64, 3)))
    assert np.array_equal(pixels[48:], np.broadcast_to(LETTERBOX_FILL, (16, 64, 3)))
    assert np.abs(pixels[17:47] - (200, 0, 0)).max() <= 6


def test_letterbox_portrait_pads_left_and_right() -> None:
    frame = uniform((0, 0, 250), (50, 100))
    prepared = prepare_array(frame, InputSpec(64, 64, resize="letterbox"), ImagingSettings(gamma="off"))
    pixels = prepared.pixels.astype(int)
    assert np.array_equal(pixels[:, :16], np.broadcast_to(LETTERBOX_FILL, (64, 16, 3)))
    assert np.array_equal(pixels[:, 48:], np.broadcast_to(LETTERBOX_FILL, (64, 16, 3)))
    assert np.array_equal(pixels[:, 16:48], np.broadcast_to((0, 0, 250), (64, 32, 3)))


# -- other JPEG flavours ----------------------------------------------------------------------
def test_greyscale_jpeg_decodes_to_rgb_and_scores(classifier: Classifier) -> None:
    ramp = np.tile(np.linspace(0, 255, 120, dtype=np.uint8), (90, 1))
    data = jpeg_bytes(Image.fromarray(ramp, "L"))
    assert Image.open(io.BytesIO(data)).mode == "L"
    image, _, _ = decode_jpeg(data, (64, 64), SETTINGS)
    assert image.mode == "RGB"
    prepared = prepare_jpeg(data, classifier.card.input, SETTINGS)
    assert prepared.pixels.shape == (64, 64, 3)
    assert prepared.exposure.greyscale
    assert 0.0 <= classifier.score(prepared.pixels) <= 1.0


def test_cmyk_jpeg_decodes_to_rgb_and_scores(classifier: Classifier) -> None:
    data = jpeg_bytes(Image.new("CMYK", (80, 60), (0, 255, 255, 0)))  # pure red in CMYK
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    prepared = prepare_jpeg(data, classifier.card.input, ImagingSettings(gamma="off"))
    assert prepared.pixels.shape == (64, 64, 3)
    red, green, blue = prepared.pixels.reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 50 and blue < 50
    assert 0.0 <= classifier.score(prepared.pixels) <= 1.0


# -- what real cameras write ------------------------------------------------------------------
OWL = FRAMES / "owl" / "RCNX1419.JPG"  # a Reconyx frame, 1280x900, EXIF DateTime 2019-07-07 00:03:35
OWL_TIME = datetime(2019, 7, 7, 0, 3, 35)
# The capture time each variant of OWL must give (None: no usable time, the caller uses the file's).
VARIANT_TIMES = {
    "mpo_with_preview": OWL_TIME,
    "zeros_after_eoi": OWL_TIME,
    "garbage_after_eoi": OWL_TIME,
    "jpeg_after_eoi": OWL_TIME,
    "thumbnail_in_exif": datetime(2024, 5, 6, 7, 8, 9),
    "preview_in_app3": OWL_TIME,
    "jfif_without_exif": None,
    "zero_datetime_original": None,
    "blank_datetime_original": None,
    "garbage_datetime_original": None,
    "garbage_subsec": datetime(2024, 5, 6, 7, 8, 9),
    "junk_exif_block": None,
}


def test_every_camera_variant_has_an_expected_time() -> None:
    assert set(VARIANT_TIMES) == set(VARIANTS)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_camera_variant_gives_the_plain_frames_pixels_at_reduced_size(variant: str) -> None:
    plain = OWL.read_bytes()
    data = VARIANTS[variant](plain)
    assert data != plain
    want = prepare_jpeg(plain, SPEC, SETTINGS)
    got = prepare_jpeg(data, SPEC, SETTINGS)
    assert got.source_size == (1280, 900)
    assert got.decoded_size == want.decoded_size == (160, 113), "not DCT-scaled like the plain frame"
    assert np.array_equal(got.pixels, want.pixels), f"{variant}: not the plain frame's pixels"
    assert got.captured_at == VARIANT_TIMES[variant]


def test_bushnell_mpo_file_is_scored_on_its_primary_image(classifier: Classifier) -> None:
    """Pillow calls a JPEG with an APP2 MPF index "MPO"; its primary image is the photo."""
    plain = OWL.read_bytes()
    data = VARIANTS["mpo_with_preview"](plain)
    assert Image.open(io.BytesIO(data)).format == "MPO", "fixture is not what Pillow calls MPO"
    image, source_size, captured = decode_jpeg(data, (64, 64), SETTINGS)
    assert source_size == (1280, 900) and image.size == (160, 113) and captured == OWL_TIME
    blue = np.asarray(image).reshape(-1, 3).mean(axis=0)[2]
    assert blue < 200, "decoded the blue preview, not the primary image"
    spec = classifier.card.input
    assert classifier.score(prepare_jpeg(data, spec, SETTINGS).pixels) == classifier.score(
        prepare_jpeg(plain, spec, SETTINGS).pixels
    )


# -- capture time -----------------------------------------------------------------------------
def jpeg_with_times(original: str | None, subsec: str | None = None, plain: str | None = None) -> bytes:
    exif = Image.Exif()
    if plain is not None:
        exif[EXIF_DATETIME] = plain
    sub = exif.get_ifd(EXIF_IFD)
    if original is not None:
        sub[EXIF_DATETIME_ORIGINAL] = original
    if subsec is not None:
        sub[EXIF_SUBSEC_ORIGINAL] = subsec
    return jpeg_bytes(Image.new("RGB", (32, 32), (90, 90, 90)), exif=exif.tobytes())


def test_exif_datetime_original_with_subseconds() -> None:
    prepared = prepare_jpeg(jpeg_with_times("2024:05:06 07:08:09", "25"), SPEC, SETTINGS)
    assert prepared.captured_at == datetime(2024, 5, 6, 7, 8, 9, 250_000)


def test_exif_datetime_original_beats_datetime() -> None:
    data = jpeg_with_times("2024:05:06 07:08:09", plain="2030:01:01 00:00:00")
    assert prepare_jpeg(data, SPEC, SETTINGS).captured_at == datetime(2024, 5, 6, 7, 8, 9)


def test_exif_datetime_fallback_and_missing() -> None:
    assert prepare_jpeg(jpeg_with_times(None, plain="2023:12:31 23:59:58"), SPEC, SETTINGS).captured_at == datetime(
        2023, 12, 31, 23, 59, 58
    )
    assert prepare_jpeg(jpeg_with_times(None), SPEC, SETTINGS).captured_at is None
    assert prepare_jpeg(jpeg_with_times("0000:00:00 00:00:00"), SPEC, SETTINGS).captured_at is None


def test_exif_time_of_a_real_frame() -> None:
    prepared = prepare_jpeg((FRAMES / "owl" / "RCNX1419.JPG").read_bytes(), SPEC, SETTINGS)
    assert prepared.captured_at == datetime(2019, 7, 7, 0, 3, 35)


# -- input tables -----------------------------------------------------------------------------
def all_levels() -> np.ndarray:
    """Every pixel value in every channel, channels shifted so they differ: 16x16x3 uint8."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return np.stack([levels, np.roll(levels, 85), np.roll(levels, 170)], axis=-1)


def quantise_float64(pixels: np.ndarray, spec: InputSpec, scale: float, zero_point: int, dtype: type) -> np.ndarray:
    """The float formula, whole-image and in float64: (pixel - mean) / std / scale + zero point."""
    ordered = pixels[..., ::-1] if spec.colour == "BGR" else pixels
    real = (ordered.astype(np.float64) - np.asarray(spec.mean)) / np.asarray(spec.std)
    info = np.iinfo(dtype)
    return np.clip(np.round(real / scale + zero_point), info.min, info.max).astype(dtype)


@pytest.mark.parametrize("colour", ["RGB", "BGR"])
def test_int8_tables_equal_normalise_then_quantise(colour: str) -> None:
    # ImageNet-style normalisation with int8 parameters that put no value on a rounding tie.
    spec = InputSpec(16, 16, colour=colour, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
    scale, zero_point = 0.018658, -14
    pixels = all_levels()
    tensor = to_tensor(pixels, input_luts(spec, np.dtype(np.int8), scale, zero_point), spec.colour)
    assert tensor.shape == (1, 16, 16, 3) and tensor.dtype == np.int8
    real = normalise(pixels, spec)
    expected = np.clip(np.round(real / scale + zero_point), -128, 127).astype(np.int8)
    assert np.array_equal(tensor[0], expected)


def test_int8_tables_of_the_fixture_model_params() -> None:
    """tiny_i8_2class: (p - 127.5) / 127.5 with scale ~1/127.5, zero point -1.

    Here every level lands (almost) exactly on a .5 rounding tie, so float32 arithmetic may round
    either way: the tables must equal the float64 formula exactly, and must be within half a
    quantisation step of normalise() (what any correct rounding gives).
    """
    spec = InputSpec(16, 16, mean=(127.5,) * 3, std=(127.5,) * 3)
    scale, zero_point = float(np.float32(1 / 127.5)), -1
    pixels = all_levels()
    tensor = to_tensor(pixels, input_luts(spec, np.dtype(np.int8), scale, zero_point), "RGB")[0]
    assert np.array_equal(tensor, quantise_float64(pixels, spec, scale, zero_point, np.int8))
    dequantised = (tensor.astype(np.float64) - zero_point) * scale
    assert np.abs(dequantised - normalise(pixels, spec)).max() <= scale / 2 + 1e-6
    assert tensor.min() == -128  # black uses the bottom of the range


def test_uint8_quantised_tables() -> None:
    spec = InputSpec(16, 16, mean=(127.5,) * 3, std=(127.5,) * 3)
    scale, zero_point = 2 / 255, 128
    pixels = all_levels()
    tensor = to_tensor(pixels, input_luts(spec, np.dtype(np.uint8), scale, zero_point), "RGB")[0]
    assert np.array_equal(tensor, quantise_float64(pixels, spec, scale, zero_point, np.uint8))


@pytest.mark.parametrize("colour", ["RGB", "BGR"])
def test_float32_tables_equal_normalise(colour: str) -> None:
    spec = InputSpec(16, 16, colour=colour, mean=(10.0, 20.0, 30.0), std=(255.0, 128.0, 64.0))
    pixels = all_levels()
    tensor = to_tensor(pixels, input_luts(spec, np.dtype(np.float32), 0.0, 0), spec.colour)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0], normalise(pixels, spec), rtol=1e-6, atol=1e-6)


def test_uint8_identity_takes_the_fast_path() -> None:
    spec = InputSpec(16, 16)
    luts = input_luts(spec, np.dtype(np.uint8), 1.0, 0)
    assert luts is None
    pixels = all_levels()
    tensor = to_tensor(pixels, luts, "RGB")
    assert tensor.shape == (1, 16, 16, 3)
    assert np.array_equal(tensor[0], pixels)


def test_uint8_bgr_is_not_the_identity() -> None:
    spec = InputSpec(16, 16, colour="BGR")
    luts = input_luts(spec, np.dtype(np.uint8), 1.0, 0)
    assert luts is not None
    pixels = all_levels()
    assert np.array_equal(to_tensor(pixels, luts, "BGR")[0], pixels[..., ::-1])


# -- one preprocessing for files and arrays ---------------------------------------------------
@pytest.mark.parametrize(
    "path", [PERU[0], FRAMES / "owl" / "RCNX1419.JPG", FRAMES / "speciesnet" / "ocelot.jpg"], ids=lambda p: p.name
)
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_prepare_array_equals_prepare_jpeg(path: Path, resize: str) -> None:
    spec = InputSpec(64, 48, resize=resize)
    data = path.read_bytes()
    from_file = prepare_jpeg(data, spec, SETTINGS)
    decoded, _, _ = decode_jpeg(data, (spec.width, spec.height), SETTINGS)
    from_array = prepare_array(np.asarray(decoded), spec, SETTINGS)
    assert np.array_equal(from_array.pixels, from_file.pixels)
    assert from_array.exposure == from_file.exposure
    assert from_array.gamma == from_file.gamma
    assert from_array.decoded_size == from_file.decoded_size


def test_prepare_array_rejects_wrong_arrays() -> None:
    from firmware_app.errors import ImageError

    with pytest.raises(ImageError, match="HxWx3 uint8"):
        prepare_array(np.zeros((10, 10), np.uint8), SPEC, SETTINGS)
    with pytest.raises(ImageError, match="float32"):
        prepare_array(np.zeros((10, 10, 3), np.float32), SPEC, SETTINGS)
