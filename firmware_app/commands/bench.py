"""`blankfilter bench`: per-stage medians on real frames against a naive full-decode baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from firmware_app.commands.common import add_common, config_from_args


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="time each stage on a folder of frames against a naive baseline")
    add_common(bench)
    bench.add_argument("--images", type=Path, required=True, help="folder of JPEG frames")
    bench.add_argument("--repeat", type=int, default=3, help="passes over the folder (default 3)")
    bench.add_argument("--json", action="store_true", help="machine-readable results")
    bench.add_argument("--variant", choices=("reduced", "naive"), help=argparse.SUPPRESS)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from firmware_app.bench import main as bench_main

    return bench_main(args, config_from_args(args, announce=False))  # a store of its own
