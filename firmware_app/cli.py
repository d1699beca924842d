"""`blankfilter` command line: run, classify, stats, bench, config, reference."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import Any

from firmware_app import __version__
from firmware_app.config import DEFAULT_CONFIG_PATH, Config, describe, load_config
from firmware_app.errors import BlankfilterError, ConfigError

log = logging.getLogger("blankfilter")

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


def setup_logging(level: str) -> None:
    # Under systemd the journal stamps time and unit itself.
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if os.environ.get("JOURNAL_STREAM")
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def config_from_args(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    overrides = list(args.set or [])
    for flag, key in (("model", "model.path"), ("cutoff", "model.cutoff"), ("threads", "model.threads")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(str(value)) if flag == 'model' else value}")
    if getattr(args, "edgetpu", False):
        overrides.append("model.edgetpu=true")
    return load_config(path, overrides)


def add_common(parser: argparse.ArgumentParser, model_flags: bool = True) -> None:
    parser.add_argument("--config", type=Path, help=f"TOML config (default: {DEFAULT_CONFIG_PATH} if it exists)")
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key (repeatable)"
    )
    if model_flags:
        parser.add_argument("--model", type=Path, help="model .tflite (its card .json beside it)")
        parser.add_argument("--cutoff", type=float, help="p(non-blank) at or over which a frame is kept")
        parser.add_argument("--threads", type=int, help="interpreter CPU threads")
        parser.add_argument("--edgetpu", action="store_true", help="use the Coral Edge TPU if present")


def load_model(config: Config):  # type: ignore[no-untyped-def]
    from firmware_app.classifiers import load_classifier

    m = config.model
    return load_classifier(Path(m.path) if m.path else None, m.threads, m.edgetpu, m.runtime)


# -- run ------------------------------------------------------------------------------------------
def disk_note(folder: Path) -> str:
    """'; the disk is full (0.0 MB free)' when it is: SQLite may only say 'disk I/O error'."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return ""
    free_mb = st.f_bavail * st.f_frsize / 1e6
    return f"; the disk is full ({free_mb:.1f} MB free)" if free_mb < 1 else ""


def cmd_run(args: argparse.Namespace) -> int:
    from firmware_app.ledger import Ledger
    from firmware_app.pipeline import LedgerUnavailable, Pipeline, check_layout

    config = config_from_args(args)
    setup_logging(config.log.level)
    check_layout(config)
    classifier = load_model(config)
    if not args.dry_run:
        config.store.root.mkdir(parents=True, exist_ok=True)
    if config.source.kind != "folder":
        return run_camera(config, classifier, args)
    try:
        ledger = Ledger(":memory:" if args.dry_run else config.ledger_path)
    except sqlite3.Error as exc:  # a full or read-only card: no ledger, so nothing may move
        log.error(
            "cannot open the ledger %s (%s%s); nothing was moved or deleted: every frame in %s is left "
            "untouched. Free space on the card (store.min_free_mb) or fix its permissions.",
            config.ledger_path, exc, disk_note(config.store.root), config.source.inbox,
        )  # fmt: skip
        return EXIT_INCOMPLETE
    context = None
    if not args.dry_run:  # a dry run changes nothing, the reference bank included
        from firmware_app.context.cli import load_context

        context = load_context(config)
    pipeline = Pipeline(config, classifier, ledger, dry_run=args.dry_run, context=context)
    if context is not None:
        log.info(
            "camera context: %s, cutoff %.3f, veto %.2f, references in %s",
            context.label, context.settings.cutoff, context.settings.veto, config.bank_path,
        )  # fmt: skip
    cutoff_from = "config" if config.model.cutoff is not None else "model card"
    log.info(
        "blankfilter %s: trap %s, model %s (%s), cutoff %.3f (%s), inbox %s, discard=%s%s",
        __version__, config.trap.id, classifier.card.label, classifier.runtime, pipeline.cutoff, cutoff_from,
        config.source.inbox, config.store.discard, ", DRY RUN: nothing is moved or deleted" if args.dry_run else "",
    )  # fmt: skip

    stop_on_signals(pipeline.stop, "frame")
    publisher = None if args.dry_run else start_publisher(config, pipeline, ledger)
    try:
        summary = pipeline.run(once=args.once)
    except LedgerUnavailable as exc:
        log.error("%s", exc)
        return EXIT_INCOMPLETE
    finally:
        if publisher is not None:
            publisher.stop(drain_s=config.mqtt.drain_s if args.once else 3.0)
        if not args.dry_run:
            note_outbox(ledger, publisher is not None)
        ledger.close()
    log.info("done: %s", summary.line())
    if pipeline.waiting:
        log.info(
            "%d frame(s) wait in the inbox for their burst to close: the next start decides them", pipeline.waiting
        )
    if summary.failures:
        log.error("%d frame(s) could not be stored and stay in the inbox:", len(summary.failures))
        for line in summary.failures[:20]:
            log.error("  %s", line)
        return EXIT_INCOMPLETE
    return EXIT_OK


# -- classify -------------------------------------------------------------------------------------
def iter_images(paths: list[Path], extensions: list[str]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        else:
            yield path  # files named explicitly are tried whatever their ending


def cmd_classify(args: argparse.Namespace) -> int:
    from firmware_app.imaging import prepare_jpeg
    from firmware_app.pipeline import imaging_settings

    config = config_from_args(args)
    setup_logging(config.log.level if not args.json else "warning")
    classifier = load_model(config)
    cutoff = config.model.cutoff if config.model.cutoff is not None else classifier.card.cutoff
    settings = imaging_settings(config)
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


def stop_on_signals(stop: Callable[[], None], unit: str) -> None:
    """SIGTERM (systemd) and SIGINT (Ctrl-C) finish the current frame or burst, then stop."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: finishing the current %s, then stopping", signal.Signals(signum).name, unit)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_camera(config: Config, classifier: Any, args: argparse.Namespace) -> int:
    """source.kind = picamera2 | opencv: trigger -> burst -> score in memory -> write only what is kept."""
    from firmware_app.capture import CaptureLoop, make_camera, make_triggers
    from firmware_app.context.cli import load_context
    from firmware_app.ledger import Ledger

    if args.dry_run:
        raise ConfigError("--dry-run works with source.kind = folder only (a camera has nothing to leave untouched)")
    camera = make_camera(config)
    pir, motion = make_triggers(config)
    ledger = Ledger(config.ledger_path)
    loop = CaptureLoop(config, classifier, ledger, camera, pir, motion, load_context(config))
    log.info(
        "blankfilter %s: trap %s, camera %s (%s, trigger %s), model %s (%s), cutoff %.3f, discard=%s",
        __version__, config.trap.id, camera.name, config.source.kind, config.camera.trigger, classifier.card.label,
        classifier.runtime, loop.cutoff, config.store.discard,
    )  # fmt: skip

    stop_on_signals(loop.stop, "burst")
    publisher = start_publisher(config, loop, ledger)
    try:
        summary = loop.run(max_bursts=args.bursts)
    finally:
        if publisher is not None:
            publisher.stop(drain_s=3.0)
        note_outbox(ledger, publisher is not None)
        ledger.close()
    log.info("done: %s", summary.line())
    return EXIT_OK


def start_publisher(config: Config, pipeline: Any, ledger: Any) -> Any:
    """The MQTT publisher, when a broker is configured; events wait in the outbox either way."""
    if not config.mqtt.host:
        depth = ledger.outbox_state()[0]
        log.info("no broker (mqtt.host is empty): events are kept in the outbox (%d waiting)", depth)
        return None
    from firmware_app.events.mqtt import REMOTE_CUTOFF_KEY, Hooks, Publisher

    card = pipeline.classifier.card
    if config.mqtt.remote_cutoff:
        saved = ledger.get_meta(REMOTE_CUTOFF_KEY)
        if saved is not None:
            pipeline.set_cutoff(float(saved))
            log.warning("cutoff %.4f: set remotely earlier (mqtt.remote_cutoff = true), not %s", float(saved),
                        "model.cutoff" if config.model.cutoff is not None else "the model card's")  # fmt: skip
    hooks = Hooks(
        model=(card.name, card.version),
        cutoff=lambda: float(pipeline.cutoff),
        set_cutoff=pipeline.set_cutoff if config.mqtt.remote_cutoff else None,
    )
    publisher = Publisher(config, hooks)
    publisher.start()
    pipeline.on_event = publisher.wake
    return publisher


def note_outbox(ledger: Any, broker: bool) -> None:
    try:
        depth, oldest = ledger.outbox_state()
    except sqlite3.Error:
        return
    if depth:
        when = "when the broker is reachable" if broker else "once mqtt.host is set"
        log.info("%d event(s) wait in the outbox (oldest %s); they are sent %s", depth, oldest, when)


# -- stats ----------------------------------------------------------------------------------------
def cmd_stats(args: argparse.Namespace) -> int:
    from firmware_app.ledger import Ledger

    config = config_from_args(args)
    if not config.ledger_path.exists():
        raise ConfigError(f"no ledger at {config.ledger_path} yet: `blankfilter run` creates it (store.root)")
    ledger = Ledger(config.ledger_path)
    stats = ledger.stats()
    ledger.close()
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ratio = "-" if stats["blank_ratio"] is None else f"{stats['blank_ratio']:.1%}"
    console.print(
        f"[bold]{config.ledger_path}[/]: {stats['frames']} frames in {stats['bursts']} bursts, "
        f"blank ratio {ratio}, {stats['pending']} pending, {stats['skipped']} non-frame files skipped"
    )
    table = Table("day (UTC)", "frames", "blank", "non-blank", "failed (kept)")
    for day, total, blank, nonblank, unknown in stats["days"]:
        table.add_row(day, str(total), str(blank or 0), str(nonblank or 0), str(unknown or 0))
    console.print(table)
    actions = Table("action", "frames")
    for action, count in sorted(stats["by_action"].items()):
        actions.add_row(str(action), str(count))
    console.print(actions)
    for model, version, count in stats["models"]:
        console.print(f"model {model} {version}: {count} frames")
    context = ", ".join(f"{state} {n}" for state, n in sorted(stats["context"].items()))
    console.print(f"camera context (scored frames): {context or '-'}")
    waiting, oldest = stats["outbox"]["undelivered"], stats["outbox"]["oldest"]
    console.print(f"MQTT outbox: {waiting} event(s) not yet delivered" + (f" (oldest {oldest})" if oldest else ""))
    for path, error in stats["recent_errors"]:
        console.print(f"[yellow]{path}[/]: {error}")
    return EXIT_OK


# -- config ---------------------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    if args.defaults:
        section = None
        for dotted, default, help_text in describe():
            name, key = dotted.split(".")
            if name != section:
                print(f"\n[{name}]")
                section = name
            if default is None:
                print(f"# {key} =  # {help_text} (unset)")
            else:
                print(f"{key} = {json.dumps(str(default) if isinstance(default, Path) else default)}  # {help_text}")
        return EXIT_OK
    config = config_from_args(args)
    print(f"{config.origin}: ok (trap {config.trap.id}, inbox {config.source.inbox}, store {config.store.root})")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from firmware_app.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blankfilter", description="On-device blank filter for camera traps.")
    parser.add_argument("--version", action="version", version=f"blankfilter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="process the inbox: score, decide, keep or discard, record")
    add_common(run)
    run.add_argument("--once", action="store_true", help="process what is there now, then exit")
    run.add_argument("--dry-run", action="store_true", help="score and decide, but move, delete and record nothing")
    run.add_argument("--bursts", type=int, help="camera sources: stop after this many bursts (a field check)")
    run.set_defaults(func=cmd_run)

    classify = sub.add_parser("classify", help="score images; never moves or deletes anything")
    add_common(classify)
    classify.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="JPEG files or folders")
    classify.add_argument("--json", action="store_true", help="one JSON object per line per image")
    classify.set_defaults(func=cmd_classify)

    stats = sub.add_parser("stats", help="summarise the ledger")
    add_common(stats, model_flags=False)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)

    config = sub.add_parser("config", help="check a config, or print every key with its default")
    add_common(config, model_flags=False)
    config.add_argument("--defaults", action="store_true", help="print all keys, defaults and meanings as TOML")
    config.set_defaults(func=cmd_config)

    bench = sub.add_parser("bench", help="time each stage on a folder of frames against a naive baseline")
    add_common(bench)
    bench.add_argument("--images", type=Path, required=True, help="folder of JPEG frames")
    bench.add_argument("--repeat", type=int, default=3, help="passes over the folder (default 3)")
    bench.add_argument("--json", action="store_true", help="machine-readable results")
    bench.add_argument("--variant", choices=("reduced", "naive"), help=argparse.SUPPRESS)
    bench.set_defaults(func=cmd_bench)
    from firmware_app.context.cli import register as register_reference

    register_reference(sub, add_common)
    add_plugin_commands(sub)
    return parser


def add_plugin_commands(sub: Any) -> None:
    """Commands from other packages (the workstation tools: tune, eval, convert), found through the
    `blankfilter.commands` entry point so the trap's code never imports them. On a trap without
    them installed, they are simply absent."""
    for entry in entry_points(group="blankfilter.commands"):
        try:
            entry.load()(sub)
        except ImportError as exc:
            log.debug("commands from %s not available: %s", entry.value, exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BlankfilterError as exc:
        print(f"blankfilter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
