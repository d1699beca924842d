"""A long soak of the fuzz suite's properties (tests/test_fuzz.py) with fresh random examples.

    .venv/bin/python bench/fuzz_soak.py [--examples 20000] [--seconds 600] [--only config,folder]

CI runs each property on a small, fixed set of examples (derandomised) so it stays fast and the same
every run. This runs the very same checks and strategies with random seeds, in batches, until either
`--examples` examples in all or `--seconds` have gone by, sharing the time between the properties by
their cost (the end-to-end folder run and the kill -9 run of the daemon each get a fixed share of the
time, not of the examples; a kill9 example is a second or so of daemon starts, kills and waits). A failing
property prints hypothesis's minimal example and its `@reproduce_failure` line; the soak goes on with
the others and exits 1. Needs hypothesis (the dev extra).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
import warnings
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
# examples per batch: a batch of each property takes about a second or two on a laptop core
BATCH = {"config": 300, "cutoff": 600, "jpeg": 200, "folder": 20, "kill9": 3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=20_000, help="stop after this many examples in all")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    parser.add_argument("--only", default="", help="comma-separated properties (default: all)")
    args = parser.parse_args(argv)

    logging.disable(logging.WARNING)  # the trap's one line per damaged frame, thousands of times
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")  # damaged EXIF, on purpose
    sys.path.insert(0, str(TESTS))
    sys.path.insert(0, str(TESTS.parent))
    import test_fuzz

    names = [n for n in test_fuzz.PROPERTIES if not args.only or n in args.only.split(",")]
    if not names:
        parser.error(f"no such property; known: {', '.join(test_fuzz.PROPERTIES)}")
    start = time.monotonic()
    done = dict.fromkeys(names, 0)
    spent = dict.fromkeys(names, 0.0)
    failed: dict[str, str] = {}
    while (live := [n for n in names if n not in failed]) and sum(done.values()) < args.examples:
        if time.monotonic() - start >= args.seconds:
            break
        name = min(live, key=lambda n: spent[n])  # the property that has had the least time goes next
        batch = min(BATCH.get(name, 100), max(1, args.examples - sum(done.values())))
        began = time.monotonic()
        try:
            test_fuzz.soak(name, batch)()
        except Exception:
            failed[name] = traceback.format_exc()
            print(f"== {name}: FAILED after {done[name]} examples\n{failed[name]}", flush=True)
        spent[name] += time.monotonic() - began
        done[name] += batch
        print(f"{name}: {done[name]} examples, {spent[name]:.0f} s", flush=True)

    print(f"\n== soak: {sum(done.values())} examples in {time.monotonic() - start:.0f} s")
    for name in names:
        print(f"  {name:8} {done[name]:7} examples  {spent[name]:6.0f} s  {'FAILED' if name in failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
