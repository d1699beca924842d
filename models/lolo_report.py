"""The classifier's leave-one-location-out tables (models/README.md) from models/train.py's lolo.json,
and a picture of each held-out group's out-of-fold scores against its cutoff.

    python models/lolo_report.py models/build/lolo.json models/build/lolo_scores.csv --plot curves.png

The same numbers come from the product's own metrics: `blankfilter eval --scores lolo_scores.csv
--cutoff C` on one group's rows (its `location`) at that group's cutoff.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path


def fraction(kept: int, total: int) -> str:
    return f"{kept}/{total} ({kept / total:.3f})" if total else "–"


def table(lolo: dict) -> str:
    lines = [
        "| held out | cutoff (chosen by) | animal bursts kept | animal frames kept | blank frames discarded | AUC |"
        " lost bursts (score) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, m in lolo["held_out"].items():
        auc = f"{m['auc']:.3f}" if m["auc"] is not None else "–"
        lost = ", ".join(f"{b.split(':', 1)[1]} ({s:.3f})" for b, s in m["lost_bursts"][:4]) or "–"
        lines.append(
            f"| {group} | {m['cutoff']:.4f} ({m['chosen_by']})"
            f" | {fraction(m['animal_bursts_kept'], m['animal_bursts'])}"
            f" | {fraction(m['animal_frames_kept'], m['animal_frames'])}"
            f" | {fraction(m['blank_frames_discarded'], m['blank_frames'])} | {auc} | {lost} |"
        )
    p = lolo["pooled_held_out"]
    lines.append(
        f"| **pooled** | | **{fraction(p['animal_bursts_kept'], p['animal_bursts'])}** | |"
        f" **{fraction(p['blank_frames_discarded'], p['blank_frames'])}** | {p['auc']:.3f} | |"
    )
    return "\n".join(lines)


def plot(lolo: dict, scores: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with scores.open() as fh:
        rows = list(csv.DictReader(fh))
    groups = list(lolo["held_out"])
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(groups) / cols), cols, figsize=(16, 3.2 * math.ceil(len(groups) / cols)))
    for ax, group in zip(axes.flat, groups, strict=False):

        def logits(label: str, g: str = group) -> list[float]:
            return [math.log(max(float(r["score"]), 1e-6) / max(1 - float(r["score"]), 1e-6))
                    for r in rows if r["location"] == g and (r["label"] == "blank") == (label == "blank")]  # fmt: skip

        bins = [x / 2 for x in range(-24, 25)]
        ax.hist(logits("animal"), bins=bins, alpha=0.6, label="animal", color="tab:green")
        ax.hist(logits("blank"), bins=bins, alpha=0.6, label="blank", color="tab:grey")
        c = lolo["held_out"][group]["cutoff"]
        ax.axvline(math.log(c / (1 - c)), color="tab:red", label="its cutoff")
        ax.set_title(group, fontsize=10)
        ax.set_xlabel("out-of-fold logit")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Held-out scores per group (each from the model that never saw it), leave one location out")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lolo", type=Path)
    parser.add_argument("scores", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    lolo = json.loads(args.lolo.read_text())
    print(table(lolo))
    if args.plot:
        plot(lolo, args.scores, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
