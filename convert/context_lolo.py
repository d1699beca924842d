"""`blankfilter eval --context --lolo`: camera context's choices made leave one location out.

Every choice is made on the groups (the `location` column) other than the one it is reported on:

- the **score's calibration** (`noise_floor`, `firmware_app.context.score.excess_share`, or the first
  version's plain difference): for each held-out group, each candidate is tried leave one location
  out *inside* the other groups (an inner fold per group, its cutoff from the rest); animals first:
  the candidate that meets the burst recall target at every inner group with at least `MIN_BURSTS`
  animal bursts, then keeps the most of their animal frames on context alone (the veto aside: at an
  unseen camera it can be wrong), then discards the most of their blank frames with references wins
  (ties: the earlier candidate);
- the **context cutoff**, with that calibration, on the same other groups: the lowest of their
  highest safe cutoffs (burst recall held on every one of them) and of the floor that keeps the
  target share of their animal frames on context alone (`context_alone_floor`).

Rescoring needs no new replay: the judge records each compared frame's most changed cell and its
bank's level (`Assessment.peak`, `.level`), and neither the frame's state (matched, drift, vetoed)
nor the veto depends on the score. What ships is the same choice with every group in.

The classifier in the replay is the shipped one, which trained on every group: its veto and its
say under drift are flattered there. `held_out_classifier` puts in its place the classifier that
never saw the frame's group (the training recipe's out-of-fold scores, `models/train.py`), at that
group's own held-out classifier cutoff, and judges the veto again from those scores, the frame's
and its references'. Then nothing in a held-out row was chosen or learnt on its group.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from convert.context_eval import ReplayFrame, bursts_of
from convert.scoring import read_scores
from firmware_app.actions import ContextState, Verdict
from firmware_app.context import veto_fires
from firmware_app.context.score import excess_share
from firmware_app.decision import Cutoffs, frame_decision

# The calibrations tried: None is the first version's `peak - level`; a number is excess_share's noise floor.
SCORE_FORMS: tuple[float | None, ...] = (None, 0.02, 0.05, 0.1, 0.2, 0.4)
MIN_BURSTS = 10  # the recall target binds at groups with at least this many animal bursts (the issue's rule)
ON_CONTEXT_ALONE = "animal frames on context alone"  # `chosen_by` when the frame floor set the cutoff


class HeldOutScoresError(ValueError):
    """The out-of-fold scores do not cover the replayed frames."""


# The classifier cutoff a group is judged at: one for all, or each group's own held-out one.
ClassifierCutoff = float | dict[str, float]


def cutoff_of(classifier_cutoff: ClassifierCutoff, group: str) -> float:
    if isinstance(classifier_cutoff, dict):
        if group not in classifier_cutoff:
            raise HeldOutScoresError(f"no held-out classifier cutoff for group {group!r}")
        return classifier_cutoff[group]
    return classifier_cutoff


def _has_context(r: ReplayFrame) -> bool:
    """The frame was compared with references (its camera had some for its lighting mode)."""
    return r.assessment is not None and r.assessment.score is not None


def _score(r: ReplayFrame) -> float:
    assert r.assessment is not None and r.assessment.score is not None
    return r.assessment.score


def _kept(r: ReplayFrame, cutoffs: Cutoffs) -> bool:
    """The judge's own rule (decision.is_blank), at another context cutoff: what `run` would do."""
    state = r.assessment.state if r.assessment is not None else None
    score = r.assessment.score if r.assessment is not None else None
    return frame_decision(r.score, cutoffs, score, state) != Verdict.BLANK


def _in_matched_scene(r: ReplayFrame) -> bool:
    return (
        _has_context(r)
        and r.assessment is not None
        and r.assessment.state in (ContextState.MATCHED, ContextState.VETOED)
    )


# The three failures the held-out table counts and `failures` names: one definition each.
def _burst_lost(burst: list[ReplayFrame], cutoffs: Cutoffs) -> bool:
    return any(r.y for r in burst) and not any(_kept(r, cutoffs) for r in burst)


def _missed_on_context_alone(r: ReplayFrame, cutoffs: Cutoffs) -> bool:
    """An animal frame compared in a matched scene whose context score alone would discard it."""
    return bool(r.y) and _in_matched_scene(r) and _score(r) < cutoffs.context


def _blank_kept(r: ReplayFrame, cutoffs: Cutoffs) -> bool:
    """A blank frame compared with references that the judge still kept."""
    return not r.y and _has_context(r) and _kept(r, cutoffs)


def rescored(rows: list[ReplayFrame], noise_floor: float | None) -> list[ReplayFrame]:
    """The rows with their context scores as `noise_floor` would have made them. Rows without a
    recorded peak and level (made by hand) keep their score."""
    out = []
    for r in rows:
        a = r.assessment
        if a is not None and a.score is not None and a.peak is not None and a.level is not None:
            r = replace(r, assessment=replace(a, score=excess_share(a.peak, a.level, noise_floor)))
        out.append(r)
    return out


def held_out_classifier(
    rows: list[ReplayFrame], scores: dict[str, float], veto: float, margin: float
) -> list[ReplayFrame]:
    """The rows as a classifier that never saw their group judged them: `scores` (frame path -> p)
    replaces each frame's p, and the veto is judged again (`firmware_app.context.veto_fires`, the
    trap's rule) from the frame's new p and the highest new p among its references of its lighting
    mode. Drift and the context score do not depend on the classifier and stay as recorded. A frame
    the replay could not read keeps no score (it is kept, as on the trap)."""
    missing = [str(r.frame.path) for r in rows if r.score is not None and _key(str(r.frame.path)) not in scores]
    if missing:
        raise HeldOutScoresError(
            f"{len(missing)} replayed frames have no held-out score (first: {missing[0]}); the scores must come "
            "from models/train.py run on the same data (its lolo_scores.csv)"
        )
    out = []
    for r in rows:
        if r.score is None:
            out.append(r)
            continue
        p = scores[_key(str(r.frame.path))]
        a = r.assessment
        if a is not None and a.state in (ContextState.MATCHED, ContextState.VETOED):
            same_mode = [path for path, mode in zip(r.references, r.reference_modes, strict=True) if mode == a.mode]
            known = [scores[_key(path)] for path in same_mode if _key(path) in scores]
            fires = veto_fires(p, max(known) if known else None, veto, margin)
            a = replace(a, state=ContextState.VETOED if fires else ContextState.MATCHED)
        out.append(replace(r, score=p, assessment=a))
    return out


def _key(path: str) -> str:
    """Frames are matched by their resolved path: the recipe and the labels CSV may spell it differently."""
    return str(Path(path).resolve())


def read_held_out(scores_csv: Path, lolo_json: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The recipe's out-of-fold scores (`lolo_scores.csv`: path -> p) and each group's held-out
    classifier cutoff (`lolo.json`'s `held_out[group].cutoff`, chosen on the other groups). Raises
    HeldOutScoresError naming the file and what is wrong with it."""
    scores: dict[str, float] = {}
    for line, frame in enumerate(read_scores(scores_csv), start=2):  # eval --scores' reader: its format
        p = _probability(frame.score)
        if not frame.path or p is None:
            raise HeldOutScoresError(f"{scores_csv}, line {line}: needs a path and a score in 0..1")
        scores[_key(frame.path)] = p
    try:
        held_out = json.loads(lolo_json.read_text(encoding="utf-8")).get("held_out")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise HeldOutScoresError(f"{lolo_json}: not JSON of models/train.py's lolo.json ({exc})") from exc
    if not isinstance(held_out, dict) or not held_out:
        raise HeldOutScoresError(f"{lolo_json}: no held_out table (made by models/train.py)")
    cutoffs = {}
    for group, fold in held_out.items():
        cutoff = _probability(fold.get("cutoff") if isinstance(fold, dict) else None)
        if cutoff is None:
            raise HeldOutScoresError(f"{lolo_json}: held_out.{group}.cutoff is not a number in 0..1")
        cutoffs[str(group)] = cutoff
    return scores, cutoffs


def _probability(value: Any) -> float | None:
    try:
        p = float(value)
    except (TypeError, ValueError):
        return None
    return p if 0.0 <= p <= 1.0 else None  # NaN fails both


def _burst_table(rows: list[ReplayFrame], cutoffs: Cutoffs) -> dict[str, Any]:
    bursts = list(bursts_of(rows).values())
    animal = [b for b in bursts if any(r.y for r in b)]
    eligible = [b for b in animal if any(_has_context(r) for r in b)]
    blank_bursts = [b for b in bursts if not any(r.y for r in b) and any(_has_context(r) for r in b)]
    blanks = [r for r in rows if not r.y]
    with_refs = [r for r in blanks if _has_context(r)]
    animals = [r for r in rows if r.y]
    matched = [r for r in animals if _in_matched_scene(r)]
    return {
        "animal_bursts": len(animal),
        "animal_bursts_kept": len(animal) - sum(_burst_lost(b, cutoffs) for b in animal),
        "context_bursts": len(eligible),
        "context_bursts_kept": len(eligible) - sum(_burst_lost(b, cutoffs) for b in eligible),
        "animal_frames": len(animals),
        "animal_frames_kept": sum(_kept(r, cutoffs) for r in animals),
        # The veto aside: what context alone keeps of the animals it compared in a matched scene. Here the
        # classifier trained on these places, so its veto is flattered; at an unseen camera it may be wrong.
        "matched_animal_frames": len(matched),
        "matched_animal_frames_kept_on_context_alone": len(matched)
        - sum(_missed_on_context_alone(r, cutoffs) for r in matched),
        "blank_frames_with_references": len(with_refs),
        "blank_frames_with_references_discarded": len(with_refs) - sum(_blank_kept(r, cutoffs) for r in with_refs),
        "blank_frames": len(blanks),
        "blank_frames_discarded": sum(not _kept(r, cutoffs) for r in blanks),
        # What a user sees: a blank burst is gone only when every frame is; a blank frame inside an
        # animal burst is kept with it whatever its own call.
        "blank_bursts_with_references": len(blank_bursts),
        "blank_bursts_with_references_discarded": sum(all(not _kept(r, cutoffs) for r in b) for b in blank_bursts),
    }


def failures(rows: list[ReplayFrame], cutoffs: Cutoffs) -> dict[str, list[dict[str, Any]]]:
    """The held-out group's failures by name, worst first: animal bursts lost; animal frames that
    context alone would have discarded in a matched scene (kept, if at all, by the veto); blank
    frames with references that were kept. Each with what it was judged against, so the model card
    can show them (models/context_report.py)."""

    def named(r: ReplayFrame) -> dict[str, Any]:
        a = r.assessment
        return {"path": str(r.frame.path), "camera": r.camera, "burst": r.burst,
                "classifier": r.score, "context": None if a is None else a.score,
                "state": None if a is None else str(a.state), "references": list(r.references)}  # fmt: skip

    lost = [b for b in bursts_of(rows).values() if _burst_lost(b, cutoffs)]
    missed = [r for r in rows if _missed_on_context_alone(r, cutoffs)]
    kept = [r for r in rows if _blank_kept(r, cutoffs)]
    return {
        "animal_bursts_lost": [named(max(b, key=lambda r: r.score or 0.0)) for b in lost],
        "animal_frames_missed_on_context_alone": [named(r) for r in sorted(missed, key=_score)],
        "blank_frames_with_references_kept": [named(r) for r in sorted(kept, key=_score, reverse=True)],
    }


def highest_safe_cutoff(rows: list[ReplayFrame], classifier_cutoff: float, target: float) -> float | None:
    """The highest context cutoff at which at least `target` of this group's animal bursts that
    context judged are kept. None: no constraint. Burst recall only falls as the cutoff rises, so
    the candidates (2.0, over any score, then the animals' own scores, falling) are bisected."""
    eligible = [b for b in bursts_of(rows).values() if any(r.y for r in b) and any(_has_context(r) for r in b)]
    if not eligible:
        return None
    need = math.ceil(target * len(eligible) - 1e-9)
    scores = {_score(r) for b in eligible for r in b if r.y and _has_context(r)}
    candidates = [2.0, *sorted(scores, reverse=True)]  # a frame at exactly the cutoff is kept

    def holds(c: float) -> bool:
        return sum(any(_kept(r, Cutoffs(classifier_cutoff, c)) for r in b) for b in eligible) >= need

    lo, hi = 0, len(candidates)  # the first candidate that holds is in [lo, hi); hi: none does
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo]) if lo < len(candidates) else 0.0


def context_alone_floor(rows: list[ReplayFrame], target: float) -> float | None:
    """The highest context cutoff at which at least `target` of these animal frames that context
    compared in a matched scene (matched or vetoed) score at or over it: what context needs on its
    own, without the veto. None: no such frame.

    Why beside the burst rule: where the classifier is sure of every animal (the Norway tunnels, the
    Netherlands cameras), the veto keeps them all at any context cutoff, so those groups say nothing
    about the cutoff (their highest safe cutoff is 2.0) and a held-out group that they alone choose
    for gets a cutoff that discards every matched frame the veto does not save (Missouri Panama's
    spiny rat and bird in the first LOLO table). And at an unseen camera the veto itself can be
    wrong: on the hidden trail cameras two animals with p 0.79 and 0.96 were discarded by context."""
    scores = sorted(_score(r) for r in rows if r.y and _in_matched_scene(r))
    if not scores:
        return None
    return float(scores[math.floor((1.0 - target) * len(scores) + 1e-9)])


def _choose(
    safe: dict[str, float | None], floor: float | None, held_out: str | None, fallback: float
) -> tuple[float, list[str], float | None]:
    """The cutoff from every group but `held_out`: the lowest of their safe cutoffs and the frame floor
    (computed on the same groups), and who set it."""
    candidates = {g: c for g, c in safe.items() if g != held_out and c is not None}
    if floor is not None:
        candidates[ON_CONTEXT_ALONE] = floor
    if not candidates:
        return fallback, [], floor
    cutoff = min(candidates.values())
    return cutoff, sorted(g for g, c in candidates.items() if c == cutoff), floor


class _Folds:
    """The groups' rows rescored once per calibration, and each group's safe cutoff under it."""

    def __init__(
        self, groups: dict[str, list[ReplayFrame]], classifier_cutoff: ClassifierCutoff, target: float
    ) -> None:
        self.groups, self.classifier_cutoff, self.target = groups, classifier_cutoff, target
        self._rows: dict[float | None, dict[str, list[ReplayFrame]]] = {}
        self._safe: dict[float | None, dict[str, float | None]] = {}

    def cc(self, group: str) -> float:
        """The classifier cutoff `group`'s frames are judged at."""
        return cutoff_of(self.classifier_cutoff, group)

    def rows(self, form: float | None) -> dict[str, list[ReplayFrame]]:
        if form not in self._rows:
            self._rows[form] = {g: rescored(m, form) for g, m in self.groups.items()}
            self._safe[form] = {g: highest_safe_cutoff(m, self.cc(g), self.target) for g, m in self._rows[form].items()}
        return self._rows[form]

    def safe(self, form: float | None) -> dict[str, float | None]:
        self.rows(form)
        return self._safe[form]

    def cutoff(
        self, form: float | None, among: list[str], held_out: str | None, fallback: float
    ) -> tuple[float, list[str], float | None]:
        """The context cutoff chosen on the groups `among` other than `held_out`."""
        training = [r for g in among if g != held_out for r in self.rows(form)[g]]
        safe = {g: c for g, c in self.safe(form).items() if g in among}
        return _choose(safe, context_alone_floor(training, self.target), held_out, fallback)

    def choose_form(
        self, among: list[str], forms: tuple[float | None, ...], fallback: float
    ) -> tuple[float | None, dict[str, Any]]:
        """The calibration for a model trained on `among`: inner leave one location out over them."""
        trials: dict[str, Any] = {}
        best: tuple[tuple[bool, int, int], float | None] | None = None
        for form in forms:
            met, alone, discarded = True, 0, 0
            for inner in among:
                cutoff, _, _ = self.cutoff(form, among, inner, fallback)
                t = _burst_table(self.rows(form)[inner], Cutoffs(self.cc(inner), cutoff))
                if t["animal_bursts"] >= MIN_BURSTS and t["animal_bursts_kept"] < math.ceil(
                    self.target * t["animal_bursts"] - 1e-9
                ):
                    met = False
                alone += t["matched_animal_frames_kept_on_context_alone"]
                discarded += t["blank_frames_with_references_discarded"]
            trials[_form_name(form)] = {"recall_met": met, "matched_animal_frames_kept_on_context_alone": alone,
                                        "blank_frames_with_references_discarded": discarded}  # fmt: skip
            if best is None or (met, alone, discarded) > best[0]:
                best = ((met, alone, discarded), form)
        assert best is not None
        return best[1], trials


def _form_name(form: float | None) -> str:
    return "difference" if form is None else f"noise floor {form:g}"


def lolo(
    rows: list[ReplayFrame],
    classifier_cutoff: ClassifierCutoff,
    target: float,
    fallback: float,
    forms: tuple[float | None, ...] = SCORE_FORMS,
) -> dict[str, Any]:
    """Leave one location out: for each group, the calibration and then the context cutoff are chosen
    on the other groups (module docstring) and reported on the held-out group only. `shipping`: the
    same choices with every group in. `classifier_cutoff` per group: each group at its own held-out
    classifier cutoff (with `held_out_classifier`'s rows)."""
    groups: dict[str, list[ReplayFrame]] = {}
    for r in rows:
        groups.setdefault(r.frame.location or r.camera, []).append(r)
    folds_of = _Folds(groups, classifier_cutoff, target)
    names = sorted(groups)
    folds = []
    for group in names:
        training = [g for g in names if g != group]
        form, trials = folds_of.choose_form(training, forms, fallback) if training else (forms[0], {})
        cutoff, chosen_by, floor = folds_of.cutoff(form, names, group, fallback)
        held, chosen = folds_of.rows(form)[group], Cutoffs(folds_of.cc(group), cutoff)
        folds.append({"held_out": group, "classifier_cutoff": chosen.classifier, "noise_floor": form,
                      "calibration": _form_name(form),
                      "calibration_trials": trials, "context_cutoff": cutoff, "chosen_by": chosen_by,
                      "context_alone_floor": floor, **_burst_table(held, chosen),
                      "failures": failures(held, chosen)})  # fmt: skip
    pooled = {k: sum(f[k] for f in folds) for k in folds[0] if isinstance(folds[0][k], int)} if folds else {}
    form, trials = folds_of.choose_form(names, forms, fallback)
    shipping, shipping_by, shipping_floor = folds_of.cutoff(form, names, None, fallback)
    return {
        "target_burst_recall": target,
        "classifier_cutoff": classifier_cutoff,
        "calibrations_tried": [_form_name(f) for f in forms],
        "highest_safe_cutoff_per_group": folds_of.safe(form),
        "folds": folds,
        "pooled_held_out": pooled,
        "classifier_alone": _classifier_only(groups, folds_of),
        "shipping_noise_floor": form,
        "shipping_calibration": _form_name(form),
        "shipping_calibration_trials": trials,
        "shipping_cutoff": shipping,
        "shipping_chosen_by": shipping_by,
        "shipping_context_alone_floor": shipping_floor,
    }


def _classifier_only(groups: dict[str, list[ReplayFrame]], folds_of: _Folds) -> dict[str, Any]:
    tables = [_burst_table([replace(r, assessment=None) for r in m], Cutoffs(folds_of.cc(g), 0.5))
              for g, m in groups.items()]  # fmt: skip
    return {k: sum(t[k] for t in tables) for k in tables[0]} if tables else {}


def render_lolo(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cc = result["classifier_cutoff"]
    at = "each group's held-out classifier" if isinstance(cc, dict) else f"classifier cutoff {cc:.4f}"
    table = Table(
        title=f"leave one location out: calibration and context cutoff chosen on the other groups for burst "
        f"recall >= {result['target_burst_recall']:.2f}; {at}"
    )
    for column in ("held out", "calibration", "cutoff", "animal bursts kept", "of them judged by context",
                   "animal frames kept", "on context alone (matched scene)", "blank frames discarded (with references)",
                   "blank bursts discarded (with references)", "all blank frames discarded"):  # fmt: skip
        table.add_column(column, justify="left" if column == "held out" else "right")

    def row(name: str, calibration: str, cutoff: str, t: dict[str, Any]) -> None:
        def frac(a: str, b: str) -> str:
            return f"{t[a]}/{t[b]}" + (f" ({t[a] / t[b]:.3f})" if t[b] else "")

        table.add_row(name, calibration, cutoff, frac("animal_bursts_kept", "animal_bursts"),
                      frac("context_bursts_kept", "context_bursts"), frac("animal_frames_kept", "animal_frames"),
                      frac("matched_animal_frames_kept_on_context_alone", "matched_animal_frames"),
                      frac("blank_frames_with_references_discarded", "blank_frames_with_references"),
                      frac("blank_bursts_with_references_discarded", "blank_bursts_with_references"),
                      frac("blank_frames_discarded", "blank_frames"))  # fmt: skip

    for fold in result["folds"]:
        row(fold["held_out"], fold["calibration"], f"{fold['context_cutoff']:.3f}", fold)
    row("pooled (held out)", "", "", result["pooled_held_out"])
    row("classifier alone", "", "", result["classifier_alone"])
    console = Console()
    console.print(table)
    for fold in result["folds"]:
        for f in fold["failures"]["animal_bursts_lost"]:
            console.print(f"lost held out ({fold['held_out']}): burst {f['burst']}, best frame {f['path']}"
                          f" (classifier {f['classifier']}, context {f['context']}, {f['state']})")  # fmt: skip
    console.print(
        f"shipping (every group in): calibration {result['shipping_calibration']}, cutoff "
        f"{result['shipping_cutoff']:.3f}, set by {', '.join(result['shipping_chosen_by']) or 'the fallback'}"
    )
