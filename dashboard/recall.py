"""Measured field recall: what the reviewed audit sample says about the animals in discarded bursts.

The trap keeps a random share (`store.audit_rate`) of the bursts it discards and sends each as an
`audit` message; people review them here ("blank" or "missed animal"). Per trap and camera:

- `share`: misses / reviewed, the estimated share of discarded bursts that held an animal;
- `share_upper`: its one-sided 95 % upper bound, exact binomial (Clopper–Pearson): the share p at
  which seeing this few misses (or fewer) has a 5 % chance. With 0 misses in n it is 1 - 0.05^(1/n)
  ≈ 3/n, so 59 reviews bound it under 5 %, 299 under 1 % (`reviews_needed`);
- `recall_lower`: kept / (kept + share_upper * discarded), the lowest field recall the sample allows,
  counting every kept burst as an animal (kept blanks only make true recall higher than this).

No statistics library: the monitor depends on paho-mqtt and jsonschema only, and the exact bound is
a root of one monotone function, so a short bisection on the binomial CDF (summed in logs, exact to
the last bit a float carries) gives it without pulling scipy onto a Raspberry Pi.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dashboard.contracts import CUTOFF_RANGE

CONFIDENCE = 0.95  # one-sided: the bound is exceeded with at most 5 % probability
BISECTION_STEPS = 200  # far beyond float resolution: the interval halves each step


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed term by term in logs (no overflow for large n)."""
    if k >= n or p <= 0.0:
        return 1.0
    if k < 0:
        return 0.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
    return min(1.0, total)


def upper_bound(misses: int, reviewed: int, confidence: float = CONFIDENCE) -> float | None:
    """The exact (Clopper–Pearson) one-sided upper bound on a binomial share; None with no reviews.

    binomial_cdf(misses, reviewed, p) falls as p grows; the bound is where it crosses 1 - confidence.
    """
    if reviewed <= 0:
        return None
    if not 0 <= misses <= reviewed:
        raise ValueError(f"{misses} misses in {reviewed} reviews")
    if misses == reviewed:
        return 1.0
    alpha = 1.0 - confidence
    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        if binomial_cdf(misses, reviewed, mid) > alpha:
            low = mid
        else:
            high = mid
    return high


def reviews_needed(limit: float, confidence: float = CONFIDENCE) -> int:
    """Reviews without a single miss that bound the share under `limit`: 59 for 5 %, 299 for 1 %."""
    n = math.ceil(math.log(1.0 - confidence) / math.log1p(-limit))
    while n > 1 and 1.0 - (1.0 - confidence) ** (1.0 / (n - 1)) < limit:  # float rounding of the ceil
        n -= 1
    while 1.0 - (1.0 - confidence) ** (1.0 / n) >= limit:
        n += 1
    return n


def recall_lower(kept: int | None, discarded: int | None, share_upper: float | None) -> float | None:
    """kept / (kept + share_upper * discarded): None when a count is unknown or nothing was decided."""
    if kept is None or discarded is None or share_upper is None:
        return None
    denominator = kept + share_upper * discarded
    return None if denominator <= 0 else kept / denominator


@dataclass(frozen=True)
class Proposal:
    cutoff: float | None  # None: no lower classifier cutoff would have kept the misses
    current: float | None
    lowest_missed_score: float | None
    why: str


def _round_down(value: float, digits: int) -> float:
    """`value` cut (never rounded up: a proposal must stay under the missed score) to `digits`
    significant digits; round() afterwards only drops binary noise such as 0.00108000000001."""
    if value <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.floor(value / step + 1e-9) * step, digits - math.floor(math.log10(step)))


def propose_cutoff(missed_scores: list[float | None], current: float | None, margin: float) -> Proposal:
    """A lower cutoff for a camera whose bound is too high: below its lowest missed burst's best
    score by `margin` (relative), rounded down to 3 significant digits (a cutoff near the card's 0.003
    needs them), never under the lowest the trap accepts.

    A missed burst that the classifier scored above the cutoff was set aside by camera context: no
    classifier cutoff changes that, so it does not count here (the reason says so)."""
    scores = [s for s in missed_scores if s is not None]
    if current is not None:
        scores = [s for s in scores if s < current]
    if not scores:
        return Proposal(None, current, None, "the missed bursts were not set aside by the classifier's cutoff "
                        "(camera context or no score): a lower cutoff would not keep them")  # fmt: skip
    lowest = min(scores)
    proposed = max(CUTOFF_RANGE[0], _round_down(lowest * (1.0 - margin), digits=3))
    if current is not None and proposed >= current:
        return Proposal(None, current, lowest, "the cutoff in force is already below the proposal")
    return Proposal(proposed, current, lowest, f"{margin:.0%} below the lowest missed burst's best score {lowest:.4f}")


def figure(
    discarded: int | None, audited: int | None, kept: int | None, received: int, reviewed: int, misses: int
) -> dict[str, Any]:
    """The numbers of one camera (or one day of its series)."""
    upper = upper_bound(misses, reviewed)
    share = misses / reviewed if reviewed else None
    return {
        "discarded": discarded,
        "audited": audited,
        "kept": kept,
        "received": received,
        "reviewed": reviewed,
        "misses": misses,
        "share": share,
        "share_upper": upper,
        "recall_lower": recall_lower(kept, discarded, upper),
        "recall_estimate": recall_lower(kept, discarded, share),
    }
