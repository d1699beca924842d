"""One SQLite write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error, with the
database's own failures (full card, read-only card, locked) turned into the caller's clear error;
and a read-only connection that works on a full or read-only card."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


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


def connect_ro(path: Path | str, timeout: float = 30) -> sqlite3.Connection:
    """A read-only connection (URI mode=ro): never creates, migrates or writes the database.

    A WAL database needs its -shm file, which a full or read-only card may not let SQLite make;
    then it is opened as immutable, which is safe only when no -wal holds changes (nobody has it
    open for writing), and otherwise the error stands."""
    base = Path(path).resolve().as_uri()
    db = sqlite3.connect(f"{base}?mode=ro", uri=True, timeout=timeout)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        db.close()
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise
        db = sqlite3.connect(f"{base}?immutable=1", uri=True, timeout=timeout)
    return db
