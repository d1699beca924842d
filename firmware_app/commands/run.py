"""`blankfilter run`: the trap daemon, for a folder inbox or a camera."""

from __future__ import annotations

import argparse
import logging
import sqlite3
from typing import Any

from firmware_app import __version__
from firmware_app.commands.common import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    add_common,
    config_from_args,
    setup_logging,
    stop_on_signals,
)
from firmware_app.errors import LedgerDamaged, LedgerUnavailable
from firmware_app.ledger import Ledger

log = logging.getLogger("blankfilter")


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="process the inbox: score, decide, keep or discard, record")
    add_common(run)
    run.add_argument("--once", action="store_true", help="process what is there now, then exit")
    run.add_argument("--dry-run", action="store_true", help="score and decide, but move, delete and record nothing")
    run.add_argument("--bursts", type=int, help="camera sources: stop after this many bursts (a field check)")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from firmware_app.app import build_trap, start_publisher

    config = config_from_args(args)
    setup_logging(config.log.level)
    try:
        trap = build_trap(config, once=args.once, dry_run=args.dry_run, max_bursts=args.bursts)
    except LedgerDamaged as exc:  # waiting does not mend it: exit 2, which systemd does not restart
        log.error("%s", exc)
        return EXIT_USAGE
    except LedgerUnavailable as exc:  # a full or read-only card: no ledger, so nothing may move
        log.error("%s", exc)
        return EXIT_INCOMPLETE
    judge, folder = trap.judge, config.source.kind == "folder"
    if judge.context is not None:
        log.info(
            "camera context: %s, cutoff %.3f, veto %.2f, references in %s",
            judge.context.label, judge.context.settings.cutoff, judge.context.settings.veto, config.bank_path,
        )  # fmt: skip
    where = f"inbox {config.source.inbox}" if folder else f"camera {config.camera.name} ({config.source.kind}, " \
        f"trigger {config.camera.trigger})"  # fmt: skip
    log.info(
        "blankfilter %s: trap %s, model %s (%s), cutoff %.3f (%s), %s, discard=%s%s",
        __version__, config.trap.id, judge.classifier.card.label, judge.classifier.runtime, judge.cutoff,
        judge.cutoff_origin, where, config.store.discard,
        ", DRY RUN: nothing is moved or deleted" if args.dry_run else "",
    )  # fmt: skip

    stop_on_signals(trap.loop.stop, "frame" if folder else "burst")
    publisher = None if args.dry_run else start_publisher(config, trap)
    try:
        summary = trap.loop.run()
    except LedgerDamaged as exc:  # `--once` (a daemon backs off instead, touching nothing)
        log.error("%s", exc)
        return EXIT_USAGE
    except LedgerUnavailable as exc:
        log.error("%s", exc)
        return EXIT_INCOMPLETE
    finally:
        if publisher is not None:
            publisher.stop(drain_s=config.mqtt.drain_s if args.once else 3.0)
        if not args.dry_run:
            note_outbox(trap.ledger, publisher is not None)
        trap.close()
    log.info("done: %s", summary.line())
    if publisher is not None and publisher.failed:
        log.error("stopped because the MQTT publisher gave up (%s): events wait in the outbox for the restart",
                  publisher.failed)  # fmt: skip
        return EXIT_INCOMPLETE
    if trap.loop.waiting:
        log.info("%d frame(s) wait for their burst to close: the next start decides them", trap.loop.waiting)
    if summary.failures:
        log.error(
            "%d frame(s) could not be stored%s:", len(summary.failures), " and stay in the inbox" if folder else ""
        )
        for line in summary.failures[:20]:
            log.error("  %s", line)
        return EXIT_INCOMPLETE
    return EXIT_OK


def note_outbox(ledger: Ledger, broker: bool) -> None:
    try:
        depth, oldest = ledger.outbox_state()
    except (sqlite3.Error, LedgerUnavailable):
        return
    if depth:
        when = "when the broker is reachable" if broker else "once mqtt.host is set"
        log.info("%d event(s) wait in the outbox (oldest %s); they are sent %s", depth, oldest, when)
