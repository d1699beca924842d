"""`blankfilter ledger ...`: check a ledger, and recover from a damaged one.

blankfilter ledger check [--quick]   SQLite's integrity_check (quick_check) of the ledger, read-only
blankfilter ledger recover [--force] set a damaged ledger aside and rebuild one from the store

`recover` (stop the trap first) records every file already in kept/, audit/, quarantine/ and
blank/ in a fresh ledger with its sha256 (decision 'recovered', see `ledger.py`), so none is judged
again; it builds it as ledger.db.recovering (a full card fails there, with nothing changed), then
renames ledger.db, with its -wal and -shm, to ledger.db.damaged-<UTC time>[-wal|-shm] and puts the
new one in its place. Frames still in the inbox are judged as new by the next `run`. Nothing is
deleted, and a sound ledger is left alone unless --force is given.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from firmware_app.actions import Action
from firmware_app.commands.common import EXIT_OK, add_common, config_from_args
from firmware_app.errors import ConfigError, LedgerUnavailable

# one action per store folder (kept/ also holds failed_kept frames: 'kept' stands for both)
FOLDER_ACTIONS = (
    ("kept", Action.KEPT),
    ("audit", Action.AUDIT),
    ("quarantine", Action.QUARANTINED),
    ("blank", Action.BLANK_KEPT),
)
HASH_SUFFIX = re.compile(r"^(?P<stem>.+)-(?P<short>[0-9a-f]{8})$")


def register(sub: Any) -> None:
    ledger = sub.add_parser("ledger", help="check the ledger, or recover from a damaged one")
    verbs = ledger.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser("check", help="SQLite's integrity check of the ledger (read-only)")
    add_common(check, model_flags=False)
    check.add_argument("--quick", action="store_true", help="quick_check: faster, checks less")
    check.set_defaults(func=cmd_check)
    recover = verbs.add_parser(
        "recover",
        help="set a damaged ledger aside and rebuild it from kept/, audit/, quarantine/ (stop the trap first)",
    )
    add_common(recover, model_flags=False)
    recover.add_argument("--force", action="store_true", help="rebuild even when the ledger looks sound")
    recover.set_defaults(func=cmd_recover)


def cmd_check(args: argparse.Namespace) -> int:
    from firmware_app.ledger import check, damaged

    path = config_from_args(args).ledger_path
    if not path.is_file():
        raise ConfigError(f"no ledger at {path}: `blankfilter run` creates it (store.root)")
    problems = check(path, quick=args.quick)
    kind = "quick_check" if args.quick else "integrity_check"
    if not problems:
        print(f"{path}: ok ({kind})")
        return EXIT_OK
    for line in problems[:20]:
        print(f"{path}: {line}")
    if len(problems) > 20:
        print(f"{path}: ... and {len(problems) - 20} more")
    raise damaged(path, f"{kind}: {len(problems)} problem(s), the first: {problems[0]}")


def inbox_name(rel: str, sha256: str) -> str:
    """The name the frame had in the inbox: the store adds -<first 8 of its sha256> on a clash."""
    pure = PurePosixPath(rel)
    match = HASH_SUFFIX.match(pure.stem)
    if match and match["short"] == sha256[:8]:
        return str(pure.with_name(match["stem"] + pure.suffix))
    return rel


def store_files(root: Path) -> list[tuple[str, str, str, int, float, Action]]:
    """(inbox path, dest, sha256, size, mtime, action) of every frame file in the store's folders."""
    from firmware_app.hashing import sha256_file

    found = []
    for folder, action in FOLDER_ACTIONS:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_symlink() or not path.is_file() or path.name.startswith("."):  # .NAME.partial: unfinished
                continue
            rel = path.relative_to(base).as_posix()
            sha, st = sha256_file(path), path.stat()
            found.append((inbox_name(rel, sha), f"{folder}/{rel}", sha, st.st_size, st.st_mtime, action))
    return found


def cmd_recover(args: argparse.Namespace) -> int:
    from firmware_app.ledger import Ledger, check
    from firmware_app.store import fsync_dir

    config = config_from_args(args)
    path, root = config.ledger_path, config.store.root
    if not root.is_dir():
        raise ConfigError(f"no store at {root} (store.root): nothing to recover")
    if path.is_file() and not args.force and not check(path):
        print(f"{path}: ok (integrity_check): nothing to recover; --force rebuilds it anyway")
        return EXIT_OK
    files = store_files(root)
    fresh = Path(f"{path}.recovering")  # built beside it first: a full card fails here, before anything moved
    for suffix in ("", "-wal", "-shm"):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)  # an earlier attempt that failed part-way
    try:
        ledger = Ledger(fresh)
        try:
            added = ledger.add_recovered(files)
        finally:
            ledger.close()
    except (sqlite3.Error, LedgerUnavailable) as exc:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        raise LedgerUnavailable(
            f"cannot write a new ledger beside {path} ({exc}): nothing was changed. Free space on the card "
            "or fix its permissions, then run `blankfilter ledger recover` again."
        ) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            aside = Path(f"{path}.damaged-{stamp}{suffix}")
            os.rename(src, aside)
            print(f"{src} set aside as {aside}")
    os.rename(fresh, path)
    fsync_dir(path.parent)
    counts = {folder: sum(1 for f in files if f[1].startswith(f"{folder}/")) for folder, _ in FOLDER_ACTIONS}
    summary = ", ".join(f"{folder}/ {n}" for folder, n in counts.items() if n) or "no files"
    print(f"{path}: a new ledger with {added} frame(s) found in the store ({summary}), marked 'recovered'")
    if added < len(files):
        print(f"  {len(files) - added} file(s) are copies of a frame already recorded (same name and bytes)")
    print(f"frames still in {config.source.inbox} are judged as new by the next `blankfilter run`")
    return EXIT_OK
