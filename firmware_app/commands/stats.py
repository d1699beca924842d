"""`blankfilter stats`: what the ledger says: frames per day, actions, context states, the outbox."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from firmware_app.commands.common import EXIT_OK, add_common, config_from_args
from firmware_app.errors import ConfigError


def register(sub: Any) -> None:
    stats = sub.add_parser("stats", help="summarise the ledger")
    add_common(stats, model_flags=False)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)


def age(iso: object) -> str:
    """'3 h ago' for an ISO time (UTC), so a stale reference stands out."""
    if not isinstance(iso, str):
        return "-"
    try:
        seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return iso
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago ({iso})"
    return f"just now ({iso})"


def cmd_stats(args: argparse.Namespace) -> int:
    from firmware_app.ledger import Ledger

    config = config_from_args(args)
    if not config.ledger_path.exists():
        raise ConfigError(f"no ledger at {config.ledger_path} yet: `blankfilter run` creates it (store.root)")
    from firmware_app.context.bank import freshness

    ledger = Ledger(config.ledger_path, read_only=True)  # only reads: works on a full card, migrates nothing
    try:
        stats = ledger.stats()
    finally:
        ledger.close()
    stats["references"] = freshness(config.bank_path)
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
    for ref in stats["references"]:
        console.print(
            f"references {ref['camera']}/{ref['mode']}: {ref['references']} ({ref['manual']} added, {ref['capture']} "
            f"captured, {ref['auto']} automatic), newest added {age(ref['newest_added_at'])}"
        )
    waiting, oldest = stats["outbox"]["undelivered"], stats["outbox"]["oldest"]
    console.print(f"MQTT outbox: {waiting} event(s) not yet delivered" + (f" (oldest {oldest})" if oldest else ""))
    for path, error in stats["recent_errors"]:
        console.print(f"[yellow]{path}[/]: {error}")
    return EXIT_OK
