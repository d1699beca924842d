"""`blankfilter config`: check a config, or print every key with its default and meaning."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from firmware_app.commands.common import EXIT_OK, add_common, config_from_args
from firmware_app.config import SECTIONS, describe


def register(sub: Any) -> None:
    config = sub.add_parser(
        "config",
        help="check a config, or print every key with its default",
        description="Check a config (--config FILE and --set overrides): every problem is reported at once, "
        "each naming its key and where the value came from (exit 2), else one line saying it is ok. "
        "--defaults prints every key with its default, meaning and allowed values, as TOML.",
    )
    add_common(config, model_flags=False)
    config.add_argument(
        "--defaults", action="store_true", help="print all keys, defaults, meanings and allowed values as TOML"
    )
    config.set_defaults(func=cmd_config)


def choices(dotted: str) -> tuple[str, ...]:
    """The values a key allows, when it has a fixed set (store.discard, camera.trigger, ...)."""
    name, key = dotted.split(".")
    return next(tuple(f.metadata["choices"]) for f in dataclasses.fields(SECTIONS[name]) if f.name == key)


def cmd_config(args: argparse.Namespace) -> int:
    if args.defaults:
        section = None
        for dotted, default, described in describe():
            allowed = choices(dotted)
            help_text = f"{described} (one of: {', '.join(allowed)})" if allowed else described
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
