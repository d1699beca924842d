"""`blankfilter config`: check a config, or print every key with its default and meaning."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from firmware_app.commands.common import EXIT_OK, add_common, config_from_args
from firmware_app.config import describe


def register(sub: Any) -> None:
    config = sub.add_parser("config", help="check a config, or print every key with its default")
    add_common(config, model_flags=False)
    config.add_argument("--defaults", action="store_true", help="print all keys, defaults and meanings as TOML")
    config.set_defaults(func=cmd_config)


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
    config = config_from_args(args, announce=False)  # says it on stdout
    print(f"{config.origin}: ok (trap {config.trap.id}, inbox {config.source.inbox}, store {config.store.root})")
    return EXIT_OK
