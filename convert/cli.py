"""The workstation commands: `tune`, `eval` (and `python -m convert`).

They join the `blankfilter` command through the `blankfilter.commands` entry point, so the trap's
code never imports this package. Registration imports nothing heavy: TensorFlow, matplotlib and
the model runtime load inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_USAGE = 0, 2
PLOT_EXTRA = "pip install 'blankfilter[convert]' (or just matplotlib: pip install matplotlib)"


def usage_error(message: str) -> NoReturn:
    """A mistake on the command line: `blankfilter: error: ...` and exit 2, as argparse's own."""
    from firmware_app.errors import BlankfilterError

    raise BlankfilterError(message)


def need_scores_or_labels(args: argparse.Namespace) -> None:
    """Checked before any model is loaded or frame scored."""
    if not args.scores and not args.labels:
        usage_error(f"{args.command} needs --labels CSV (to score with the model) or --scores CSV")


def check_plot(args: argparse.Namespace) -> None:
    """--plot needs matplotlib (the convert extra): say so before tuning, not in a traceback after it."""
    if not args.plot:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        usage_error(f"--plot needs matplotlib, which is not installed: {PLOT_EXTRA}")


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 320x320") from None
    return height, width


def _crop(text: str) -> tuple[float, float]:
    """`--crop TOP,BOTTOM`: shares of the frame height cut off (the cameras' info bars), each 0 <= v < 0.5."""
    try:
        top, bottom = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected TOP,BOTTOM fractions of the height, e.g. 0.07,0.07"
        ) from None
    if not all(0.0 <= v < 0.5 for v in (top, bottom)):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: TOP and BOTTOM must each be at least 0 and below 0.5")
    return top, bottom


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="model .tflite with its card; default: the shipped model")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    parser.add_argument(
        "--kernels",
        choices=("optimised", "reference"),
        default="optimised",
        help="reference: the runtime's portable integer kernels, which score exactly as a Raspberry Pi "
        "(arm64) does; this machine's optimised kernels may differ by a few int8 steps (slower)",
    )
    parser.add_argument("--labels", type=Path, help="Labels CSV: path,label[,location,sequence]")
    parser.add_argument("--scores", type=Path, help="read scores from this CSV instead of running the model")
    parser.add_argument("--save-scores", type=Path, help="write the scores to this CSV")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    convert = sub.add_parser(
        "convert", help="turn a Keras, SavedModel, ONNX or PyTorch model into a full-int8 TFLite + model card"
    )
    convert.add_argument(
        "model_in", type=Path, metavar="MODEL",
        help=".keras, .h5, a SavedModel folder, .onnx, or PyTorch .pt2 (torch.export) / .pt (TorchScript, nn.Module)",
    )  # fmt: skip
    convert.add_argument("--input-size", type=_size, help="HEIGHTxWIDTH, for PyTorch files that do not record it")
    convert.add_argument("-o", "--output", type=Path, required=True, help="the .tflite to write (card beside it)")
    convert.add_argument("--calibration", type=Path, required=True, help="folder of frames from the traps (JPEG)")
    convert.add_argument("--calibration-count", type=int, default=300, help="frames used to calibrate (default 300)")
    convert.add_argument("--input-type", choices=("uint8", "int8"), default="uint8")
    convert.add_argument(
        "--normalisation", choices=("raw", "unit", "symmetric", "imagenet"), default="raw",
        help="what the model expects: raw 0..255 (default), unit 0..1, symmetric -1..1, imagenet mean/std",
    )  # fmt: skip
    convert.add_argument("--resize", choices=("stretch", "letterbox"), default="stretch")
    convert.add_argument(
        "--output-kind", choices=("probability", "logit", "features"), default="probability",
        help="what the output is: p(non-blank), its logit, or a [1, h, w, c] feature map (camera context)",
    )  # fmt: skip
    convert.add_argument(
        "--crop", type=_crop, default=(0.0, 0.0), metavar="TOP,BOTTOM",
        help="shares of the frame height cut off before the resize (info bars), e.g. 0.07,0.07 (default 0,0)",
    )  # fmt: skip
    convert.add_argument("--gamma", choices=("auto", "off"), default="auto", help="the trap's gamma correction")
    convert.add_argument("--name", help="model name for the card (default: the output's stem)")
    convert.add_argument("--version", default="0.1.0")
    convert.add_argument("--description")
    convert.add_argument("--labels", type=Path, help="Labels CSV to check float against int8")
    convert.add_argument("--cutoff", type=float, default=0.5, help="cutoff for the card and the check (tune it later)")
    convert.add_argument("--target-recall", type=float, default=0.97)
    convert.add_argument("--max-loss", type=float, default=0.01, help="largest recall/AUC loss int8 may cost")
    convert.add_argument(
        "--min-cosine", type=float, default=0.95,
        help="features: the lowest mean float-vs-int8 cosine similarity of the cells (default 0.95)",
    )  # fmt: skip
    convert.add_argument(
        "--verify-count", type=int, default=100, help="features: frames compared float vs int8 (default 100)"
    )
    convert.add_argument("--threads", type=int, default=2)
    convert.add_argument("--quiet", action="store_true", help="no progress bars")
    convert.set_defaults(func=cmd_convert)

    tune = sub.add_parser(
        "tune",
        help="pick the cutoff for a target non-blank recall; with --model PATH, write it into that model's card",
        description="Pick the cutoff for a target non-blank recall and print it, from labelled frames "
        "(--labels CSV, scored with the model) or saved scores (--scores CSV). It is written into a model "
        "card only with an explicit --model PATH (never into the shipped card implicitly); it then says "
        "what changed (old cutoff -> new cutoff, the file). Exit 2 on a usage error (no --labels or "
        "--scores, a bad labels file, --plot without matplotlib).",
    )
    _model_args(tune)
    tune.add_argument("--target-recall", type=float, default=0.97, help="non-blank recall to keep (default 0.97)")
    tune.add_argument("--level", choices=("burst", "frame"), default="burst", help="decide per burst (as the trap)")
    tune.add_argument("--alpha", type=float, default=0.05, help="one-sided level of the recall bound (default 0.05)")
    tune.add_argument(
        "--plot", type=Path, help="save the recall/TNR curves and score histograms as PNG (needs matplotlib)"
    )
    tune.add_argument("--no-write", action="store_true", help="do not write the cutoff, even with --model")
    tune.add_argument("--json", action="store_true", help="print the result as JSON")
    tune.set_defaults(func=cmd_tune)

    evaluate = sub.add_parser(
        "eval",
        help="metrics overall and per location, per frame and burst, gamma on/off",
        description="Score labelled frames (--labels CSV) with the model, or read saved scores (--scores "
        "CSV, with --cutoff), and print recall, TNR and AUC overall and per location, per frame and per "
        "burst, with the trap's gamma correction on and off. --context replays the frames per camera in "
        "time order through the camera-context path and compares it with the classifier alone. Exit 2 on "
        "a usage error (no --labels or --scores, a bad labels file).",
    )
    _model_args(evaluate)
    evaluate.add_argument("--cutoff", type=float, help="default: the model card's cutoff")
    evaluate.add_argument("--json", type=Path, dest="json_out", help="also write the results as JSON here")
    ctx = evaluate.add_argument_group("camera context (--context): replay per camera in time order")
    ctx.add_argument("--context", action="store_true", help="replay through the camera-context path vs the classifier")
    ctx.add_argument("--extractor", type=Path, help="feature model .tflite (default: the shipped one)")
    ctx.add_argument("--seed-blanks", type=int, default=3, help="known blanks per camera and mode to seed (default 3)")
    ctx.add_argument("--decisions", type=Path, metavar="CSV", help="write each frame's decision and context state here")
    ctx.add_argument(
        "--deployment",
        action="store_true",
        help="deployment mode: each burst with a fresh bank of --seed-blanks known blanks per lighting "
        "mode of its camera, from other bursts at least --min-gap-h away; no top-up",
    )
    ctx.add_argument(
        "--min-gap-h",
        type=float,
        default=2.0,
        help="deployment mode: references this far in time from the burst, when capture times are known (default 2)",
    )
    ctx.add_argument(
        "--lolo",
        action="store_true",
        help="leave one location out: the context cutoff chosen on the other `location` groups for "
        "--target-recall of their animal bursts, reported on the held-out group (exact with --deployment)",
    )
    ctx.add_argument("--target-recall", type=float, default=0.97, help="--lolo: burst recall to hold (default 0.97)")
    ctx.add_argument(
        "--held-out-scores",
        type=Path,
        metavar="CSV",
        help="--deployment --lolo: each frame's p from the classifier that never saw its group (models/train.py's "
        "lolo_scores.csv), in place of the model's, with the veto judged again from them; needs --held-out-cutoffs",
    )
    ctx.add_argument(
        "--held-out-cutoffs",
        type=Path,
        metavar="JSON",
        help="--deployment --lolo: each group's held-out classifier cutoff (models/train.py's lolo.json), "
        "with --held-out-scores",
    )
    ctx.add_argument(
        "--references",
        type=Path,
        metavar="CSV",
        help="known-empty frames per camera (a Labels CSV, not replayed) instead of --seed-blanks",
    )
    ctx.add_argument("--context-cutoff", type=float, help="default: the extractor card's cutoff")
    ctx.add_argument(
        "--veto", type=float, help="classifier p at or over which it decides where trusted (default: config's)"
    )
    ctx.add_argument("--drift-limit", type=float, help="median cell distance taken as drift (default: config's)")
    evaluate.set_defaults(func=cmd_eval)


def _classifier(args: argparse.Namespace) -> Any:
    from firmware_app.classifiers import load_classifier

    return load_classifier(args.model, threads=args.threads, kernels=args.kernels)


def _scored(args: argparse.Namespace, gamma: str = "auto", classifier: Any = None) -> list[Any]:
    from convert.labels import read_labels
    from convert.scoring import read_scores, score_frames, write_scores
    from firmware_app.imaging import ImagingSettings

    if args.scores:
        return read_scores(args.scores)
    need_scores_or_labels(args)
    frames = read_labels(args.labels)
    model = classifier or _classifier(args)
    scored = score_frames(frames, model, ImagingSettings(gamma=gamma), show_progress=not args.quiet)
    if args.save_scores:
        name = args.save_scores if gamma == "auto" else args.save_scores.with_stem(f"{args.save_scores.stem}-gamma-off")
        write_scores(scored, name)
    return scored


def cmd_convert(args: argparse.Namespace) -> int:
    from convert.build import run

    return run(args)


def cmd_tune(args: argparse.Namespace) -> int:
    from convert.tune import plot, report, tune

    need_scores_or_labels(args)
    check_plot(args)
    scored = _scored(args)
    try:
        result = tune(scored, args.target_recall, args.level, args.alpha)
    except ValueError as exc:
        print(f"blankfilter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result.as_dict(), indent=2) if args.json else report(result))
    written = EXIT_OK if args.no_write else write_tuned(args, result)
    if args.plot:  # after the card: a plot that fails must not cost the tuned cutoff
        plot(scored, result, args.plot, title=str(args.labels or args.scores))
    return written


def write_tuned(args: argparse.Namespace, result: Any) -> int:
    from convert.tune import write_card
    from firmware_app.modelcard import card_path_for

    if args.model is None:
        # Never the shipped card implicitly: a tune on a handful of frames would move the cutoff every
        # later decision of this checkout (and every trap installed from it) is made with.
        print(
            f"cutoff {result.cutoff:.4f}: not written (tune writes a card only when told which): to write it, "
            "give --model PATH, e.g. a copy of the model and its card",
            file=sys.stderr,
        )
        return EXIT_OK
    card = card_path_for(args.model)
    try:
        old = json.loads(card.read_text(encoding="utf-8")).get("cutoff")
        write_card(card, result, str(args.labels or args.scores))
    except (OSError, ValueError, AttributeError) as exc:
        print(f"blankfilter: error: cannot write the cutoff into {card}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    before = f"{old:.4f}" if isinstance(old, int | float) and not isinstance(old, bool) else "none"
    same = " (unchanged)" if old == result.cutoff else ""
    print(f"cutoff {before} → {result.cutoff:.4f}{same} written into {card}", file=sys.stderr)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from convert.evaluate import evaluate, render

    if args.context:
        return cmd_eval_context(args)
    need_scores_or_labels(args)
    if args.scores:
        cutoff = args.cutoff
        if cutoff is None:
            usage_error("eval --scores needs --cutoff (saved scores carry no model card)")
        by_gamma = {"auto": _scored(args)}
    else:
        classifier = _classifier(args)
        cutoff = args.cutoff if args.cutoff is not None else classifier.card.cutoff
        by_gamma = {gamma: _scored(args, gamma, classifier) for gamma in ("auto", "off")}
    result = evaluate(by_gamma, cutoff)
    render(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK


def cmd_eval_context(args: argparse.Namespace) -> int:
    from convert import context_eval, context_lolo
    from convert.labels import read_labels
    from convert.scoring import write_scores
    from firmware_app.config import ContextSection
    from firmware_app.context import ContextSettings
    from firmware_app.context.extractor import load_extractor
    from firmware_app.decision import Cutoffs

    if not args.labels:
        usage_error("eval --context needs --labels CSV (with camera or location columns)")
    if args.seed_blanks < 1 and args.references is None:
        usage_error(f"--seed-blanks {args.seed_blanks}: seed at least 1 known blank")
    held_out = _held_out_classifier(args)
    defaults = ContextSection()
    frames = read_labels(args.labels)
    classifier = _classifier(args)
    extractor = load_extractor(args.extractor, threads=args.threads)
    settings = ContextSettings(
        cutoff=args.context_cutoff if args.context_cutoff is not None else extractor.card.cutoff,
        veto=args.veto if args.veto is not None else defaults.veto,
        drift_limit=args.drift_limit if args.drift_limit is not None else defaults.drift_limit,
        topup_spacing_s=0.0,  # the replay's clock is the frame order, not seconds: one reference per burst at most
        noise_floor=extractor.card.noise_floor,
    )
    cutoff = args.cutoff if args.cutoff is not None else classifier.card.cutoff
    config = context_eval.trap_config(cutoff, defaults.max_references, settings.topup_spacing_s)
    references = read_labels(args.references) if args.references is not None else None
    if args.quiet:  # the trap's once-per-camera notices, repeated for every replayed bank, say nothing here
        logging.getLogger("firmware_app.judge").setLevel(logging.ERROR)
    if args.deployment:
        rows = context_eval.deployment(frames, classifier, extractor, settings, config, args.seed_blanks,
                                       args.min_gap_h, show_progress=not args.quiet)  # fmt: skip
    else:
        rows = context_eval.replay(frames, classifier, extractor, settings, config, args.seed_blanks, references,
                                   show_progress=not args.quiet)  # fmt: skip
    result = context_eval.summarise(rows, Cutoffs(cutoff, settings.cutoff), settings.veto)
    result |= {"labels": str(args.labels), "classifier": classifier.card.label, "extractor": extractor.card.label,
               "seed_blanks": args.seed_blanks, "drift_limit": settings.drift_limit}  # fmt: skip
    context_eval.render(result)
    if args.lolo:
        lolo_rows, lolo_cutoff = rows, cutoff
        try:
            if held_out is not None:  # the classifier that never saw each group, at that group's own cutoff
                lolo_rows = context_lolo.held_out_classifier(rows, held_out[0], settings.veto, settings.veto_margin)
                lolo_cutoff = held_out[1]
            result["lolo"] = context_lolo.lolo(lolo_rows, lolo_cutoff, args.target_recall, settings.cutoff)
        except context_lolo.HeldOutScoresError as exc:  # scores or cutoffs of other data than --labels
            usage_error(f"held-out classifier: {exc}")
        result["lolo"]["held_out_classifier"] = held_out is not None
        context_lolo.render_lolo(result["lolo"])
    if args.decisions:
        context_eval.write_decisions(rows, args.decisions)
    if args.save_scores:  # the context-decided frames' context scores: `tune --scores` picks their cutoff
        write_scores(context_eval.context_scores(rows), args.save_scores)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK


def _held_out_classifier(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]] | None:
    """--held-out-scores and --held-out-cutoffs, read and checked before the replay starts."""
    from convert import context_lolo

    given = (args.held_out_scores is not None, args.held_out_cutoffs is not None)
    if not any(given):
        return None
    if not all(given) or not args.lolo or not args.deployment:
        # only the deployment replay records each frame's references, whose scores the veto needs
        usage_error("--held-out-scores and --held-out-cutoffs go together, with --lolo and --deployment")
    try:
        return context_lolo.read_held_out(args.held_out_scores, args.held_out_cutoffs)
    except (OSError, ValueError) as exc:
        usage_error(f"held-out classifier: {exc}")


def main(argv: list[str] | None = None) -> int:
    """`python -m convert`: the same commands without the trap's."""
    from firmware_app.commands.common import setup_logging
    from firmware_app.errors import BlankfilterError

    parser = argparse.ArgumentParser(prog="python -m convert", description="blankfilter model tools")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    setup_logging("warning", interactive=True)  # as `blankfilter`: plain messages
    try:
        return int(args.func(args))
    except BlankfilterError as exc:
        print(f"blankfilter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
