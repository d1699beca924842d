"""File operations on the trap's card: atomic, fsync'd, idempotent, never overwriting.

Layout under `store.root`: kept/ (non-blank and fail-open frames), audit/ (the blank sample people
check for misses), quarantine/ (blanks held back for a while), blank/ (blanks when discard=keep).
Each keeps the frame's path relative to the inbox, so camera sub-folders survive.

Every operation can be replayed after a crash: a move whose source is gone but whose destination
holds the right bytes is done; a delete of a missing file is done.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from firmware_app.hashing import sha256_file
from firmware_app.ledger import Ledger

log = logging.getLogger(__name__)

FOLDERS = {"kept": "kept", "failed_kept": "kept", "audit": "audit", "quarantined": "quarantine", "blank_kept": "blank"}


class FrameVanished(Exception):
    """The frame is in neither the inbox nor its destination: someone else removed it."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, root: Path, inbox: Path) -> None:
        self.root = root
        self.inbox = inbox

    def destination(self, action: str, rel: str, sha256: str) -> str | None:
        """Where a frame goes for `action`, relative to the root; None for a delete.

        A name already taken by another frame gets the frame's short hash appended: never overwrite.
        """
        folder = FOLDERS.get(action)
        if folder is None:
            return None
        dest = PurePosixPath(folder) / rel
        target = self.root / dest
        if target.exists() and sha256_file(target) != sha256:
            dest = dest.with_name(f"{dest.stem}-{sha256[:8]}{dest.suffix}")
        return str(dest)

    def move(self, rel: str, dest: str, sha256: str) -> None:
        """inbox/rel -> root/dest, atomically; replay-safe."""
        src, target = self.inbox / rel, self.root / dest
        src_exists, target_exists = src.exists(), target.exists()
        if not src_exists:
            if target_exists:
                return  # a replay after a crash: already there
            raise FrameVanished(f"{src} vanished from the inbox before it could be moved to {target}")
        if target_exists:
            if sha256_file(target) != sha256:
                raise FileExistsError(errno.EEXIST, "destination holds a different file", str(target))
            self._unlink(src)  # a crash between link and unlink: finish it
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)  # never overwrites: fails if the name is taken
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                self._copy_across(src, target)
            elif exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                os.rename(src, target)  # FAT/exFAT cards have no hard links; we checked the name is free
                fsync_dir(target.parent)
                fsync_dir(src.parent)
                return
            else:
                raise
        fsync_dir(target.parent)
        self._unlink(src)

    def _copy_across(self, src: Path, target: Path) -> None:
        """Inbox on another filesystem: copy to a temporary name, fsync, then link into place."""
        partial = target.with_name(f".{target.name}.partial")
        try:
            with src.open("rb") as fin, partial.open("wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            os.link(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        src = self.inbox / rel
        self._unlink(src)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def free_mb(self) -> float:
        stats = os.statvfs(self.root if self.root.exists() else self.root.parent)
        return stats.f_bavail * stats.f_frsize / 1e6

    def prune_quarantine(self, ledger: Ledger, max_mb: float, max_days: float, min_free_mb: float) -> int:
        """Drop quarantined blanks: older than max_days, over max_mb in total (oldest first), and
        while free space is under min_free_mb. Returns how many were removed."""
        rows = ledger.quarantined()
        total_mb = sum(size for *_, size in rows) / 1e6
        oldest_allowed = datetime.now(UTC) - timedelta(days=max_days)
        removed = 0
        for frame_id, dest, done_at, size in rows:
            too_old = datetime.fromisoformat(done_at) < oldest_allowed
            too_big = total_mb > max_mb
            too_full = self.free_mb() < min_free_mb
            if not (too_old or too_big or too_full):
                break  # rows are oldest first: the rest are younger and within the caps
            why = (
                "older than store.quarantine_max_days"
                if too_old
                else ("over store.quarantine_max_mb" if too_big else "disk under store.min_free_mb")
            )
            (self.root / dest).unlink(missing_ok=True)
            ledger.expire(frame_id, f"quarantine pruned: {why}")
            total_mb -= size / 1e6
            removed += 1
        if removed:
            log.info("quarantine: removed %d oldest blank frame(s)", removed)
        return removed
