"""`blankfilter convert`: small models built here, converted to full int8 with the real TensorFlow
converter, then loaded and run by the trap's own runtime."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
from conftest import FRAMES

from firmware_app.classifiers.tflite import TFLiteClassifier
from firmware_app.hashing import sha256_file
from firmware_app.imaging import ImagingSettings, normalise, prepare_jpeg

# The Pi-stack leg (tflite-runtime, numpy < 2) has no TensorFlow: converting is a workstation job.
tf = pytest.importorskip("tensorflow", reason="the convert extra (TensorFlow) is not installed in this environment")

RunCli = Callable[..., CompletedProcess[str]]
LABELS = FRAMES / "labels.csv"
SIZE = 64


def small_keras(path: Path, size: int = SIZE, input_shape: tuple[int, ...] | None = None) -> Path:
    """A tiny image scorer: takes raw 0..255 pixels (Rescaling inside), outputs p(non-blank)."""
    tf.keras.utils.set_random_seed(4)
    inputs = tf.keras.Input(input_shape or (size, size, 3))
    x = tf.keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    if input_shape is None:
        x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = tf.keras.layers.DepthwiseConv2D(3, activation="relu")(x)
        x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(1, activation="sigmoid")(x)
    model = tf.keras.Model(inputs, outputs)
    model.save(path)
    return path


def convert(run_cli: RunCli, model: Path, out: Path, *extra: str | Path) -> CompletedProcess[str]:
    return run_cli("convert", model, "-o", out, "--calibration", FRAMES, "--quiet", *extra, timeout=300)


def float_scores(model: tf.keras.Model, spec: object) -> list[float]:
    settings = ImagingSettings()
    frames = sorted(FRAMES.rglob("*.[jJ][pP][gG]"))
    return [
        float(np.asarray(model(normalise(prepare_jpeg(p.read_bytes(), spec, settings).pixels, spec)[None]))[0, 0])
        for p in frames
    ]


@pytest.mark.parametrize("input_type", ["uint8", "int8"])
def test_keras_model_becomes_full_int8_that_the_trap_runs(run_cli: RunCli, tmp_path: Path, input_type: str) -> None:
    source = small_keras(tmp_path / "small.keras")
    out = tmp_path / "out" / "small.tflite"
    done = convert(run_cli, source, out, "--input-type", input_type, "--labels", LABELS, "--cutoff", "0.5")
    assert done.returncode == 0, done.stderr
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_file(out)
    assert (card["input"]["width"], card["input"]["height"]) == (SIZE, SIZE)
    assert card["metrics"]["convert"]["float_ops"] == [], "full int8: nothing left in float"
    assert card["metrics"]["convert"]["edgetpu_ready"] is True
    check = card["metrics"]["convert"]["verification"]
    assert check["passed"] and check["frames"] == 14
    assert "float vs int8 on 14 labelled frames" in done.stderr

    classifier = TFLiteClassifier(out, threads=1)  # the trap's loader: card, sha, tensor checks
    details = classifier.interpreter.get_input_details()[0]
    assert np.dtype(details["dtype"]) == np.dtype(input_type)
    keras_model = tf.keras.models.load_model(source, compile=False)
    settings = ImagingSettings()
    frames = sorted(FRAMES.rglob("*.[jJ][pP][gG]"))
    int8 = [classifier.score(prepare_jpeg(p.read_bytes(), classifier.card.input, settings).pixels) for p in frames]
    floats = float_scores(keras_model, classifier.card.input)
    assert max(abs(a - b) for a, b in zip(int8, floats, strict=True)) < 0.03, "int8 drifted from the float model"
    assert check["max_score_difference"] < 0.03


def test_savedmodel_folder_converts(run_cli: RunCli, tmp_path: Path) -> None:
    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]) * 0.1)

        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            y = tf.nn.relu(tf.nn.conv2d(x / 255.0, self.kernel, strides=2, padding="SAME"))
            return tf.sigmoid(tf.reduce_mean(y, axis=[1, 2, 3], keepdims=False)[:, None] * 4.0 - 1.0)

    folder = tmp_path / "saved"
    module = Scorer()
    tf.saved_model.save(module, str(folder), signatures=module.__call__)
    out = tmp_path / "saved.tflite"
    done = convert(run_cli, folder, out)
    assert done.returncode == 0, done.stderr
    classifier = TFLiteClassifier(out)
    pixels = prepare_jpeg(
        (FRAMES / "speciesnet/ocelot.jpg").read_bytes(), classifier.card.input, ImagingSettings()
    ).pixels
    expected = float(module(tf.constant(pixels[None].astype(np.float32)))[0, 0])
    assert classifier.score(pixels) == pytest.approx(expected, abs=0.02)


def test_int8_losing_too_much_fails_the_run_and_sets_the_files_aside(run_cli: RunCli, tmp_path: Path) -> None:
    source = small_keras(tmp_path / "small.keras")
    out = tmp_path / "small.tflite"
    # A negative margin demands that int8 beat the float model by half a point: it cannot.
    done = convert(run_cli, source, out, "--labels", LABELS, "--max-loss", "-0.5")
    assert done.returncode == 1, done.stderr
    assert "int8 loses more than --max-loss" in done.stderr
    assert not out.exists() and not out.with_suffix(".json").exists(), "a rejected model must not be loadable"
    assert (tmp_path / "small.tflite.rejected").is_file()
    card = json.loads((tmp_path / "small.json.rejected").read_text())
    assert card["metrics"]["convert"]["verification"]["passed"] is False


def test_bad_inputs_give_clear_errors(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "out.tflite"
    not_model = tmp_path / "notes.keras"
    not_model.write_text("not a model")
    done = convert(run_cli, not_model, out)
    assert done.returncode == 2 and "Keras cannot load it" in done.stderr and str(not_model) in done.stderr

    not_pytorch = tmp_path / "model.pt2"
    not_pytorch.write_bytes(b"\x08\x01")
    done = convert(run_cli, not_pytorch, out)
    assert done.returncode == 2 and "cannot load it" in done.stderr and str(not_pytorch) in done.stderr

    unknown = tmp_path / "model.tflite"
    unknown.write_bytes(b"x")
    done = convert(run_cli, unknown, out)
    assert done.returncode == 2 and "not a model blankfilter can convert" in done.stderr

    flat = small_keras(tmp_path / "flat.keras", input_shape=(100,))
    done = convert(run_cli, flat, out)
    assert done.returncode == 2 and "input shape [None, 100]" in done.stderr

    source = small_keras(tmp_path / "small.keras")
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("convert", source, "-o", out, "--calibration", empty, "--quiet")
    assert done.returncode == 2 and "no JPEG frames" in done.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(10):
        (broken / f"{i}.jpg").write_bytes(b"")
    done = run_cli("convert", source, "-o", out, "--calibration", broken, "--quiet")
    assert done.returncode == 2 and "only 0 usable frame(s) (10 unreadable)" in done.stderr
    for result in (done,):
        assert "Traceback" not in result.stderr
    assert not out.exists(), "no output after a failed conversion"


def test_an_op_left_in_float_is_reported(run_cli: RunCli, tmp_path: Path) -> None:
    class CumSum(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            y = tf.math.cumsum(tf.reshape(x, [1, -1]), axis=1)  # TFLite has no int8 CUMSUM kernel
            return tf.sigmoid(tf.reduce_mean(y, axis=1, keepdims=True) / 1e6)

    folder = tmp_path / "cumsum"
    module = CumSum()
    tf.saved_model.save(module, str(folder), signatures=module.__call__)
    out = tmp_path / "cumsum.tflite"
    done = convert(run_cli, folder, out)
    assert done.returncode == 0, done.stderr
    assert "ops still in float: CUMSUM" in done.stderr
    convert_metrics = json.loads(out.with_suffix(".json").read_text())["metrics"]["convert"]
    assert convert_metrics["float_ops"] == ["CUMSUM"]
    assert convert_metrics["edgetpu_ready"] is False
    assert any("CUMSUM" in problem for problem in convert_metrics["edgetpu_problems"])


def test_an_op_tflite_cannot_run_is_a_clear_error(run_cli: RunCli, tmp_path: Path) -> None:
    class Svd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            s = tf.linalg.svd(x[0, :, :, 0], compute_uv=False)  # no TFLite builtin at all
            return tf.sigmoid(tf.reduce_mean(s, keepdims=True)[None] / 1e4)

    folder = tmp_path / "svd"
    module = Svd()
    tf.saved_model.save(module, str(folder), signatures=module.__call__)
    done = convert(run_cli, folder, tmp_path / "svd.tflite")
    assert done.returncode == 2, done.stderr
    assert "full-int8 conversion failed" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "svd.tflite").exists()


# -- a camera-context feature extractor (output.kind "features") ---------------------------------
def small_features_keras(path: Path) -> Path:
    """A tiny feature extractor: 64 high x 96 wide in, three stride-2 convs, a linear [1, 8, 12, 16] map out."""
    tf.keras.utils.set_random_seed(5)
    inputs = tf.keras.Input((64, 96, 3))
    x = tf.keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)
    x = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(x)
    outputs = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)
    tf.keras.Model(inputs, outputs).save(path)
    return path


def test_features_model_converts_with_crop_and_the_trap_loads_it(run_cli: RunCli, tmp_path: Path) -> None:
    from firmware_app.context.extractor import TFLiteFeatureExtractor

    out = tmp_path / "context.tflite"
    source = small_features_keras(tmp_path / "features.keras")
    done = convert(run_cli, source, out, "--output-kind", "features", "--crop", "0.1,0.1")
    assert done.returncode == 0, done.stderr
    assert "float vs int8 features on 16 frames" in done.stderr
    card = json.loads(out.with_suffix(".json").read_text())
    assert (card["input"]["width"], card["input"]["height"]) == (96, 64)
    assert card["input"]["crop"] == {"top": 0.1, "bottom": 0.1}
    assert card["output"]["kind"] == "features" and card["output"]["shape"] == [8, 12, 16]
    assert card["output"]["meaning"].startswith("stride-8 cell features")
    assert card["metrics"]["convert"]["float_ops"] == []
    check = card["metrics"]["convert"]["verification"]
    assert check["passed"] and check["frames"] == 16, "no --labels: checked on the calibration frames"
    assert 0.95 <= check["cosine_p01"] <= check["cosine_mean"] <= 1.0

    extractor = TFLiteFeatureExtractor(out, threads=1)
    assert (extractor.card.input.crop_top, extractor.card.input.crop_bottom) == (0.1, 0.1)
    pixels = prepare_jpeg((FRAMES / "speciesnet/ocelot.jpg").read_bytes(), extractor.card.input, ImagingSettings())
    features = extractor.features(pixels.pixels)
    assert features.shape == (8, 12, 16)
    assert np.allclose(np.linalg.norm(features, axis=-1), 1.0, atol=1e-4), "cells are unit length"


def test_features_check_failing_sets_the_files_aside(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "context.tflite"
    source = small_features_keras(tmp_path / "features.keras")
    done = convert(run_cli, source, out, "--output-kind", "features", "--min-cosine", "1.01")  # unreachable
    assert done.returncode == 1, done.stderr
    assert "below --min-cosine 1.01" in done.stderr
    assert not out.exists() and (tmp_path / "context.tflite.rejected").is_file()
    card = json.loads((tmp_path / "context.json.rejected").read_text())
    assert card["metrics"]["convert"]["verification"]["passed"] is False


def test_bad_crop_and_a_non_map_output_give_clear_errors(run_cli: RunCli, tmp_path: Path) -> None:
    source = small_keras(tmp_path / "small.keras")
    out = tmp_path / "out.tflite"
    for bad in ("0.5,0", "0.1", "-0.1,0.1", "top,bottom"):
        done = convert(run_cli, source, out, f"--crop={bad}")  # "=": argparse reads "-0.1,..." as an option
        assert done.returncode == 2 and "argument --crop" in done.stderr and repr(bad) in done.stderr, done.stderr
    done = convert(run_cli, source, out, "--output-kind", "features")  # a [1, 1] score, not a feature map
    assert done.returncode == 2 and "--output-kind features needs a [1, h, w, channels]" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_missing_tensorflow_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from convert.converter import ConvertError, load_float_model

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    with pytest.raises(ConvertError, match=r"pip install 'blankfilter\[convert\]'"):
        load_float_model(model)


# -- PyTorch and ONNX, through onnx2tf into the same converter ------------------------------------
def small_torch() -> object:
    torch = pytest.importorskip("torch", reason="torch is not installed (the torch extra)")
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed (the onnx extra)")

    class Scorer(torch.nn.Module):  # takes NCHW input in 0..1 (normalisation "unit")
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(8, 1)

        def forward(self, x: object) -> object:
            return torch.sigmoid(self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3))))

    torch.manual_seed(3)
    return Scorer().eval()


def torch_scores(module: object, spec: object) -> list[float]:
    import torch

    frames = sorted(FRAMES.rglob("*.[jJ][pP][gG]"))
    out = []
    for path in frames:
        pixels = prepare_jpeg(path.read_bytes(), spec, ImagingSettings()).pixels
        x = torch.from_numpy(normalise(pixels, spec)).permute(2, 0, 1)[None]
        with torch.no_grad():
            out.append(float(module(x)[0, 0]))
    return out


def trap_scores(out: Path) -> tuple[TFLiteClassifier, list[float]]:
    classifier = TFLiteClassifier(out)
    frames = sorted(FRAMES.rglob("*.[jJ][pP][gG]"))
    settings = ImagingSettings()
    return classifier, [
        classifier.score(prepare_jpeg(p.read_bytes(), classifier.card.input, settings).pixels) for p in frames
    ]


def test_pytorch_exported_program_becomes_full_int8(run_cli: RunCli, tmp_path: Path) -> None:
    import torch

    module = small_torch()
    program = torch.export.export(module, (torch.zeros(1, 3, SIZE, SIZE),))
    source = tmp_path / "scorer.pt2"
    torch.export.save(program, str(source))
    out = tmp_path / "scorer.tflite"
    done = convert(run_cli, source, out, "--normalisation", "unit")
    assert done.returncode == 0, done.stderr
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["source"]["kind"] == "pytorch" and card["metrics"]["convert"]["float_ops"] == []
    classifier, int8 = trap_scores(out)
    floats = torch_scores(module, classifier.card.input)
    assert max(abs(a - b) for a, b in zip(int8, floats, strict=True)) < 0.03, "int8 drifted from the PyTorch model"


def test_onnx_and_torchscript_files_convert(run_cli: RunCli, tmp_path: Path) -> None:
    import torch

    module = small_torch()
    example = torch.zeros(1, 3, SIZE, SIZE)
    onnx_file = tmp_path / "scorer.onnx"
    torch.onnx.export(module, (example,), str(onnx_file), input_names=["frame"], dynamo=False)
    scripted = tmp_path / "scorer.pt"
    torch.jit.save(torch.jit.trace(module, example), str(scripted))

    done = convert(run_cli, onnx_file, tmp_path / "from_onnx.tflite", "--normalisation", "unit")
    assert done.returncode == 0, done.stderr
    missing_size = convert(run_cli, scripted, tmp_path / "from_ts.tflite", "--normalisation", "unit")
    assert missing_size.returncode == 2 and "--input-size" in missing_size.stderr
    done = convert(
        run_cli, scripted, tmp_path / "from_ts.tflite", "--normalisation", "unit", "--input-size", f"{SIZE}x{SIZE}"
    )
    assert done.returncode == 0, done.stderr
    _, from_onnx = trap_scores(tmp_path / "from_onnx.tflite")
    classifier, from_ts = trap_scores(tmp_path / "from_ts.tflite")
    floats = torch_scores(module, classifier.card.input)
    for got in (from_onnx, from_ts):
        assert max(abs(a - b) for a, b in zip(got, floats, strict=True)) < 0.03


def test_missing_onnx2tf_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from convert.converter import ConvertError, load_float_model

    monkeypatch.setitem(sys.modules, "onnx2tf", None)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ConvertError, match=r"pip install 'blankfilter\[onnx\]'"):
        load_float_model(model)
