"""`blankfilter` command line: the parser and the entry point. Each command lives in its own module
under `commands/`; the workstation tools (tune, eval, convert) and the monitor join through the
`blankfilter.commands` entry point, so the trap's code never imports them."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points
from typing import Any

from firmware_app import __version__
from firmware_app.commands import bench, classify, config, ledger, reference, run, stats
from firmware_app.commands.common import EXIT_OK, EXIT_USAGE, setup_logging
from firmware_app.errors import BlankfilterError

log = logging.getLogger("blankfilter")

COMMANDS = (run, classify, stats, config, bench, reference, ledger)

RUN_DESCRIPTION = (
    "Process the inbox (source.kind = folder) or the camera: score each frame, decide per burst, keep or "
    "discard, record every step in the ledger and publish events over MQTT. Runs until stopped (SIGTERM or "
    "Ctrl-C finish the current frame or burst first); --once processes what is there now and exits. Exit 0: "
    "done; 1: something is left to do (frames not stored, a full or read-only card, the MQTT publisher gave "
    "up): a restart retries it; 2: a usage, config or damaged-ledger error that a restart does not mend. "
    "Log lines are plain at a terminal; under systemd (JOURNAL_STREAM set) or with stderr not a terminal "
    "each line carries its level and logger (and a time stamp outside the journal)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blankfilter", description="On-device blank filter for camera traps.")
    parser.add_argument("--version", action="version", version=f"blankfilter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    sub.choices["run"].description = RUN_DESCRIPTION  # kept beside the other commands' words
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
    setup_logging("warning", interactive=True)  # commands that log more set their own level
    try:
        return int(args.func(args))
    except BlankfilterError as exc:
        print(f"blankfilter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
