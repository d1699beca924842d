"""firmware_app.classifiers: the fixture models on the real TFLite runtime, card checks, fallbacks."""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FRAMES, MODELS, TINY_U8

from firmware_app.classifiers import load_classifier
from firmware_app.classifiers.tflite import TFLiteClassifier, import_runtime
from firmware_app.errors import ModelError
from firmware_app.imaging import ImagingSettings, normalise, prepare_jpeg
from firmware_app.modelcard import InputSpec

# The runtime this environment tests: ai-edge-litert by default; the CI's second venv (the Pi's
# tflite-runtime with numpy < 2) sets BLANKFILTER_TEST_RUNTIME=tflite_runtime and has no ai-edge-litert.
RUNTIME = os.environ.get("BLANKFILTER_TEST_RUNTIME", "ai_edge_litert")
TINY_I8 = MODELS / "tiny_i8_2class.tflite"
TINY_F32 = MODELS / "tiny_f32.tflite"
BAD_RANK = MODELS / "bad_rank.tflite"
FIXTURE_MODELS = [TINY_U8, TINY_I8, TINY_F32]
SAMPLE_FRAMES = [
    FRAMES / "wellington" / "11374_1-1.JPG",
    FRAMES / "missouri" / "SEQ75192_IMG_0001.JPG",
    FRAMES / "speciesnet" / "blank.jpg",
    FRAMES / "speciesnet" / "ocelot.jpg",
    FRAMES / "peru" / "cam1_EK000004.JPG",
    FRAMES / "owl" / "RCNX1419.JPG",
]


def frame_pixels(spec: InputSpec) -> list[np.ndarray]:
    return [prepare_jpeg(p.read_bytes(), spec, ImagingSettings()).pixels for p in SAMPLE_FRAMES]


def raw_interpreter(path: Path) -> Any:
    _, module = import_runtime(RUNTIME)
    interpreter = module.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def run_raw(interpreter: Any, tensor: np.ndarray) -> np.ndarray:
    """One inference, by hand: the raw output values (dequantised when the output is quantised)."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    values = interpreter.get_tensor(out["index"]).reshape(-1).astype(np.float64)
    scale, zero_point = out["quantization"]
    return (values - zero_point) * scale if scale else values


def copy_model(src: Path, folder: Path, name: str | None = None) -> Path:
    """Copy a fixture model and its card into `folder` (optionally renamed); returns the .tflite."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = name or src.stem
    model = folder / f"{stem}.tflite"
    shutil.copyfile(src, model)
    shutil.copyfile(src.with_suffix(".json"), folder / f"{stem}.json")
    return model


def edit_card(model: Path, change: dict[str, Any]) -> None:
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    for dotted, value in change.items():
        node = card
        *parents, key = dotted.split(".")
        for parent in parents:
            node = node[parent]
        node[key] = value
    card_path.write_text(json.dumps(card))


# -- the fixture models on the real runtime ---------------------------------------------------
@pytest.mark.parametrize("model", FIXTURE_MODELS, ids=lambda p: p.stem)
def test_fixture_models_score_frames(model: Path) -> None:
    classifier = load_classifier(model, threads=1)
    assert classifier.runtime == RUNTIME
    assert classifier.card.name == model.stem
    scores = [classifier.score(pixels) for pixels in frame_pixels(classifier.card.input)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert len({round(s, 4) for s in scores}) >= 3, f"scores do not depend on the frame: {scores}"


@pytest.mark.parametrize("model", FIXTURE_MODELS, ids=lambda p: p.stem)
def test_scores_are_deterministic(model: Path) -> None:
    first = load_classifier(model, threads=1)
    second = load_classifier(model, threads=2)
    for pixels in frame_pixels(first.card.input):
        a = first.score(pixels)
        assert first.score(pixels) == a
        assert second.score(pixels) == pytest.approx(a, abs=1e-6)


@pytest.mark.parametrize("threads", [1, 4])
def test_thread_count_is_accepted(threads: int) -> None:
    classifier = load_classifier(TINY_U8, threads=threads)
    assert 0.0 <= classifier.score(np.full((64, 64, 3), 128, np.uint8)) <= 1.0


def test_logit_model_returns_sigmoid_of_raw_logit() -> None:
    classifier = load_classifier(TINY_F32, threads=1)
    assert classifier.card.output_kind == "logit"
    interpreter = raw_interpreter(TINY_F32)
    logits = []
    for pixels in frame_pixels(classifier.card.input):
        (logit,) = run_raw(interpreter, normalise(pixels, classifier.card.input)[None])  # p / 255
        logits.append(logit)
        assert classifier.score(pixels) == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-6)
    # The check means something only if some logits are outside [0, 1] (not already probabilities).
    assert any(z < 0 or z > 1 for z in logits)


def test_two_class_model_returns_second_probability() -> None:
    classifier = load_classifier(TINY_I8, threads=1)
    spec = classifier.card.input
    interpreter = raw_interpreter(TINY_I8)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    firsts = []
    for pixels in frame_pixels(spec):
        real = (pixels.astype(np.float64) - np.asarray(spec.mean)) / np.asarray(spec.std)
        tensor = np.clip(np.round(real / scale + zero_point), -128, 127).astype(np.int8)[None]
        p_blank, p_nonblank = run_raw(interpreter, tensor)
        assert p_blank + p_nonblank == pytest.approx(1.0, abs=0.01)  # softmax output
        assert classifier.score(pixels) == pytest.approx(p_nonblank, abs=1e-9)
        firsts.append(p_blank)
    assert any(abs(p - 0.5) > 0.01 for p in firsts), "p(blank) == p(non-blank): the test cannot tell them apart"


def test_u8_model_uses_card_cutoff_and_raw_pixels() -> None:
    classifier = load_classifier(TINY_U8, threads=1)
    assert classifier.card.cutoff == 0.85
    interpreter = raw_interpreter(TINY_U8)
    for pixels in frame_pixels(classifier.card.input):
        (p,) = run_raw(interpreter, pixels[None])
        assert classifier.score(pixels) == pytest.approx(p, abs=1e-9)


# -- load errors ------------------------------------------------------------------------------
def test_text_file_is_not_a_model(tmp_path: Path) -> None:
    model = copy_model(TINY_U8, tmp_path)
    model.write_text("this is a model, honest\n")
    with pytest.raises(ModelError, match="TFL3") as info:
        load_classifier(model)
    assert str(model) in str(info.value)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        load_classifier(tmp_path / "nowhere.tflite")
    assert "nowhere.tflite" in str(info.value)


def test_model_without_card(tmp_path: Path) -> None:
    model = tmp_path / "tiny_u8.tflite"
    shutil.copyfile(TINY_U8, model)
    with pytest.raises(ModelError, match=r"no model card tiny_u8\.json") as info:
        load_classifier(model)
    assert str(model) in str(info.value)


def test_card_of_another_model_fails_the_sha256(tmp_path: Path) -> None:
    model = tmp_path / "tiny_i8_2class.tflite"
    shutil.copyfile(TINY_U8, model)
    shutil.copyfile(TINY_I8.with_suffix(".json"), tmp_path / "tiny_i8_2class.json")
    with pytest.raises(ModelError, match="sha256") as info:
        load_classifier(model)
    assert str(model) in str(info.value) and "tiny_i8_2class.json" in str(info.value)


def test_bad_rank_model_names_the_shape() -> None:
    with pytest.raises(ModelError) as info:
        load_classifier(BAD_RANK)
    message = str(info.value)
    assert "bad_rank.tflite" in message
    assert "shape" in message and "[1, 192]" in message


def test_card_size_disagreeing_with_tensor(tmp_path: Path) -> None:
    model = copy_model(TINY_U8, tmp_path)
    edit_card(model, {"input.width": 96})
    with pytest.raises(ModelError) as info:
        load_classifier(model)
    message = str(info.value)
    assert str(model) in message and "64x64" in message and "96x64" in message


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"cutoff": 1.5}, "cutoff"),
        ({"cutoff": 0}, "cutoff"),
        ({"cutoff": "low"}, "cutoff"),
        ({"input.colour": "YUV"}, "input.colour"),
        ({"input.resize": "crop"}, "input.resize"),
        ({"input.std": [1, 0, 1]}, "input.std"),
        ({"output.kind": "odds"}, "output.kind"),
        ({"context_score": {"noise_floor": float("nan")}}, "context_score.noise_floor"),
        ({"context_score": {"noise_floor": 0}}, "context_score.noise_floor"),
        ({"context_score": {"noise_floor": True}}, "context_score.noise_floor"),
        ({"context_score": {"noise_floor": 5}}, "context_score.noise_floor"),
        ({"context_score": "0.1"}, "context_score.noise_floor"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_bad_card_values(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    model = copy_model(TINY_U8, tmp_path)
    edit_card(model, change)
    with pytest.raises(ModelError) as info:
        load_classifier(model)
    message = str(info.value)
    assert "tiny_u8.json" in message and key in message


def test_card_not_json(tmp_path: Path) -> None:
    model = copy_model(TINY_U8, tmp_path)
    model.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match=r"tiny_u8\.json"):
        load_classifier(model)


# -- runtimes ---------------------------------------------------------------------------------
def test_runtime_fallback_without_ai_edge_litert(monkeypatch: pytest.MonkeyPatch) -> None:
    has_tflite_runtime = importlib.util.find_spec("tflite_runtime") is not None
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    if has_tflite_runtime:
        name, module = import_runtime("auto")
        assert name == "tflite_runtime"
        assert hasattr(module, "Interpreter")
        classifier = load_classifier(TINY_U8, runtime="auto")
        assert classifier.runtime == "tflite_runtime"
    else:
        with pytest.raises(ModelError) as info:
            import_runtime("auto")
        message = str(info.value)
        assert "ai_edge_litert" in message and "tflite_runtime" in message
        assert "pip install ai-edge-litert" in message and "pip install tflite-runtime" in message
        with pytest.raises(ModelError, match="no TFLite runtime"):
            load_classifier(TINY_U8)


def test_explicit_runtime_that_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ModelError) as info:
        import_runtime("tflite_runtime")
    assert "tflite_runtime" in str(info.value) and "pip install" in str(info.value)


def test_runtime_asked_for_by_name_is_the_one_used() -> None:
    """Each CI leg names its runtime (ai_edge_litert, or tflite_runtime in the Pi-stack venv)."""
    classifier = load_classifier(TINY_U8, threads=1, runtime=RUNTIME)
    assert classifier.runtime == RUNTIME
    auto = load_classifier(TINY_U8, threads=1, runtime="auto")
    assert auto.runtime == RUNTIME, "auto picks the only (or the preferred) runtime installed here"
    pixels = np.full((64, 64, 3), 90, np.uint8)
    assert 0.0 <= classifier.score(pixels) <= 1.0
    assert classifier.score(pixels) == auto.score(pixels)


# -- Edge TPU fallback ------------------------------------------------------------------------
def edgetpu_available() -> bool:
    from ctypes.util import find_library

    return find_library("edgetpu") is not None


@pytest.mark.skipif(edgetpu_available(), reason="libedgetpu is installed here: the CPU fallback cannot be exercised")
# ai_edge_litert's Delegate.__del__ raises AttributeError when load_delegate failed (a runtime bug,
# not ours): collect it here so it is reported, and ignored, inside this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_edgetpu_falls_back_to_cpu_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = copy_model(TINY_U8, tmp_path)
    shutil.copyfile(TINY_U8, tmp_path / "tiny_u8_edgetpu.tflite")
    caplog.set_level(logging.DEBUG)
    classifier = load_classifier(model, threads=1, edgetpu=True)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Edge TPU" in warnings[0].getMessage()
    assert "+edgetpu" not in classifier.runtime
    cpu = load_classifier(TINY_U8, threads=1)
    for pixels in frame_pixels(cpu.card.input):
        assert classifier.score(pixels) == cpu.score(pixels)
    del warnings
    caplog.clear()  # the log record holds the exception, its traceback and the half-made Delegate
    gc.collect()


def test_edgetpu_without_twin_warns_and_runs_on_cpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = copy_model(TINY_U8, tmp_path)
    caplog.set_level(logging.DEBUG)
    classifier = load_classifier(model, threads=1, edgetpu=True)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "tiny_u8_edgetpu.tflite" in message and "does not exist" in message
    assert classifier.runtime == RUNTIME


def test_edgetpu_twin_uses_the_plain_card(tmp_path: Path) -> None:
    """`x_edgetpu.tflite` is described by `x.json`; its sha256 cannot match the CPU model's."""
    model = copy_model(TINY_U8, tmp_path)
    twin = tmp_path / "tiny_u8_edgetpu.tflite"
    shutil.copyfile(TINY_U8, twin)
    classifier = TFLiteClassifier(twin, threads=1)
    assert classifier.card.path == model.with_suffix(".json")
