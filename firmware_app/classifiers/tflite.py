"""TFLite models (classifier, feature extractor): ai-edge-litert, else tflite-runtime; Edge TPU on request.

Both runtimes are supported because the field stack differs: tflite-runtime 2.14 only has wheels
for Python <= 3.11 with numpy < 2, ai-edge-litert covers Python 3.10-3.13 and numpy 2.
"""

from __future__ import annotations

import importlib
import logging
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from firmware_app.classifiers.runtime_log import runtime_info_to_debug
from firmware_app.errors import ModelError
from firmware_app.hashing import sha256_file
from firmware_app.imaging import input_luts, to_tensor
from firmware_app.modelcard import CLASSIFIER_KINDS, ModelCard, load_card, output_probability

log = logging.getLogger(__name__)

RUNTIMES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
}
EDGETPU_LIBRARY = "libedgetpu.so.1"
TFLITE_IDENTIFIER = b"TFL3"
INPUT_DTYPES = (np.uint8, np.int8, np.float32)


def import_runtime(choice: str = "auto") -> tuple[str, ModuleType]:
    """The interpreter module: the one asked for, or the first that imports."""
    names = list(RUNTIMES) if choice == "auto" else [choice]
    errors = []
    for name in names:
        try:
            return name, importlib.import_module(RUNTIMES[name])
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ModelError(
        "no TFLite runtime could be imported ("
        + "; ".join(errors)
        + "). Install one: `pip install ai-edge-litert` (Python 3.10-3.13, numpy 2) or "
        "`pip install tflite-runtime 'numpy<2'` (Python <= 3.11)."
    )


def check_tflite_file(path: Path) -> None:
    """Cheap checks before the runtime sees the file: exists, readable, has the TFLite identifier."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(
            f"{path}: not a TFLite model (no 'TFL3' identifier). If it is a Keras, SavedModel, "
            "PyTorch or ONNX model, turn it into one with `blankfilter convert`."
        )


class TFLiteModel:
    """One TFLite interpreter, checked against its model card at load time.

    The base of the classifier and of the camera-context feature extractor: they differ only in
    the output they expect (`kinds`) and in how they read it.
    """

    kinds: tuple[str, ...] = CLASSIFIER_KINDS
    role = "classifier"

    def __init__(
        self,
        model_path: Path,
        threads: int = 2,
        edgetpu: bool = False,
        runtime: str = "auto",
        kernels: str = "optimised",
    ) -> None:
        check_tflite_file(model_path)
        self.card: ModelCard = load_card(model_path)
        if self.card.output_kind not in self.kinds:
            raise ModelError(
                f"{model_path}: its card says output.kind = {self.card.output_kind!r}, which is not a "
                f"{self.role} (expected {' or '.join(self.kinds)}): is this the right model file?"
            )
        digest = sha256_file(model_path)
        if digest != self.card.sha256 and not model_path.stem.endswith("_edgetpu"):
            raise ModelError(
                f"{model_path}: sha256 {digest[:12]}... does not match its card {self.card.path.name} "
                f"({self.card.sha256[:12]}...): the card describes a different model file"
            )
        name, module = import_runtime(runtime)
        self.model_path = model_path
        self.kernels = kernels
        with runtime_info_to_debug():  # the runtime's "Created ... XNNPACK delegate" line on every load
            self.interpreter, self.runtime = self._open(module, name, model_path, threads, edgetpu)
        self._check_tensors()
        self.check_output(self.run(np.zeros((self.card.input.height, self.card.input.width, 3), np.uint8)))

    def _open(self, module: ModuleType, name: str, path: Path, threads: int, edgetpu: bool) -> tuple[Any, str]:
        if edgetpu:
            opened = self._open_edgetpu(module, name, path)
            if opened is not None:
                return opened
        options: dict[str, Any] = {}
        if self.kernels == "reference":
            # The portable integer kernels: on x86-64 they give exactly the scores an arm64 Pi computes
            # (its optimised kernels do too); x86's own optimised kernels differ by a few int8 steps.
            options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_REF
        try:
            interpreter = module.Interpreter(model_path=str(path), num_threads=threads, **options)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: the TFLite runtime ({name}) cannot load it: {exc}") from None
        return interpreter, name

    def _open_edgetpu(self, module: ModuleType, name: str, path: Path) -> tuple[Any, str] | None:
        """The `_edgetpu.tflite` twin on the delegate, or None (one warning) to fall back to the CPU."""
        tpu_path = path.with_name(self.card.edgetpu_file or f"{path.stem}_edgetpu.tflite")
        if not tpu_path.is_file():
            log.warning("model.edgetpu is set but %s does not exist: running %s on the CPU", tpu_path, path.name)
            return None
        if self.card.edgetpu_sha256 and sha256_file(tpu_path) != self.card.edgetpu_sha256.lower():
            raise ModelError(
                f"{tpu_path}: sha256 does not match edgetpu.sha256 in {self.card.path.name}: "
                "the Edge TPU file was compiled from a different model"
            )
        try:
            delegate = module.load_delegate(EDGETPU_LIBRARY)
            interpreter = module.Interpreter(model_path=str(tpu_path), experimental_delegates=[delegate])
            interpreter.allocate_tensors()
        except (OSError, ValueError, RuntimeError) as exc:
            # The Coral is unplugged, libedgetpu is missing, or the runtime versions disagree.
            log.warning("Edge TPU unavailable (%s): running %s on the CPU instead", exc, path.name)
            return None
        log.info("Edge TPU delegate loaded: %s", tpu_path.name)
        return interpreter, f"{name}+edgetpu"

    def _check_tensors(self) -> None:
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        where, spec = self.model_path, self.card.input
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{where}: expected 1 input and 1 output, found {len(inputs)} and {len(outputs)}")
        shape = [int(v) for v in inputs[0]["shape"]]
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelError(f"{where}: input shape {shape}; expected [1, height, width, 3] (one RGB frame)")
        if (shape[1], shape[2]) != (spec.height, spec.width):
            raise ModelError(
                f"{where}: input is {shape[2]}x{shape[1]} but the card {self.card.path.name} says "
                f"{spec.width}x{spec.height}"
            )
        dtype = np.dtype(inputs[0]["dtype"])
        if dtype not in INPUT_DTYPES:
            raise ModelError(f"{where}: input dtype {dtype}; expected uint8, int8 or float32")
        scale, zero_point = inputs[0]["quantization"]
        if dtype != np.float32 and not scale:
            raise ModelError(f"{where}: {dtype} input without quantisation parameters")
        self._input_index = inputs[0]["index"]
        self._output = outputs[0]
        self._luts = input_luts(spec, dtype, float(scale), int(zero_point))

    def check_output(self, values: np.ndarray) -> None:
        """Refuse, at load time, an output this kind of model cannot read."""

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """One model-sized HxWx3 uint8 RGB frame -> the output tensor, dequantised (float32)."""
        tensor = to_tensor(pixels, self._luts, self.card.input.colour)
        self.interpreter.set_tensor(self._input_index, tensor)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._output["index"])
        scale, zero_point = self._output["quantization"]
        if raw.dtype != np.float32 and scale:
            return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return raw.astype(np.float32)


class TFLiteClassifier(TFLiteModel):
    """The blank/non-blank model: 1 value (p or its logit) or 2 ([blank, non-blank])."""

    def check_output(self, values: np.ndarray) -> None:
        if values.size not in (1, 2):
            raise ModelError(
                f"{self.model_path}: output has {values.size} values; expected 1 (p(non-blank)) or 2 (blank, non-blank)"
            )

    def score(self, pixels: np.ndarray) -> float:
        return self._to_probability(self.run(pixels))

    def _to_probability(self, values: np.ndarray) -> float:
        p = output_probability(values, self.card.output_kind)
        if not math.isfinite(p):
            raise ModelError(f"{self.model_path}: the model returned {p} for this frame")
        return min(max(p, 0.0), 1.0)
