"""The model card: the JSON beside every `.tflite` that says how to feed and read the model.

This is a shared contract: the trap reads it, `convert` writes it. Format `blankfilter-model-card/1`:

    {"format": "blankfilter-model-card/1", "name": "...", "version": "...",
     "file": "x.tflite", "sha256": "...",
     "input": {"width": 224, "height": 224, "colour": "RGB", "resize": "stretch",
               "mean": [0, 0, 0], "std": [1, 1, 1]},
     "output": {"kind": "probability" | "logit" | "features", "meaning": "...", "classes": ["blank", "non-blank"]},
     "cutoff": 0.25, "target_recall": 0.97, "metrics": {...},
     "edgetpu": {"file": "x_edgetpu.tflite", "sha256": "..."}}

`mean`/`std` are in pixel units: the model's real-valued input is (pixel - mean) / std per channel.
`input.crop` (optional) is the share of the frame's height cut off at the top and the bottom before
the resize: the info bars that trail cameras stamp on every frame.

A `features` model (the camera-context extractor) outputs a `[1, h, w, c]` feature map; its `cutoff`
is the context score's cutoff (see firmware_app/context/), and `context_score.noise_floor` (optional)
the score's calibration that cutoff was chosen with (`firmware_app.context.score.excess_share`; absent
in cards made before it: the plain difference).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_app.errors import ModelError

log = logging.getLogger(__name__)

CARD_FORMAT = "blankfilter-model-card/1"
RESIZE_MODES = ("stretch", "letterbox")
COLOURS = ("RGB", "BGR")
CLASSIFIER_KINDS = ("probability", "logit")
OUTPUT_KINDS = (*CLASSIFIER_KINDS, "features")


@dataclass(frozen=True)
class InputSpec:
    """How a frame becomes the model's input tensor (before dtype/quantisation)."""

    width: int
    height: int
    colour: str = "RGB"
    resize: str = "stretch"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop_top: float = 0.0  # share of the height cut off before resizing (info bars)
    crop_bottom: float = 0.0


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    path: Path  # the card file itself
    model_file: str
    sha256: str
    input: InputSpec
    output_kind: str = "probability"
    cutoff: float = 0.5
    target_recall: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    edgetpu_file: str | None = None
    edgetpu_sha256: str | None = None
    noise_floor: float | None = None  # features models: context_score.noise_floor (score.excess_share)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def output_probability(values: np.ndarray, kind: str) -> float:
    """A model's (dequantised) output values -> p(non-blank), as the card's output.kind says.

    1 value: p(non-blank), or its logit. 2 values: [blank, non-blank] probabilities, or logits.
    The trap and `convert` (float vs int8 checks) both read outputs through this one function.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if kind == "logit":
        if flat.size == 2:
            shifted = np.exp(flat - flat.max())
            return float(shifted[1] / shifted.sum())
        return 0.5 * (1.0 + math.tanh(float(flat[0]) / 2.0))  # a sigmoid that cannot overflow
    return float(flat[-1])


def card_path_for(model_path: Path) -> Path:
    """`x.tflite` and `x_edgetpu.tflite` both use the card `x.json`."""
    stem = model_path.stem.removesuffix("_edgetpu")
    return model_path.with_name(stem + ".json")


def load_card(model_path: Path) -> ModelCard:
    """Read and check the card beside `model_path`; every problem names the card and the key."""
    card_path = card_path_for(model_path)
    if not card_path.is_file():
        raise ModelError(
            f"{model_path}: no model card {card_path.name} beside it. Every model needs its card "
            "(input size, normalisation, output meaning, cutoff); `blankfilter convert` writes one."
        )
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_path}: not a readable JSON model card ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{card_path}: a model card must be a JSON object")
    return parse_card(raw, card_path)


def _need(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in raw:
        raise ModelError(f"{where}: key '{key}' is missing")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelError(f"{where}: key '{key}' = {value!r} has the wrong type")
    return value


def _triple(raw: dict[str, Any], key: str, default: float, where: Path) -> tuple[float, float, float]:
    value = raw.get(key, [default] * 3)
    if isinstance(value, (int, float)):
        value = [value] * 3
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise ModelError(f"{where}: key 'input.{key}' = {value!r} must be a number or 3 numbers")
    a, b, c = (float(v) for v in value)
    return a, b, c


def _crop(crop: Any, where: Path) -> tuple[float, float]:
    top, bottom = (crop.get("top", 0.0), crop.get("bottom", 0.0)) if isinstance(crop, dict) else (None, None)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 0.5 for v in (top, bottom)):
        raise ModelError(f'{where}: key \'input.crop\' = {crop!r}; expected {{"top": 0..0.5, "bottom": 0..0.5}}')
    return float(top), float(bottom)  # type: ignore[arg-type]


def _noise_floor(raw: dict[str, Any], where: Path) -> float | None:
    section = raw.get("context_score")
    if section is None:
        return None
    value = section.get("noise_floor") if isinstance(section, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0.0 < value <= 2.0):
        key, shown = ("context_score.noise_floor", value) if isinstance(section, dict) else ("context_score", section)
        found = f"'{key}' = {shown!r}"
        raise ModelError(f"{where}: key {found}; expected context_score.noise_floor, a number over 0, at most 2")
    return float(value)


def parse_card(raw: dict[str, Any], where: Path) -> ModelCard:
    fmt = raw.get("format", CARD_FORMAT)
    if fmt != CARD_FORMAT:
        raise ModelError(f"{where}: key 'format' = {fmt!r}; this blankfilter reads {CARD_FORMAT!r}")
    spec = _need(raw, "input", dict, where)
    width, height = _need(spec, "width", int, where), _need(spec, "height", int, where)
    if not (8 <= width <= 4096 and 8 <= height <= 4096):
        raise ModelError(f"{where}: input size {width}x{height} is out of range 8..4096")
    colour, resize = spec.get("colour", "RGB"), spec.get("resize", "stretch")
    if colour not in COLOURS:
        raise ModelError(f"{where}: key 'input.colour' = {colour!r}; expected one of {', '.join(COLOURS)}")
    if resize not in RESIZE_MODES:
        raise ModelError(f"{where}: key 'input.resize' = {resize!r}; expected one of {', '.join(RESIZE_MODES)}")
    std = _triple(spec, "std", 1.0, where)
    if any(s <= 0 for s in std):
        raise ModelError(f"{where}: key 'input.std' = {list(std)} must be positive")
    crop_top, crop_bottom = _crop(spec.get("crop") or {}, where)
    output = raw.get("output", {})
    kind = output.get("kind", "probability") if isinstance(output, dict) else None
    if kind not in OUTPUT_KINDS:
        raise ModelError(f"{where}: key 'output.kind' = {kind!r}; expected one of {', '.join(OUTPUT_KINDS)}")
    cutoff = _need(raw, "cutoff", (int, float), where)
    if not 0.0 < cutoff < 1.0:
        raise ModelError(f"{where}: key 'cutoff' = {cutoff!r} must be between 0 and 1")
    edgetpu = raw.get("edgetpu") or {}
    return ModelCard(
        name=str(_need(raw, "name", str, where)),
        version=str(_need(raw, "version", str, where)),
        path=where,
        model_file=str(raw.get("file", "")),
        sha256=str(_need(raw, "sha256", str, where)).lower(),
        input=InputSpec(width, height, colour, resize, _triple(spec, "mean", 0.0, where), std, crop_top, crop_bottom),
        output_kind=kind,
        cutoff=float(cutoff),
        target_recall=raw.get("target_recall"),
        metrics=raw.get("metrics") or {},
        edgetpu_file=edgetpu.get("file"),
        edgetpu_sha256=edgetpu.get("sha256"),
        noise_floor=_noise_floor(raw, where),
        raw=raw,
    )
