"""`blankfilter classify`: score files or folders; never moves or deletes anything."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firmware_app.commands.common import EXIT_OK, add_common, config_from_args, setup_logging
from firmware_app.errors import BlankfilterError


def register(sub: Any) -> None:
    classify = sub.add_parser(
        "classify",
        help="score images; never moves or deletes anything",
        description="Score JPEG files, or every frame in folders (source.extensions), with the model; print "
        "score, verdict and path. Never moves or deletes anything. A frame that cannot be read or decoded is "
        "reported on its line (exit 0); a PATH that does not exist is a usage error (exit 2).",
    )
    add_common(classify)
    classify.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="JPEG files or folders")
    classify.add_argument("--json", action="store_true", help="one JSON object per line per image")
    classify.set_defaults(func=cmd_classify)


def iter_images(paths: list[Path], extensions: list[str]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        else:
            yield path  # files named explicitly are tried whatever their ending


def check_paths(paths: list[Path]) -> None:
    """A PATH that is not there is a mistake on the command line, not a frame that failed: say so first."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BlankfilterError(f"classify: no such file or folder: {', '.join(missing)}")


def cmd_classify(args: argparse.Namespace) -> int:
    from firmware_app.app import load_model
    from firmware_app.imaging import ImagingSettings, prepare_jpeg

    check_paths(args.paths)
    config = config_from_args(args, announce=False)  # touches no store
    setup_logging(config.log.level if not args.json else "warning", interactive=True)
    classifier = load_model(config)
    cutoff = config.model.cutoff if config.model.cutoff is not None else classifier.card.cutoff
    settings = ImagingSettings.from_config(config.imaging)
    for path in iter_images(args.paths, config.source.extensions):
        result: dict[str, object] = {"path": str(path), "score": None, "blank": None, "cutoff": cutoff, "gamma": None}
        error = None
        try:
            prepared = prepare_jpeg(path.read_bytes(), classifier.card.input, settings)
            score = classifier.score(prepared.pixels)
            result.update(score=score, blank=score < cutoff, gamma=prepared.gamma)
        except OSError as exc:
            error = f"cannot read: {exc.strerror or exc}"
        except BlankfilterError as exc:
            error = str(exc)
        result["error"] = error
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            verdict = "error" if error else ("blank" if result["blank"] else "KEEP")
            score_text = "  -   " if result["score"] is None else f"{result['score']:.4f}"
            print(f"{score_text}  {verdict:5}  {path}" + (f"  ({error})" if error else ""), flush=True)
    return EXIT_OK
