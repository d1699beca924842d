"""Put the leave-one-location-out cutoff into the shipped model's card, moved down by what int8 on the
Pi's kernels can cost near it.

    python models/ship_cutoff.py --lolo models/build/lolo.json --float models/build/final_scores.csv \
        --model models/blankfilter-cellnet-320.tflite

- `lolo.json` (models/train.py): the shipping cutoff, the lowest of the groups' safe cutoffs, measured
  on out-of-fold float scores.
- `final_scores.csv`: the shipped network's float scores of every frame. The frames whose float logit
  lies within 2 of the cutoff's (the ones the cutoff decides) are scored again by the shipped .tflite
  as the trap scores them, on the runtime's reference kernels (exactly an arm64 Pi's scores).
- The margin: the largest amount (in logits) by which int8 scores one of them lower than float. The
  card's cutoff is the LOLO cutoff lowered by that margin, so a frame float keeps, the Pi keeps too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # convert/ and firmware_app/ of this checkout


def logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def read(path: Path) -> dict[str, tuple[int, float]]:
    """Scores in `blankfilter eval --save-scores`'s format: path -> (non-blank, score)."""
    from convert.scoring import read_scores

    return {f.path: (f.y, f.score) for f in read_scores(path) if f.score is not None}


def near_cutoff(float_scores: dict[str, tuple[int, float]], cutoff: float) -> list[str]:
    return [p for p, (_, s) in float_scores.items() if abs(logit(s) - logit(cutoff)) <= 2]


def int8_scores(model: Path, paths: list[str], labels: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
    """The shipped .tflite's scores, decoded and preprocessed as the trap does, on the reference kernels."""
    from firmware_app.classifiers import load_classifier
    from firmware_app.imaging import ImagingSettings, prepare_jpeg

    classifier = load_classifier(model, 2, kernels="reference")
    out = {}
    for p in paths:
        pixels = prepare_jpeg(Path(p).read_bytes(), classifier.card.input, ImagingSettings()).pixels
        out[p] = (labels[p][0], classifier.score(pixels))
    return out


def margin(float_scores: dict[str, tuple[int, float]], int8: dict[str, tuple[int, float]], cutoff: float) -> dict:
    near = [p for p in near_cutoff(float_scores, cutoff) if p in int8]
    drops = [logit(float_scores[p][1]) - logit(int8[p][1]) for p in near]
    return {"frames_near_cutoff": len(near), "largest_drop_logit": max([0.0, *drops]),
            "mean_abs_difference_logit": sum(map(abs, drops)) / len(drops) if drops else None}  # fmt: skip


def recall_tnr(scores: dict[str, tuple[int, float]], cutoff: float) -> dict[str, object]:
    pos = [s for y, s in scores.values() if y]
    neg = [s for y, s in scores.values() if not y]
    kept, dropped = sum(s >= cutoff for s in pos), sum(s < cutoff for s in neg)
    return {"animal_frames_kept": f"{kept}/{len(pos)}", "recall": kept / len(pos),
            "blank_frames_discarded": f"{dropped}/{len(neg)}", "tnr": dropped / len(neg)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lolo", type=Path, required=True)
    parser.add_argument("--float", type=Path, required=True, dest="float_scores")
    parser.add_argument("--model", type=Path, required=True, help="the shipped .tflite (its card is updated)")
    args = parser.parse_args()
    lolo = json.loads(args.lolo.read_text())
    float_scores = read(args.float_scores)
    chosen = float(lolo["shipping_cutoff"])
    int8 = int8_scores(args.model, near_cutoff(float_scores, chosen), float_scores)
    gap = margin(float_scores, int8, chosen)
    cutoff = sigmoid(logit(chosen) - gap["largest_drop_logit"])
    card_path = args.model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["cutoff"], card["target_recall"] = cutoff, lolo["target_burst_recall"]
    card["metrics"].pop("tune", None)
    card["metrics"]["lolo"] = {k: lolo[k] for k in ("target_burst_recall", "safe_cutoff_per_group", "shipping_cutoff",
                                                    "shipping_cutoff_chosen_by", "pooled_held_out")}  # fmt: skip
    card["metrics"]["int8_margin"] = gap | {
        "lolo_cutoff": chosen, "card_cutoff": cutoff, "kernels": "reference (as on an arm64 Pi)",
        "in_sample_float_at_lolo_cutoff": recall_tnr(float_scores, chosen),
    }  # fmt: skip
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"cutoff {cutoff:.5f} (LOLO {chosen:.5f}, int8 margin {gap['largest_drop_logit']:.3f} logit over "
          f"{gap['frames_near_cutoff']} frames near it) written into {card_path}")  # fmt: skip


if __name__ == "__main__":
    main()
