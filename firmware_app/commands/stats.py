"""`blankfilter stats`: what the ledger says: frames per day, actions, context states, the outbox."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from firmware_app.commands.common import EXIT_OK, add_common, config_from_args
from firmware_app.errors import ConfigError

# The clock a day is counted on: frames are grouped by the day they were captured, where known.
CLOCKS = {
    "camera": "camera clock (EXIF, no zone)",
    "utc": "UTC (file time, or camera source)",
    "processed": "UTC, processing time (no capture time)",
}
DAY_FIELDS = ("day", "clock", "frames", "blank", "nonblank", "failed_kept")
MODEL_FIELDS = ("model", "version", "frames")


def register(sub: Any) -> None:
    stats = sub.add_parser(
        "stats",
        help="summarise the ledger",
        description="What the ledger says: frames per capture day (the last 14 days), blank ratio, actions, "
        "camera-context states, reference freshness, the MQTT outbox and recent errors. Only reads the ledger. "
        "A day is counted on the clock its capture time came from (the `clock` of each day): "
        + "; ".join(f"{code}: {text}" for code, text in CLOCKS.items()),
    )
    add_common(stats, model_flags=False)
    stats.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object (days and models as lists of objects with named fields)",
    )
    stats.set_defaults(func=cmd_stats)


def named(rows: list[tuple[Any, ...]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows as objects, so a reader of the JSON needs no column order."""
    return [dict(zip(names, row, strict=True)) for row in rows]


def day_rows(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Frames per capture day and clock; a count over frames not yet decided is 0, not null."""
    return [
        {k: v or 0 for k, v in day.items()} | {"day": day["day"], "clock": day["clock"]}
        for day in named(rows, DAY_FIELDS)
    ]


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
    stats["days"], stats["models"] = day_rows(stats["days"]), named(stats["models"], MODEL_FIELDS)
    stats["clocks"] = CLOCKS
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
    table = Table("capture day", "clock", "frames", "blank", "non-blank", "failed (kept)")
    for d in stats["days"]:
        table.add_row(d["day"], CLOCKS.get(d["clock"], d["clock"]), *(str(d[k]) for k in DAY_FIELDS[2:]))
    console.print(table)
    actions = Table("action", "frames")
    for action, count in sorted(stats["by_action"].items()):
        actions.add_row(str(action), str(count))
    console.print(actions)
    for m in stats["models"]:
        console.print(f"model {m['model']} {m['version']}: {m['frames']} frames")
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
