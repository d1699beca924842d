"""`blankfilter eval`: how a model and cutoff do, overall and per location, per frame and per
burst, with and without the trap's gamma correction."""

from __future__ import annotations

from typing import Any

from convert.metrics import at_cutoff, roc_auc
from convert.scoring import ScoredFrame, usable
from convert.tune import arrays

ALL = "(all)"


def evaluate(scored_by_gamma: dict[str, list[ScoredFrame]], cutoff: float) -> dict[str, Any]:
    """Rows of metrics for every (gamma, location, level). Locations with one class get recall or
    TNR only, and no AUC."""
    rows = []
    for gamma, scored in scored_by_gamma.items():
        frames = usable(scored)
        locations = [ALL, *sorted({f.location or "?" for f in frames})]
        for location in locations:
            subset = frames if location == ALL else [f for f in frames if (f.location or "?") == location]
            for level in ("frame", "burst"):
                y, s, _ = arrays(subset, level)
                m = at_cutoff(y, s, cutoff)
                rows.append(
                    {
                        "gamma": gamma,
                        "location": location,
                        "level": level,
                        "n": m.n,
                        "nonblank": m.nonblank,
                        "blank": m.blank,
                        "auc": roc_auc(y, s),
                        "recall": m.recall,
                        "tnr": m.tnr,
                        "precision": m.precision,
                        "kept_nonblank": m.kept_nonblank,
                        "discarded_blank": m.discarded_blank,
                    }
                )
    unscored = {gamma: len(scored) - len(usable(scored)) for gamma, scored in scored_by_gamma.items()}
    return {"cutoff": cutoff, "unscored": unscored, "rows": rows}


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=f"cutoff {result['cutoff']:.4f}")
    for column in ("gamma", "location", "level", "n", "non-blank", "blank", "AUC", "recall", "TNR", "precision"):
        table.add_column(column, justify="left" if column in ("gamma", "location", "level") else "right")
    for row in result["rows"]:
        table.add_row(
            row["gamma"], row["location"], row["level"], str(row["n"]), str(row["nonblank"]), str(row["blank"]),
            num(row["auc"]), num(row["recall"]), num(row["tnr"]), num(row["precision"]),
        )  # fmt: skip
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped into a file: do not squeeze location names
    console.print(table)
    for gamma, count in result["unscored"].items():
        if count:
            console.print(f"gamma {gamma}: {count} unreadable frame(s) left out (the trap would keep them)")
