"""What every command shares: exit codes, logging, `--config` / `--set` and the model flags, and the
one line that says which config is in use."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from firmware_app.config import DEFAULT_CONFIG_PATH, Config, load_config

log = logging.getLogger("blankfilter")

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


class PlainFormatter(logging.Formatter):
    """The console format of interactive commands: the message alone; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def service_output() -> bool:
    """Whether `run` writes for a service log rather than for a person at a terminal: under systemd
    (JOURNAL_STREAM is set) or with stderr not a terminal (cron, a log file, a pipe)."""
    return bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()


def setup_logging(level: str, interactive: bool | None = None) -> None:
    """Logging to stderr. Interactive commands (`interactive=True`) print plain messages. `run` passes
    nothing: at a terminal it prints plain messages too; as a service (`service_output`) each line has
    its level and logger, and a time stamp unless the journal, which stamps time and unit itself, takes it."""
    handler = logging.StreamHandler(sys.stderr)
    if interactive or (interactive is None and not service_output()):
        handler.setFormatter(PlainFormatter("%(message)s"))
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def config_from_args(args: argparse.Namespace, announce: bool = True) -> Config:
    """The config the flags ask for. `announce`: say which one on stderr, in one line, first (every
    command that touches the store, the ledger or the bank: without a file the store is the built-in
    /var/lib/blankfilter, which must not be a surprise). Commands that touch none of them pass False."""
    path = args.config
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    config = load_config(path, list(args.set or []), model_flags(args))
    if announce:
        print(f"blankfilter: {config_in_use(config, len(args.set or []))}", file=sys.stderr, flush=True)
    return config


def model_flags(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The model flags as config overrides, each with the option as typed, so an error names the flag."""
    flags = []
    for flag, key in (("model", "model.path"), ("cutoff", "model.cutoff"), ("threads", "model.threads")):
        value = getattr(args, flag, None)
        if value is not None:
            flags.append((f"{key}={json.dumps(str(value)) if flag == 'model' else value}", f"--{flag} {value}"))
    if getattr(args, "edgetpu", False):
        flags.append(("model.edgetpu=true", "--edgetpu"))
    return flags


def config_in_use(config: Config, sets: int = 0) -> str:
    """'config /etc/blankfilter/config.toml, store at ...' or 'no config file: built-in defaults, ...'."""
    origin = "no config file: built-in defaults" if config.origin == "defaults" else f"config {config.origin}"
    if sets:
        origin += f" with {sets} --set override(s)"
    return f"{origin}, store at {config.store.root}"


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


def stop_on_signals(stop: Callable[[], None], unit: str) -> None:
    """SIGTERM (systemd) and SIGINT (Ctrl-C) finish the current frame or burst, then stop."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: finishing the current %s, then stopping", signal.Signals(signum).name, unit)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
