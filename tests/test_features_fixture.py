"""The tiny camera-context fixture (tests/fixtures/models/tiny_features.tflite) behaves like an extractor.

The context tests lean on it: if it stopped telling a local change from a re-shot scene, they would
test nothing. Runs on both runtimes (scripts/test), so it also proves the file loads on tflite-runtime.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FRAMES, MODELS

from firmware_app.context.extractor import TFLiteFeatureExtractor
from firmware_app.context.score import distance_map
from firmware_app.imaging import ImagingSettings, prepare_jpeg

RUNTIME = os.environ.get("BLANKFILTER_TEST_RUNTIME", "ai_edge_litert")


@pytest.fixture(scope="module")
def extractor() -> TFLiteFeatureExtractor:
    return TFLiteFeatureExtractor(MODELS / "tiny_features.tflite", threads=1, runtime=RUNTIME)


def pixels(extractor: TFLiteFeatureExtractor, name: str) -> np.ndarray:
    return prepare_jpeg((FRAMES / name).read_bytes(), extractor.card.input, ImagingSettings()).pixels


def test_card_and_output(extractor: TFLiteFeatureExtractor) -> None:
    spec = extractor.card.input
    assert (spec.width, spec.height, spec.crop_top, spec.crop_bottom) == (64, 32, 0.05, 0.05)
    assert extractor.card.output_kind == "features" and extractor.card.cutoff == 0.3
    features = extractor.features(pixels(extractor, "missouri/SEQ75192_IMG_0003.JPG"))
    assert features.shape == (4, 8, 16) and features.dtype == np.float32
    assert np.allclose(np.linalg.norm(features, axis=-1), 1.0, atol=1e-5)


def test_local_change_moves_only_nearby_cells(extractor: TFLiteFeatureExtractor) -> None:
    frame = pixels(extractor, "missouri/SEQ75192_IMG_0003.JPG")
    reference = extractor.features(frame)[None]
    brighter = np.clip(frame * 1.05 + 3, 0, 255).astype(np.uint8)
    changed = frame.copy()
    changed[10:22, 30:42] = 255 - changed[10:22, 30:42]  # an "animal" over cells (1..2, 3..5)
    assert distance_map(extractor.features(brighter), reference).max() < 0.3, "a re-shot scene stays under the cutoff"
    dmap = distance_map(extractor.features(changed), reference)
    row, col = np.unravel_index(int(np.argmax(dmap)), dmap.shape)
    assert dmap[row, col] > 0.3 and 1 <= row <= 2 and 3 <= col <= 5
    assert (dmap > 0.1).sum() <= 12 and np.median(dmap) < 0.02, "the rest of the scene still matches"


def test_another_scene_differs_everywhere(extractor: TFLiteFeatureExtractor) -> None:
    reference = extractor.features(pixels(extractor, "missouri/SEQ75192_IMG_0003.JPG"))[None]
    other = extractor.features(pixels(extractor, "wellington/1200_1-0.JPG"))
    assert np.median(distance_map(other, reference)) > 0.1
