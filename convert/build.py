"""The `convert` command from end to end: load, calibrate, quantise, card, check, verify."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from convert.converter import (
    ConvertError,
    FloatModel,
    calibration_frames,
    compile_edgetpu,
    edgetpu_check,
    load_float_model,
    op_report,
    quantise,
)
from convert.labels import read_labels
from convert.metrics import at_cutoff, roc_auc
from convert.scoring import progress_bar
from firmware_app import __version__
from firmware_app.errors import ImageError
from firmware_app.imaging import ImagingSettings, normalise, prepare_jpeg
from firmware_app.modelcard import CARD_FORMAT, InputSpec, output_probability

log = logging.getLogger(__name__)

NORMALISATIONS: dict[
    str, tuple[float | tuple[float, ...], float | tuple[float, ...]]
] = {  # name -> (mean, std) in pixel units: real input = (pixel - mean) / std
    "raw": (0.0, 1.0),  # the model takes 0..255 itself (e.g. a Rescaling layer inside)
    "unit": (0.0, 255.0),  # 0..1
    "symmetric": (127.5, 127.5),  # -1..1 (MobileNet, EfficientNet-Lite)
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


def input_spec(model: FloatModel, args: argparse.Namespace) -> InputSpec:
    mean, std = NORMALISATIONS[args.normalisation]
    return InputSpec(model.width, model.height, "RGB", args.resize, _triple(mean), _triple(std))


def _triple(value: float | tuple[float, ...]) -> tuple[float, float, float]:
    a, b, c = value if isinstance(value, tuple) else (value, value, value)
    return float(a), float(b), float(c)


def card_dict(args: argparse.Namespace, spec: InputSpec, out: Path, data: bytes, model: FloatModel) -> dict[str, Any]:
    return {
        "format": CARD_FORMAT,
        "name": args.name or out.stem,
        "version": args.version,
        "description": args.description or f"converted from {model.source.name} by blankfilter {__version__}",
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": {
            "width": spec.width,
            "height": spec.height,
            "colour": spec.colour,
            "resize": spec.resize,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "gamma": args.gamma,
        },
        "output": {
            "kind": args.output_kind,
            "meaning": "logit of p(non-blank)" if args.output_kind == "logit" else "p(non-blank)",
        },
        "cutoff": args.cutoff,
        "target_recall": args.target_recall,
        "metrics": {},
        "source": {"file": model.source.name, "kind": model.kind, "input_type": args.input_type},
    }


def verify(
    model: FloatModel, classifier: Any, spec: InputSpec, settings: ImagingSettings, args: argparse.Namespace
) -> dict[str, Any]:
    """Float and int8 scores of the same preprocessed frames, and what int8 costs."""
    frames = read_labels(args.labels)
    y, float_scores, int8_scores = [], [], []
    with progress_bar("verifying", not args.quiet) as bar:
        task = bar.add_task("verifying", total=len(frames))
        for frame in frames:
            bar.advance(task)
            try:
                prepared = prepare_jpeg(frame.path.read_bytes(), spec, settings)
            except (OSError, ImageError):
                continue
            raw = model.predict(normalise(prepared.pixels, spec)[None])
            float_scores.append(output_probability(raw, args.output_kind))
            int8_scores.append(classifier.score(prepared.pixels))
            y.append(int(frame.nonblank))
    if not y:
        raise ConvertError(f"--labels {args.labels}: none of its frames could be read")
    result: dict[str, Any] = {"labels": str(args.labels), "frames": len(y), "cutoff": args.cutoff}
    for name, scores in (("float", float_scores), ("int8", int8_scores)):
        m = at_cutoff(y, scores, args.cutoff)
        result[name] = {"auc": roc_auc(y, scores), "recall": m.recall, "tnr": m.tnr, "precision": m.precision}
    result["max_score_difference"] = float(np.max(np.abs(np.subtract(float_scores, int8_scores))))
    loss = []
    for metric in ("recall", "auc"):
        a, b = result["float"][metric], result["int8"][metric]
        if a is not None and b is not None and a - b > args.max_loss:
            loss.append(f"{metric} {a:.3f} -> {b:.3f}")
    result["passed"] = not loss
    result["loss"] = loss
    return result


def run(args: argparse.Namespace) -> int:
    from firmware_app.classifiers.tflite import TFLiteClassifier

    model = load_float_model(args.model_in, args.input_size)
    spec = input_spec(model, args)
    settings = ImagingSettings(gamma=args.gamma)
    out: Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = calibration_frames(args.calibration, spec, settings, args.calibration_count)
    with progress_bar("calibrating", not args.quiet) as bar:
        data = quantise(model, samples, args.input_type, bar)
    out.write_bytes(data)
    card = card_dict(args, spec, out, data, model)
    card_path = out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    classifier = TFLiteClassifier(out, threads=args.threads)  # the trap's own loader checks the result
    ops, float_ops = op_report(out)
    problems = edgetpu_check(ops, float_ops, out)
    card["metrics"]["convert"] = {
        "calibration": {"folder": str(args.calibration), "frames": len(samples)},
        "ops": sorted(set(ops)),
        "float_ops": sorted(set(float_ops)),
        "edgetpu_ready": not problems,
        "edgetpu_problems": problems,
    }
    print(f"{out}: {len(data) / 1e6:.2f} MB, {args.input_type} input, {len(ops)} ops", file=sys.stderr)
    if float_ops:
        print(f"  ops still in float: {', '.join(sorted(set(float_ops)))}", file=sys.stderr)
    print("  Edge TPU: " + ("ready" if not problems else "; ".join(problems)), file=sys.stderr)
    tpu = compile_edgetpu(out) if not problems else None
    if tpu is not None:
        card["edgetpu"] = {"file": tpu.name, "sha256": hashlib.sha256(tpu.read_bytes()).hexdigest()}
    status = 0
    if args.labels:
        check = verify(model, classifier, spec, settings, args)
        card["metrics"]["convert"]["verification"] = check
        f, q = check["float"], check["int8"]
        print(
            f"  float vs int8 on {check['frames']} labelled frames at cutoff {args.cutoff}: "
            f"AUC {_n(f['auc'])} / {_n(q['auc'])}, recall {_n(f['recall'])} / {_n(q['recall'])}, "
            f"TNR {_n(f['tnr'])} / {_n(q['tnr'])}, max score difference {check['max_score_difference']:.4f}",
            file=sys.stderr,
        )
        if not check["passed"]:
            print(
                f"blankfilter: error: int8 loses more than --max-loss {args.max_loss}: {'; '.join(check['loss'])}",
                file=sys.stderr,
            )
            status = 1
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if status:
        for path in (out, card_path):
            path.rename(path.with_name(path.name + ".rejected"))
        print(f"  kept for inspection as {out.name}.rejected (not loadable as a model)", file=sys.stderr)
    return status


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
