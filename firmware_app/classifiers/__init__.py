"""Classifiers: one small interface, one plugin per runtime (the runtime import lives in the plugin).

A classifier turns model-sized RGB pixels (from `firmware_app.imaging`) into p(non-blank).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from firmware_app.errors import ModelError
from firmware_app.modelcard import ModelCard

log = logging.getLogger(__name__)

# The shipped model(s) live in models/ at the top of the project (beside firmware_app/);
# BLANKFILTER_MODELS_DIR points elsewhere (an installed system's share folder, a test).
MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "models"


def models_dir() -> Path:
    return Path(os.environ.get("BLANKFILTER_MODELS_DIR") or MODELS_DIR)


class Classifier(Protocol):
    card: ModelCard
    runtime: str  # e.g. "ai_edge_litert", "tflite_runtime+edgetpu"

    def score(self, pixels: np.ndarray) -> float:
        """p(non-blank) in [0, 1] for one model-sized HxWx3 uint8 RGB frame."""
        ...


def default_model_path(folder: Path | None = None) -> Path:
    """The shipped model, or a ModelError that says how to get one."""
    folder = folder or models_dir()
    found = sorted(p for p in folder.glob("*.tflite") if not p.stem.endswith("_edgetpu"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelError(
            f"no model in {folder}: the trained blank/non-blank model ships there (see "
            "models/README.md). Until then pass --model FILE.tflite (with its card FILE.json "
            "beside it) or set model.path in the config; `blankfilter convert` makes one from a "
            "Keras, SavedModel, PyTorch or ONNX model."
        )
    names = ", ".join(p.name for p in found)
    raise ModelError(f"several models in {folder} ({names}): choose one with --model or model.path")


def load_classifier(
    path: Path | None,
    threads: int = 2,
    edgetpu: bool = False,
    runtime: str = "auto",
    kernels: str = "optimised",
) -> Classifier:
    """Load and check a model now, so a bad file fails at start-up and not at frame 1000."""
    from firmware_app.classifiers.tflite import TFLiteClassifier

    model_path = path if path is not None else default_model_path()
    return TFLiteClassifier(model_path, threads=threads, edgetpu=edgetpu, runtime=runtime, kernels=kernels)
