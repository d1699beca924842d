"""The camera-context feature extractor: an int8 TFLite model whose card says output.kind = "features".

It maps a frame to a stride-32 feature map ([h, w, c]); `firmware_app.context.score` compares
those maps with the camera's reference frames. Same runtimes, card checks and Edge TPU fallback
as the classifier (it is the same TFLite base class).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from firmware_app.classifiers import models_dir
from firmware_app.classifiers.tflite import TFLiteModel
from firmware_app.errors import ModelError
from firmware_app.modelcard import ModelCard

log = logging.getLogger(__name__)


class FeatureExtractor(Protocol):
    card: ModelCard
    runtime: str

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """[h, w, c] float32 cell features, each cell scaled to unit length, for one HxWx3 uint8 frame."""
        ...


class TFLiteFeatureExtractor(TFLiteModel):
    kinds = ("features",)
    role = "camera-context feature extractor"

    def check_output(self, values: np.ndarray) -> None:
        if values.ndim != 4 or values.shape[0] != 1 or min(values.shape[1:]) < 1:
            raise ModelError(f"{self.model_path}: output shape {list(values.shape)}; expected [1, h, w, channels]")

    def features(self, pixels: np.ndarray) -> np.ndarray:
        return unit_cells(self.run(pixels)[0])


def unit_cells(feature_map: np.ndarray) -> np.ndarray:
    """Scale each cell's feature vector to length 1, so a dot product is the cosine similarity."""
    norms = np.linalg.norm(feature_map, axis=-1, keepdims=True)
    return (feature_map / np.maximum(norms, 1e-6)).astype(np.float32)


def default_extractor_path(folder: Path | None = None) -> Path:
    """The shipped extractor: models/context/*.tflite (not beside the classifier, which must stay alone there)."""
    folder = folder or models_dir() / "context"
    found = sorted(p for p in folder.glob("*.tflite") if not p.stem.endswith("_edgetpu"))
    if len(found) != 1:
        what = "no" if not found else "several"
        raise ModelError(
            f"{what} camera-context extractor in {folder}: set context.extractor to the .tflite file "
            "(made by `blankfilter convert --output-kind features`, with its card beside it)"
        )
    return found[0]


def load_extractor(
    path: Path | None, threads: int = 2, edgetpu: bool = False, runtime: str = "auto"
) -> FeatureExtractor:
    return TFLiteFeatureExtractor(path or default_extractor_path(), threads=threads, edgetpu=edgetpu, runtime=runtime)
