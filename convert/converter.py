"""`blankfilter convert`: a trained float model -> a full-int8 TFLite file + its model card.

Calibration frames go through the trap's own preprocessing (`firmware_app.imaging`), so the int8
ranges are measured on exactly what the model will see in the field. The result is loaded back
with the trap's runtime and checked against the float model before the card is written.

Importers, each loaded only when used (the `convert` extra brings TensorFlow):
- Keras `.keras` / `.h5` and TensorFlow SavedModel folders: TensorFlow's TFLite converter.
- ONNX (`onnx` extra): onnx2tf turns it into a SavedModel (NCHW -> NHWC), then as above.
- PyTorch (`torch` extra): `.pt2` (torch.export), TorchScript or a pickled nn.Module -> ONNX -> as above.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from firmware_app.errors import BlankfilterError, ImageError
from firmware_app.imaging import ImagingSettings, normalise, prepare_jpeg
from firmware_app.modelcard import InputSpec

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".pt2")
# onnx2tf checks its own output on 20 sample images it would otherwise download from GitHub.
ONNX2TF_SAMPLES = "calibration_image_sample_data_20x128x128x3_float32.npy"
FRAME_SUFFIXES = (".jpg", ".jpeg")
# Ops the Edge TPU compiler maps (coral.ai/docs/edgetpu/models-intro, "Supported operations").
EDGETPU_OPS = frozenset(
    (
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "EXP",
        "FLOOR",
        "FULLY_CONNECTED",
        "HARD_SWISH",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    )
)


class ConvertError(BlankfilterError):
    """The model, the calibration frames or the conversion cannot be used; the message says which."""


@dataclass(frozen=True)
class FloatModel:
    """A loaded float model: its input size and a function from a normalised batch to raw outputs."""

    source: Path
    kind: str  # keras | savedmodel
    height: int
    width: int
    predict: Callable[[np.ndarray], np.ndarray]
    converter: Callable[[], Any]  # -> tf.lite.TFLiteConverter


def import_tensorflow() -> ModuleType:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ConvertError(
            f"TensorFlow is needed to convert Keras and SavedModel models ({exc}). Install the extra: "
            "pip install 'blankfilter[convert]' (on a workstation, never on the trap)."
        ) from None
    return tf


def load_float_model(path: Path, input_size: tuple[int, int] | None = None) -> FloatModel:
    """`input_size` (height, width) is needed only for PyTorch modules that do not carry one."""
    if not path.exists():
        raise ConvertError(f"{path}: no such file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConvertError(f"{path}: a folder, but not a TensorFlow SavedModel (no saved_model.pb)")
        return _load_savedmodel(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        return _load_keras(path)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return _load_torch(path, input_size)
    raise ConvertError(
        f"{path}: not a model blankfilter can convert (expected .keras, .h5, a SavedModel folder, .onnx, "
        ".pt2 (torch.export), or .pt/.pth (TorchScript or a pickled nn.Module))"
    )


def _input_size(shape: Any, where: Path) -> tuple[int, int]:
    dims = [None if d is None else int(d) for d in shape]
    if len(dims) != 4 or dims[3] != 3 or dims[1] is None or dims[2] is None:
        raise ConvertError(
            f"{where}: input shape {dims}; the trap feeds one RGB frame as [1, height, width, 3] "
            "(NHWC with a fixed height and width)"
        )
    return dims[1], dims[2]


def _load_keras(path: Path) -> FloatModel:
    tf = import_tensorflow()
    try:
        model = tf.keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, TypeError... all mean "not loadable"
        raise ConvertError(f"{path}: Keras cannot load it ({type(exc).__name__}: {exc})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConvertError(
            f"{path}: expected one input and one output, found {len(model.inputs)} and {len(model.outputs)}"
        )
    height, width = _input_size(model.inputs[0].shape, path)

    def converter() -> Any:
        # Keras 3 models convert through a SavedModel export; the temp folder lives as long as
        # the converter object needs it (until convert() returns).
        folder = tempfile.mkdtemp(prefix="blankfilter-keras-")
        model.export(folder, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(folder)
        conv._blankfilter_tmp = folder  # removed by convert_model
        return conv

    return FloatModel(path, "keras", height, width, lambda x: np.asarray(model(x, training=False)), converter)


def _load_savedmodel(path: Path) -> FloatModel:
    tf = import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except Exception as exc:
        raise ConvertError(f"{path}: TensorFlow cannot load this SavedModel ({type(exc).__name__}: {exc})") from None
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ConvertError(f"{path}: expected one input in serving_default, found {len(inputs)}")
    name, spec = next(iter(inputs.items()))
    height, width = _input_size(spec.shape, path)

    def predict(x: np.ndarray) -> np.ndarray:
        out = signature(**{name: tf.constant(x)})
        return np.asarray(next(iter(out.values())))

    return FloatModel(
        path, "savedmodel", height, width, predict, lambda: tf.lite.TFLiteConverter.from_saved_model(str(path))
    )


def _scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="blankfilter-convert-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _load_onnx(path: Path) -> FloatModel:
    """ONNX -> TensorFlow SavedModel (NCHW becomes NHWC) with onnx2tf, then the SavedModel path."""
    try:
        import onnx2tf
    except ImportError as exc:
        raise ConvertError(
            f"{path}: converting ONNX needs onnx2tf ({exc}). Install the extra: pip install 'blankfilter[onnx]'"
        ) from None
    work = _scratch()
    np.save(work / ONNX2TF_SAMPLES, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    previous = Path.cwd()
    os.chdir(work)  # onnx2tf looks for its sample images in the working directory
    try:
        onnx2tf.convert(
            input_onnx_file_path=str(path.resolve()), output_folder_path=str(work / "saved"), non_verbose=True
        )
    except Exception as exc:  # onnx2tf raises anything from ValueError to SystemExit-like errors
        raise ConvertError(f"{path}: onnx2tf cannot convert it ({type(exc).__name__}: {exc})") from None
    finally:
        os.chdir(previous)
    loaded = _load_savedmodel(work / "saved")
    return FloatModel(path, "onnx", loaded.height, loaded.width, loaded.predict, loaded.converter)


def _load_torch(path: Path, input_size: tuple[int, int] | None) -> FloatModel:
    """A PyTorch model, through ONNX: a torch.export program (.pt2), TorchScript, or a pickled module.

    The module takes NCHW input, normalised as the card will say; its output is p(non-blank) or a logit.
    """
    try:
        import torch
    except ImportError as exc:
        raise ConvertError(
            f"{path}: converting PyTorch needs torch ({exc}). Install: pip install torch 'blankfilter[torch]'"
        ) from None
    example, program = None, None
    try:
        if path.suffix.lower() == ".pt2":
            program = torch.export.load(str(path))
            module, example = program.module(), program.example_inputs[0][0]
        else:
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError:
                module = torch.load(
                    path, map_location="cpu", weights_only=False
                )  # executes the pickle: trusted files only
    except Exception as exc:
        raise ConvertError(f"{path}: PyTorch cannot load it ({type(exc).__name__}: {exc})") from None
    if not isinstance(module, torch.nn.Module):
        raise ConvertError(
            f"{path}: holds a {type(module).__name__}, not a model (save the nn.Module, or use torch.export)"
        )
    if example is None:
        if input_size is None:
            raise ConvertError(f"{path}: give --input-size HEIGHTxWIDTH (this file does not record its input shape)")
        example = torch.zeros(1, 3, *input_size)
    if tuple(example.shape[:2]) != (1, 3) or example.dim() != 4:
        raise ConvertError(f"{path}: input shape {list(example.shape)}; expected [1, 3, height, width] (one RGB frame)")
    onnx_path = _scratch() / f"{path.stem}.onnx"
    try:
        if program is not None:  # already traced: the dynamo exporter takes the program as it is
            torch.onnx.export(program, (example,), str(onnx_path), dynamo=True, verbose=False)
        else:
            module.eval()
            torch.onnx.export(module, (example,), str(onnx_path), input_names=["frame"], dynamo=False)
    except Exception as exc:
        raise ConvertError(f"{path}: export to ONNX failed ({type(exc).__name__}: {exc})") from None
    loaded = _load_onnx(onnx_path)
    return FloatModel(path, "pytorch", loaded.height, loaded.width, loaded.predict, loaded.converter)


def frame_files(folder: Path, limit: int) -> list[Path]:
    """Up to `limit` JPEGs of a folder, spread over it (cameras, day and night), not the first N."""
    if not folder.is_dir():
        raise ConvertError(f"--calibration {folder}: not a folder of frames")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise ConvertError(f"--calibration {folder}: no JPEG frames in it")
    return files[:: max(1, len(files) // limit)][:limit]


def calibration_frames(folder: Path, spec: InputSpec, settings: ImagingSettings, limit: int) -> list[np.ndarray]:
    """Normalised [1, H, W, 3] float32 tensors from a folder of JPEGs, via the trap's preprocessing.

    `spec` is the card's input spec, crop included: int8 ranges are measured on what the trap feeds.
    """
    tensors, bad = [], []
    for path in frame_files(folder, limit):
        try:
            prepared = prepare_jpeg(path.read_bytes(), spec, settings)
        except (OSError, ImageError) as exc:
            bad.append(f"{path.name}: {exc}")
            continue
        tensors.append(normalise(prepared.pixels, spec)[None])
    if bad:
        log.warning("%d calibration frame(s) unreadable and skipped, e.g. %s", len(bad), bad[0])
    if len(tensors) < 8:
        raise ConvertError(
            f"--calibration {folder}: only {len(tensors)} usable frame(s) ({len(bad)} unreadable); at least 8 are "
            "needed, a few hundred from the trap's cameras (day and night) are better"
        )
    return tensors


def quantise(model: FloatModel, samples: list[np.ndarray], input_type: str, progress: Any = None) -> bytes:
    tf = import_tensorflow()
    converter = model.converter()
    task = progress.add_task("calibrating", total=len(samples)) if progress else None

    def representative() -> Iterator[list[np.ndarray]]:
        for sample in samples:
            if progress:
                progress.advance(task)
            yield [sample]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8 if input_type == "uint8" else tf.int8
    converter.inference_output_type = converter.inference_input_type
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        text = str(exc).strip().splitlines()
        detail = next(
            (line for line in text if "op" in line.lower() and ("not supported" in line or "failed" in line)),
            text[-1] if text else "",
        )
        raise ConvertError(
            f"{model.source}: full-int8 conversion failed (an op with no int8 kernel?): {detail}"
        ) from None
    finally:
        tmp = getattr(converter, "_blankfilter_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _plain_interpreter(tflite_path: Path) -> Any:
    """An interpreter without the default XNNPACK delegate, so the ops listed are the model's own."""
    from firmware_app.classifiers.tflite import import_runtime

    _, runtime = import_runtime()
    resolver = getattr(runtime, "OpResolverType", None)
    kwargs = {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if resolver else {}
    interpreter = runtime.Interpreter(model_path=str(tflite_path), **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def op_report(tflite_path: Path) -> tuple[list[str], list[str]]:
    """(op names in the model, ops that compute in float) read from the converted file."""
    interpreter = _plain_interpreter(tflite_path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops, float_ops = [], []
    for op in interpreter._get_ops_details():  # the runtime's own op listing (no public API for it)
        ops.append(op["op_name"])
        dtypes = {tensors[i]["dtype"] for i in list(op["inputs"]) + list(op["outputs"]) if i in tensors}
        if np.float32 in dtypes and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE"):
            float_ops.append(op["op_name"])
    return ops, float_ops


def edgetpu_check(ops: list[str], float_ops: list[str], tflite_path: Path) -> list[str]:
    """What would keep the model (or part of it) off the Edge TPU; empty when it looks ready."""
    problems = [f"op {name} is not supported by the Edge TPU" for name in sorted(set(ops) - EDGETPU_OPS)]
    problems += [f"op {name} computes in float" for name in sorted(set(float_ops))]
    interpreter = _plain_interpreter(tflite_path)
    for detail in interpreter.get_input_details() + interpreter.get_output_details():
        if int(detail["shape"][0]) != 1:
            problems.append(f"tensor {detail['name']} has batch {detail['shape'][0]}, the Edge TPU needs 1")
        if np.dtype(detail["dtype"]) not in (np.uint8, np.int8):
            problems.append(f"tensor {detail['name']} is {np.dtype(detail['dtype'])}, the Edge TPU needs int8/uint8")
    return problems


def compile_edgetpu(tflite_path: Path) -> Path | None:
    """Run `edgetpu_compiler` when installed (x86-64 only, Google's apt repo)."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        log.info("edgetpu_compiler not on PATH: no _edgetpu.tflite made (see deploy/CORAL.md)")
        return None
    done = subprocess.run(
        [compiler, "-s", "-o", str(tflite_path.parent), str(tflite_path)], capture_output=True, text=True, check=False
    )
    out = tflite_path.with_name(f"{tflite_path.stem}_edgetpu.tflite")
    if done.returncode != 0 or not out.is_file():
        log.warning("edgetpu_compiler failed (%s): %s", done.returncode, done.stdout[-500:] + done.stderr[-500:])
        return None
    return out
