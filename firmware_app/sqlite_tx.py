"""One SQLite write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error, with the
database's own failures (full card, read-only card, locked) turned into the caller's clear error."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def immediate(
    db: sqlite3.Connection, fail: Callable[[sqlite3.Error], Exception], catch: type[sqlite3.Error] = sqlite3.Error
) -> Iterator[sqlite3.Connection]:
    """`catch` errors become `fail(error)`; others (e.g. an IntegrityError the caller expects) pass."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except catch as exc:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise fail(exc) from exc
