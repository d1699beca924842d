"""The `convert` command from end to end: load, calibrate, quantise, card, check, verify.

Two kinds of model come out of it: a classifier (`--output-kind probability|logit`, verified on a
labelled CSV by AUC and recall) and a camera-context feature extractor (`--output-kind features`,
verified by how closely its int8 cells point the same way as the float ones: no labels needed).
"""

from __future__ import annotations

import argparse
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
    frame_files,
    load_float_model,
    op_report,
    quantise,
)
from convert.labels import read_labels
from convert.metrics import at_cutoff, roc_auc
from convert.scoring import progress_bar
from firmware_app import __version__
from firmware_app.errors import ImageError
from firmware_app.hashing import sha256_bytes, sha256_file
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
    top, bottom = args.crop
    return InputSpec(model.width, model.height, "RGB", args.resize, _triple(mean), _triple(std), top, bottom)


def _triple(value: float | tuple[float, ...]) -> tuple[float, float, float]:
    a, b, c = value if isinstance(value, tuple) else (value, value, value)
    return float(a), float(b), float(c)


def output_shape(model: FloatModel, sample: np.ndarray, kind: str) -> tuple[int, ...]:
    """The float model's output shape, checked before the (slow) quantisation for a features model."""
    shape = tuple(int(v) for v in np.shape(model.predict(sample)))
    if kind == "features" and (len(shape) != 4 or shape[0] != 1 or min(shape) < 1):
        raise ConvertError(
            f"{model.source}: output shape {list(shape)}; --output-kind features needs a [1, h, w, channels] "
            "feature map (the trap compares it cell by cell)"
        )
    return shape


def output_card(kind: str, spec: InputSpec, shape: tuple[int, ...]) -> dict[str, Any]:
    if kind == "features":
        height, width, channels = shape[1:]
        return {
            "kind": "features",
            "meaning": f"stride-{spec.height // height} cell features for camera-context comparison",
            "shape": [height, width, channels],
        }
    return {"kind": kind, "meaning": "logit of p(non-blank)" if kind == "logit" else "p(non-blank)"}


def input_card(spec: InputSpec, gamma: str) -> dict[str, Any]:
    card: dict[str, Any] = {
        "width": spec.width,
        "height": spec.height,
        "colour": spec.colour,
        "resize": spec.resize,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "gamma": gamma,
    }
    if spec.crop_top or spec.crop_bottom:  # absent means no crop: older traps' cards stay as they were
        card["crop"] = {"top": spec.crop_top, "bottom": spec.crop_bottom}
    return card


def card_dict(
    args: argparse.Namespace, spec: InputSpec, out: Path, data: bytes, model: FloatModel, shape: tuple[int, ...]
) -> dict[str, Any]:
    return {
        "format": CARD_FORMAT,
        "name": args.name or out.stem,
        "version": args.version,
        "description": args.description or f"converted from {model.source.name} by blankfilter {__version__}",
        "file": out.name,
        "sha256": sha256_bytes(data),
        "input": input_card(spec, args.gamma),
        "output": output_card(args.output_kind, spec, shape),
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


def cell_cosines(float_map: np.ndarray, int8_map: np.ndarray) -> np.ndarray:
    """Cosine similarity of each cell's float and int8 feature vectors ([h, w, c] maps -> h*w values)."""
    a = float_map.reshape(-1, float_map.shape[-1]).astype(np.float64)
    b = int8_map.reshape(-1, int8_map.shape[-1]).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)
    # Two empty cells agree (both say "nothing here"); one empty and one not do not (cos stays 0).
    return np.where((na < 1e-6) & (nb < 1e-6), 1.0, cos)


def feature_frames(args: argparse.Namespace) -> tuple[list[Path], str]:
    """Frames for the float-vs-int8 feature check: the labelled CSV's when given, else calibration frames."""
    if args.labels:
        paths = [frame.path for frame in read_labels(args.labels)]
        return paths[:: max(1, len(paths) // args.verify_count)][: args.verify_count], str(args.labels)
    return frame_files(args.calibration, args.verify_count), str(args.calibration)


def verify_features(
    model: FloatModel, extractor: Any, spec: InputSpec, settings: ImagingSettings, args: argparse.Namespace
) -> dict[str, Any]:
    """Float and int8 feature maps of the same preprocessed frames: do the cells still point the same way?"""
    files, source = feature_frames(args)
    cosines = []
    with progress_bar("verifying", not args.quiet) as bar:
        task = bar.add_task("verifying", total=len(files))
        for path in files:
            bar.advance(task)
            try:
                prepared = prepare_jpeg(path.read_bytes(), spec, settings)
            except (OSError, ImageError):
                continue
            float_map = np.asarray(model.predict(normalise(prepared.pixels, spec)[None]))[0]
            cosines.append(cell_cosines(float_map, extractor.run(prepared.pixels)[0]))
    if not cosines:
        raise ConvertError(f"{source}: none of its frames could be read for the float vs int8 check")
    cells = np.concatenate(cosines)
    mean = float(np.mean(cells))
    return {
        "source": source,
        "frames": len(cosines),
        "cosine_mean": mean,
        "cosine_p01": float(np.percentile(cells, 1)),
        "min_cosine": args.min_cosine,
        "passed": mean >= args.min_cosine,
    }


def load_converted(out: Path, args: argparse.Namespace) -> Any:
    """The converted file through the trap's own loader (card, sha256, tensor and output checks)."""
    if args.output_kind == "features":
        from firmware_app.context.extractor import TFLiteFeatureExtractor

        return TFLiteFeatureExtractor(out, threads=args.threads)
    from firmware_app.classifiers.tflite import TFLiteClassifier

    return TFLiteClassifier(out, threads=args.threads)


def report_classifier_check(check: dict[str, Any], args: argparse.Namespace) -> int:
    f, q = check["float"], check["int8"]
    print(
        f"  float vs int8 on {check['frames']} labelled frames at cutoff {args.cutoff}: "
        f"AUC {_n(f['auc'])} / {_n(q['auc'])}, recall {_n(f['recall'])} / {_n(q['recall'])}, "
        f"TNR {_n(f['tnr'])} / {_n(q['tnr'])}, max score difference {check['max_score_difference']:.4f}",
        file=sys.stderr,
    )
    if check["passed"]:
        return 0
    print(
        f"blankfilter: error: int8 loses more than --max-loss {args.max_loss}: {'; '.join(check['loss'])}",
        file=sys.stderr,
    )
    return 1


def report_features_check(check: dict[str, Any], args: argparse.Namespace) -> int:
    print(
        f"  float vs int8 features on {check['frames']} frames: cell cosine mean {check['cosine_mean']:.4f}, "
        f"1st percentile {check['cosine_p01']:.4f}",
        file=sys.stderr,
    )
    if check["passed"]:
        return 0
    print(
        f"blankfilter: error: int8 features drift from the float ones: mean cosine {check['cosine_mean']:.4f} "
        f"is below --min-cosine {args.min_cosine}",
        file=sys.stderr,
    )
    return 1


def report_ops(out: Path, size: int, input_type: str, metrics: dict[str, Any]) -> list[str]:
    """Print and record the op report; returns what keeps the model off the Edge TPU."""
    ops, float_ops = op_report(out)
    problems = edgetpu_check(ops, float_ops, out)
    metrics.update(
        ops=sorted(set(ops)), float_ops=sorted(set(float_ops)), edgetpu_ready=not problems, edgetpu_problems=problems
    )
    print(f"{out}: {size / 1e6:.2f} MB, {input_type} input, {len(ops)} ops", file=sys.stderr)
    if float_ops:
        print(f"  ops still in float: {', '.join(sorted(set(float_ops)))}", file=sys.stderr)
    print("  Edge TPU: " + ("ready" if not problems else "; ".join(problems)), file=sys.stderr)
    return problems


def run(args: argparse.Namespace) -> int:
    model = load_float_model(args.model_in, args.input_size)
    spec = input_spec(model, args)
    settings = ImagingSettings(gamma=args.gamma)
    out: Path = args.output
    samples = calibration_frames(args.calibration, spec, settings, args.calibration_count)
    shape = output_shape(model, samples[0], args.output_kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar("calibrating", not args.quiet) as bar:
        data = quantise(model, samples, args.input_type, bar)
    out.write_bytes(data)
    card = card_dict(args, spec, out, data, model, shape)
    card_path = out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    loaded = load_converted(out, args)
    card["metrics"]["convert"] = {"calibration": {"folder": str(args.calibration), "frames": len(samples)}}
    problems = report_ops(out, len(data), args.input_type, card["metrics"]["convert"])
    tpu = compile_edgetpu(out) if not problems else None
    if tpu is not None:
        card["edgetpu"] = {"file": tpu.name, "sha256": sha256_file(tpu)}
    status = 0
    if args.output_kind == "features":  # needs no labels: always checked
        check = verify_features(model, loaded, spec, settings, args)
        card["metrics"]["convert"]["verification"] = check
        status = report_features_check(check, args)
    elif args.labels:
        check = verify(model, loaded, spec, settings, args)
        card["metrics"]["convert"]["verification"] = check
        status = report_classifier_check(check, args)
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if status:
        for path in (out, card_path):
            path.rename(path.with_name(path.name + ".rejected"))
        print(f"  kept for inspection as {out.name}.rejected (not loadable as a model)", file=sys.stderr)
    return status


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
