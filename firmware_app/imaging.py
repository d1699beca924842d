"""Frame -> model pixels: reduced-size JPEG decode, orientation, exposure stats, gamma, resize.

This is a shared contract: the trap scores with it and `convert` calibrates, tunes and evaluates
with the very same functions, so a model never sees one preprocessing in the lab and another in
the field.

Why each step:
- JPEG DCT scaling (Pillow `draft`) decodes a 12 MP frame at 1/2, 1/4 or 1/8 size, which is
  several times faster and smaller in memory than a full decode followed by a resize.
- The header is checked before anything is decoded, so a decompression bomb costs nothing.
- Exposure stats and the gamma decision are made on the model-sized image: the model can only
  use what survives the resize, and it costs microseconds there.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from firmware_app.config import ImagingSection
from firmware_app.errors import ImageError
from firmware_app.modelcard import InputSpec

log = logging.getLogger(__name__)

# We do our own, clearer pixel-count check (ImagingSettings.max_pixels) before decoding.
Image.MAX_IMAGE_PIXELS = None

EXIF_ORIENTATION = 0x0112
EXIF_DATETIME = 0x0132
EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_SUBSEC_ORIGINAL = 0x9291
LETTERBOX_FILL = (114, 114, 114)


@dataclass(frozen=True)
class ImagingSettings:
    gamma: str = "auto"  # auto | off
    dark_below: float = 0.25  # mean luminance (0..1) under which a frame counts as under-exposed
    bright_above: float = 0.75  # ... and over which it counts as over-exposed
    target_mean: float = 0.45  # where gamma moves the mean luminance of a badly exposed frame
    gamma_min: float = 0.4  # strongest brightening allowed
    gamma_max: float = 2.5  # strongest darkening allowed
    max_pixels: int = 100_000_000  # refuse larger frames: decompression-bomb guard

    @classmethod
    def from_config(cls, im: ImagingSection) -> ImagingSettings:
        """The [imaging] section as the preprocessing uses it (the one mapping, for every caller)."""
        return cls(
            gamma=im.gamma,
            dark_below=im.dark_below,
            bright_above=im.bright_above,
            target_mean=im.target_mean,
            max_pixels=int(im.max_megapixels * 1e6),
        )


@dataclass(frozen=True)
class Exposure:
    mean: float  # mean luminance 0..1
    shadows: float  # share of pixels at or under 8/255
    highlights: float  # share of pixels at or over 247/255
    greyscale: bool  # channels (nearly) equal: an IR night frame or a greyscale file


@dataclass(frozen=True)
class Prepared:
    """What the model sees, and what the ledger records about how it got there."""

    pixels: np.ndarray  # model-sized HxWx3 uint8 RGB, gamma applied
    exposure: Exposure  # measured before gamma
    gamma: float  # 1.0 means no correction
    source_size: tuple[int, int]  # (width, height) as stored in the file
    decoded_size: tuple[int, int]  # after DCT scaling
    captured_at: datetime | None  # EXIF DateTimeOriginal, if any


def prepare_jpeg(data: bytes, spec: InputSpec, settings: ImagingSettings) -> Prepared:
    """Decode JPEG bytes as small as the model allows and return the model's pixels."""
    image, source_size, captured_at = decode_jpeg(data, (spec.width, spec.height), settings)
    decoded_size = image.size
    return finish(image, spec, settings, source_size, decoded_size, captured_at)


def prepare_jpeg_views(data: bytes, specs: Sequence[InputSpec], settings: ImagingSettings) -> list[Prepared]:
    """One decode, one Prepared per input spec (the classifier's, then the context extractor's).

    The Huffman decode is the fixed cost of a frame, so it is paid once. The first spec sets the
    decode size, so its pixels are exactly what `prepare_jpeg` gives it: the classifier scores a frame
    the same whether or not its camera has context references. The others resize from that image
    (the classifier's 320 px decode is already about the extractor's 288-row input).
    """
    first = specs[0]
    image, source_size, captured_at = decode_jpeg(data, (first.width, first.height), settings)
    return [finish(image, spec, settings, source_size, image.size, captured_at) for spec in specs]


def prepare_array(rgb: np.ndarray, spec: InputSpec, settings: ImagingSettings) -> Prepared:
    """The same preprocessing for frames that arrive as arrays: HxWx3 uint8 RGB. Exactly what
    `prepare_jpeg` does after its decode (no reduction first)."""
    return prepare_array_views(rgb, [spec], settings, reduce=False)[0]


def prepare_array_views(
    rgb: np.ndarray, specs: Sequence[InputSpec], settings: ImagingSettings, reduce: bool = True
) -> list[Prepared]:
    """A camera array, as `prepare_jpeg_views` does a file: one reduction, one Prepared per spec.

    With `reduce`, the full-size array is first box-reduced by the largest integer factor (up to 8)
    that keeps it at least the first spec's size (what the JPEG path's DCT-scaled decode does), so
    each view resizes from a small image, not from all the camera's megapixels twice.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    image = Image.fromarray(rgb, "RGB")
    size = image.size
    first = specs[0]
    factor = min(8, image.width // max(first.width, 1), image.height // max(first.height, 1))
    if reduce and factor >= 2:
        image = image.reduce(factor)
    return [finish(image, spec, settings, size, image.size, None) for spec in specs]


def decode_jpeg(
    data: bytes, want: tuple[int, int], settings: ImagingSettings
) -> tuple[Image.Image, tuple[int, int], datetime | None]:
    """Decode to an upright RGB image at least `want` in size (when the file allows)."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(why_unidentified(data)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable image header: {exc}") from None
    if image.format == "MPO":
        image = primary_image(data)
    if image.format != "JPEG":
        raise ImageError(f"{image.format} file, not a JPEG: camera frames must be JPEG")
    width, height = image.size
    if width * height > settings.max_pixels:
        raise ImageError(
            f"{width}x{height} = {width * height / 1e6:.0f} MP is over imaging.max_megapixels "
            f"({settings.max_pixels / 1e6:.0f} MP): refused as a possible decompression bomb"
        )
    exif = image.getexif()
    orientation = exif.get(EXIF_ORIENTATION, 1)
    # Ask the decoder for the size the model needs, in the file's own (unrotated) axes.
    draft_size = (want[1], want[0]) if orientation in (5, 6, 7, 8) else want
    try:
        image.draft("RGB", draft_size)
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or truncated JPEG: {exc}") from None
    try:
        upright = ImageOps.exif_transpose(image) or image
    except (OSError, ValueError, KeyError) as exc:
        log.debug("EXIF orientation ignored: %s", exc)
        upright = image
    if upright.mode != "RGB":
        upright = upright.convert("RGB")  # L (greyscale, IR), CMYK, YCCK
    return upright, (width, height), exif_capture_time(exif)


def primary_image(data: bytes) -> JpegImagePlugin.JpegImageFile:
    """The primary image of a Multi-Picture Format file, opened as the plain JPEG it is.

    Bushnell trail cameras (and phones) add an APP2 "MPF" index naming a second, smaller image (a
    preview) stored after the primary image's EOI; Pillow then opens the file as "MPO". The primary
    image is a baseline JPEG from the first byte to its EOI: that is the photo, and what is scored.
    Opened as a JPEG it decodes exactly as before, with DCT scaling, and the preview is never read.
    """
    try:
        return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable JPEG header of a multi-picture (MPO) file: {exc}") from None


def why_unidentified(data: bytes) -> str:
    """Why Pillow recognised no format: a JPEG it cannot handle (12/16-bit, damaged header) says so."""
    if data[:3] != b"\xff\xd8\xff":
        return "not an image file (no known image header)"
    try:
        JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    except Exception as exc:  # only to word the message: Pillow raises SyntaxError, OSError, struct.error...
        return f"unsupported or damaged JPEG header: {exc}"
    return "unsupported or damaged JPEG header"


def exif_capture_time(exif: Image.Exif) -> datetime | None:
    """DateTimeOriginal (with sub-seconds when present), else DateTime; None if missing or bad.

    Cameras with an unset clock or odd firmware write zeros, blanks or junk bytes (Pillow reads them
    as Latin-1): only ASCII digits count, and anything else means "no time" (the caller then uses
    the file's time), never an error.
    """
    sub = exif.get_ifd(EXIF_IFD)
    text = sub.get(EXIF_DATETIME_ORIGINAL) or exif.get(EXIF_DATETIME)
    if not isinstance(text, str) or not text.isascii():
        return None
    try:
        stamp = datetime.strptime(text.strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    subsec = str(sub.get(EXIF_SUBSEC_ORIGINAL) or "").strip("\x00 ")
    if subsec.isascii() and subsec.isdigit():  # str.isdigit alone takes "²", which int() refuses
        stamp = stamp.replace(microsecond=int(subsec[:6].ljust(6, "0")))
    return stamp


def finish(
    image: Image.Image,
    spec: InputSpec,
    settings: ImagingSettings,
    source_size: tuple[int, int],
    decoded_size: tuple[int, int],
    captured_at: datetime | None,
) -> Prepared:
    """Decoded upright RGB image -> model pixels: resize, measure exposure, apply gamma."""
    pixels = np.asarray(resize_to_input(image, spec))
    exposure = exposure_stats(pixels)
    gamma = choose_gamma(exposure, settings)
    if gamma != 1.0:
        pixels = gamma_lut(gamma)[pixels]
    return Prepared(pixels, exposure, gamma, source_size, decoded_size, captured_at)


def resize_to_input(image: Image.Image, spec: InputSpec) -> Image.Image:
    """Crop the info bars the card names, then resize exactly as it says: stretch, or letterbox on grey."""
    if spec.crop_top or spec.crop_bottom:
        top, bottom = round(image.height * spec.crop_top), round(image.height * (1 - spec.crop_bottom))
        image = image.crop((0, top, image.width, max(bottom, top + 1)))
    size = (spec.width, spec.height)
    if spec.resize == "stretch" or image.size == size:
        return image.resize(size, Image.Resampling.BILINEAR)
    scale = min(spec.width / image.width, spec.height / image.height)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", size, LETTERBOX_FILL)
    canvas.paste(image.resize(inner, Image.Resampling.BILINEAR), ((size[0] - inner[0]) // 2, (size[1] - inner[1]) // 2))
    return canvas


def exposure_stats(rgb: np.ndarray) -> Exposure:
    """Mean luminance, clipped shadows/highlights and an IR-greyscale flag of an RGB uint8 image."""
    channels = rgb.astype(np.int32)
    r, g, b = channels[..., 0], channels[..., 1], channels[..., 2]
    luma = (299 * r + 587 * g + 114 * b) // 1000  # ITU-R BT.601, integer to stay fast
    chroma = float(np.mean(np.abs(r - g) + np.abs(g - b)))
    return Exposure(
        mean=float(luma.mean()) / 255.0,
        shadows=float(np.count_nonzero(luma <= 8)) / luma.size,
        highlights=float(np.count_nonzero(luma >= 247)) / luma.size,
        greyscale=chroma < 4.0,
    )


def choose_gamma(exposure: Exposure, settings: ImagingSettings) -> float:
    """Gamma that moves a badly exposed frame's mean luminance towards `target_mean`; 1.0 otherwise.

    out = in ** gamma, so gamma < 1 brightens a dark frame (a dark animal at night becomes
    visible) and gamma > 1 darkens a washed-out one.
    """
    if settings.gamma == "off":
        return 1.0
    mean = min(max(exposure.mean, 1e-3), 1 - 1e-3)
    if settings.dark_below <= mean <= settings.bright_above:
        return 1.0
    gamma = math.log(settings.target_mean) / math.log(mean)
    gamma = min(max(gamma, settings.gamma_min), settings.gamma_max)
    return round(gamma, 2)  # rounded so LUTs are cached and the ledger stays readable


@lru_cache(maxsize=256)
def gamma_lut(gamma: float) -> np.ndarray:
    levels = np.arange(256, dtype=np.float64) / 255.0
    lut = np.round(255.0 * levels**gamma).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Model-sized RGB uint8 -> the model's real-valued input, (pixel - mean) / std, float32."""
    ordered = pixels[..., ::-1] if spec.colour == "BGR" else pixels
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    return ((ordered.astype(np.float32) - mean) / std).astype(np.float32)


def input_luts(spec: InputSpec, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray | None:
    """Per-channel 256-entry tables: pixel -> normalised -> quantised tensor value.

    One table lookup replaces the float normalise + quantise arithmetic. None when the tensor
    takes the pixels unchanged (uint8, mean 0, std 1, scale 1, zero point 0).
    """
    levels = np.arange(256, dtype=np.float64)
    tables = []
    for mean, std in zip(spec.mean, spec.std, strict=True):
        real = (levels - mean) / std
        if dtype == np.float32:
            tables.append(real.astype(np.float32))
            continue
        info = np.iinfo(dtype)
        q = np.clip(np.round(real / scale + zero_point), info.min, info.max)
        tables.append(q.astype(dtype))
    stacked = np.stack(tables)
    if dtype == np.uint8 and all(np.array_equal(t, levels) for t in stacked) and spec.colour == "RGB":
        return None
    return stacked


def to_tensor(pixels: np.ndarray, luts: np.ndarray | None, colour: str) -> np.ndarray:
    """Apply the tables channel by channel and add the batch axis: [1, H, W, 3]."""
    if luts is None:
        return pixels[None]
    ordered = pixels[..., ::-1] if colour == "BGR" else pixels
    out = np.empty(ordered.shape, dtype=luts.dtype)
    for channel in range(3):
        out[..., channel] = luts[channel][ordered[..., channel]]
    return out[None]
