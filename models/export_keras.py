"""Rebuild the trained CellNet (models/train.py) as a Keras model, so `blankfilter convert` makes
the shipped int8 TFLite from it with TensorFlow's own full-integer converter.

    python models/export_keras.py models/build/weights.npz models/build/blankfilter_cellnet.keras \
        [--check models/build/reference_scores.json]

The weights come as a NumPy .npz of the PyTorch state dict (models/train.py writes it), so this
step needs TensorFlow but not torch. Layer for layer the same arithmetic: TF 'SAME' padding (the
PyTorch side pads the same way), BatchNorm with eps 1e-3, ReLU6; the output is the highest cell
logit (its sigmoid is the frame's p(non-blank)). `--check` compares scores with the PyTorch model's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_app.imaging import ImagingSettings, normalise, prepare_jpeg  # noqa: E402
from firmware_app.modelcard import InputSpec  # noqa: E402

SIZE = 320
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]  # fmt: skip
SPEC = InputSpec(SIZE, SIZE, "RGB", "stretch", (127.5,) * 3, (127.5,) * 3)


def conv_bn(
    x: tf.Tensor, weights: dict[str, np.ndarray], prefix: str, kernel: int, stride: int,
    depthwise: bool = False, act: bool = True,
) -> tf.Tensor:  # fmt: skip
    """Conv (TF 'SAME' padding, no bias) -> BatchNorm (eps 1e-3) -> ReLU6, weights from the PyTorch names."""
    layers = tf.keras.layers
    w = weights[f"{prefix}.conv.weight"]
    if depthwise:
        conv = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False)
        conv.build(x.shape)
        conv.set_weights([w.transpose(2, 3, 0, 1)])
    else:
        conv = layers.Conv2D(w.shape[0], kernel, stride, padding="same", use_bias=False)
        conv.build(x.shape)
        conv.set_weights([w.transpose(2, 3, 1, 0)])
    x = conv(x)
    bn = layers.BatchNormalization(epsilon=1e-3)
    bn.build(x.shape)
    bn.set_weights([weights[f"{prefix}.bn.{n}"] for n in ("weight", "bias", "running_mean", "running_var")])
    x = bn(x)
    return layers.ReLU(6.0)(x) if act else x


def backbone(x: tf.Tensor, weights: dict[str, np.ndarray]) -> tf.Tensor:
    """EfficientNet-Lite0's stem and its 16 MBConv blocks: the stride-32, 320-channel map (linear, no head)."""
    x = conv_bn(x, weights, "stem", 3, 2)
    index, cin = 0, 32
    for expand, kernel, stride, cout, repeats in STAGES:
        for i in range(repeats):
            p = f"blocks.{index}"
            y = conv_bn(x, weights, f"{p}.expand", 1, 1) if expand != 1 else x
            y = conv_bn(y, weights, f"{p}.depthwise", kernel, stride if i == 0 else 1, depthwise=True)
            y = conv_bn(y, weights, f"{p}.project", 1, 1, act=False)
            x = tf.keras.layers.Add()([x, y]) if (stride if i == 0 else 1) == 1 and cin == cout else y
            cin = cout
            index += 1
    return x


def build(weights: dict[str, np.ndarray]) -> tf.keras.Model:
    layers = tf.keras.layers
    inputs = tf.keras.Input((SIZE, SIZE, 3), batch_size=1, name="frame")
    x = conv_bn(backbone(inputs, weights), weights, "head", 1, 1)
    cells = layers.Conv2D(1, 1, name="cells")
    cells.build(x.shape)
    cells.set_weights([weights["cells.weight"].transpose(2, 3, 1, 0), weights["cells.bias"]])
    # The output is the best cell's *logit* (card output.kind = "logit"; the trap applies the
    # sigmoid). A uint8 probability would crowd the low scores where the 97 %-recall cutoff sits
    # (about 0.03) onto a handful of levels; logits keep them apart.
    outputs = layers.GlobalMaxPooling2D(name="best_cell_logit")(cells(x))
    return tf.keras.Model(inputs, outputs, name="blankfilter_cellnet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="weights.npz written by models/train.py")
    parser.add_argument("out", type=Path, help=".keras file to write")
    parser.add_argument("--check", type=Path, help="reference_scores.json: {frame path: PyTorch score}")
    args = parser.parse_args()
    weights = dict(np.load(args.weights))
    model = build(weights)
    model.save(args.out)
    print(f"wrote {args.out}")
    if args.check:
        reference = json.loads(args.check.read_text())
        worst = 0.0
        for path, expected in reference.items():
            pixels = prepare_jpeg(Path(path).read_bytes(), SPEC, ImagingSettings()).pixels
            got = float(tf.sigmoid(model(normalise(pixels, SPEC)[None]))[0, 0])
            worst = max(worst, abs(got - expected))
        print(f"Keras vs PyTorch on {len(reference)} frames: max score difference {worst:.2e}")
        if worst > 1e-3:
            raise SystemExit("the Keras twin does not match the trained model")


if __name__ == "__main__":
    main()
