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


def setup_logging(level: str) -> None:
    # Under systemd the journal stamps time and unit itself.
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if os.environ.get("JOURNAL_STREAM")
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def config_from_args(args: argparse.Namespace, announce: bool = True) -> Config:
    """The config the flags ask for. `announce`: say which one on stderr, in one line, first (every
    command that touches the store, the ledger or the bank: without a file the store is the built-in
    /var/lib/blankfilter, which must not be a surprise). Commands that touch none of them pass False."""
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
    config = load_config(path, overrides)
    if announce:
        print(f"blankfilter: {config_in_use(config, len(args.set or []))}", file=sys.stderr, flush=True)
    return config


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
