"""`blankfilter tune`: the highest cutoff that still keeps the target share of animals.

Missing an animal is far worse than keeping a blank, so the cutoff is set for a non-blank recall
(0.97 by default), not at 0.5. The trap decides bursts, so by default so does tuning (a burst is
non-blank if any frame is, and scores its highest frame). The recall bound comes from a bootstrap
over whole bursts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.metrics import AtCutoff, at_cutoff, bootstrap_recall_bound, curve, group_max, roc_auc, tune_cutoff
from convert.scoring import ScoredFrame, usable


@dataclass(frozen=True)
class TuneResult:
    level: str  # burst | frame
    target_recall: float
    cutoff: float
    recall_lower_bound: float | None  # bootstrap, one-sided, 1 - alpha
    alpha: float
    auc: float | None
    at: AtCutoff
    frames: int
    bursts: int
    unscored: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.as_dict()
        return out


def arrays(scored: list[ScoredFrame], level: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    frames = usable(scored)
    y = np.array([f.y for f in frames])
    s = np.array([f.score for f in frames], dtype=np.float64)
    groups = [f.burst for f in frames]
    if level == "burst":
        gy, gs, keys = group_max(y, s, groups)
        return gy, gs, keys
    return y, s, groups


def tune(
    scored: list[ScoredFrame],
    target_recall: float = 0.97,
    level: str = "burst",
    alpha: float = 0.05,
    rounds: int = 2000,
    seed: int = 0,
) -> TuneResult:
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall {target_recall} must be in (0, 1]")
    y, s, groups = arrays(scored, level)
    if not y.any():
        raise ValueError("no non-blank frames with a score: nothing to tune recall on")
    cutoff = tune_cutoff(y, s, target_recall)
    bound = bootstrap_recall_bound(y, s, groups, cutoff, alpha=alpha, rounds=rounds, seed=seed)
    frames = usable(scored)
    return TuneResult(
        level=level,
        target_recall=target_recall,
        cutoff=cutoff,
        recall_lower_bound=bound,
        alpha=alpha,
        auc=roc_auc(y, s),
        at=at_cutoff(y, s, cutoff),
        frames=len(frames),
        bursts=len({f.burst for f in frames}),
        unscored=len(scored) - len(frames),
    )


def write_card(card_path: Path, result: TuneResult, labels: str) -> None:
    """Put the cutoff, the target and what it was measured on into the model card."""
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["cutoff"] = result.cutoff  # exact: a rounded-up cutoff would drop the frame it was set on
    card["target_recall"] = result.target_recall
    card.setdefault("metrics", {})["tune"] = {"labels": labels, **result.as_dict()}
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    tmp.replace(card_path)


def plot(scored: list[ScoredFrame], result: TuneResult, out: Path, title: str) -> None:
    """Recall and TNR against the cutoff, and the score histograms of blanks and non-blanks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, s, _ = arrays(scored, result.level)
    lines = curve(y, s)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(lines["cutoff"], lines["recall"], label="non-blank recall (animals kept)")
    left.plot(lines["cutoff"], lines["tnr"], label="TNR (blanks discarded)")
    left.axvline(result.cutoff, color="k", linestyle="--", label=f"cutoff {result.cutoff:.3f}")
    left.axhline(result.target_recall, color="grey", linestyle=":", label=f"target recall {result.target_recall}")
    left.set_xlabel("cutoff on p(non-blank)")
    left.set_ylim(-0.02, 1.02)
    left.legend(loc="lower left", fontsize=8)
    left.set_title(f"per {result.level}")
    bins = np.linspace(0, 1, 41)
    right.hist(s[y == 0], bins=bins, alpha=0.6, label=f"blank ({int((y == 0).sum())})")
    right.hist(s[y == 1], bins=bins, alpha=0.6, label=f"non-blank ({int((y == 1).sum())})")
    right.axvline(result.cutoff, color="k", linestyle="--")
    right.set_xlabel("p(non-blank)")
    right.set_ylabel(f"{result.level}s")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report(result: TuneResult) -> str:
    at = result.at
    bound = "-" if result.recall_lower_bound is None else f"{result.recall_lower_bound:.3f}"
    auc = "-" if result.auc is None else f"{result.auc:.3f}"
    return (
        f"cutoff {result.cutoff:.4f} for non-blank recall >= {result.target_recall} per {result.level}\n"
        f"  recall {at.recall:.3f} ({at.kept_nonblank}/{at.nonblank}), {100 * (1 - result.alpha):.0f}% lower bound "
        f"{bound} (bootstrap over bursts)\n"
        f"  TNR {at.tnr if at.tnr is not None else float('nan'):.3f} ({at.discarded_blank}/{at.blank} blanks "
        f"discarded), precision {at.precision if at.precision is not None else float('nan'):.3f}, AUC {auc}\n"
        f"  {result.frames} frames in {result.bursts} bursts; {result.unscored} unreadable frame(s) left out"
    )
