"""File operations on the trap's card: atomic, fsync'd, idempotent, never overwriting.

Layout under `store.root`: kept/ (non-blank and fail-open frames), audit/ (the blank sample people
check for misses), quarantine/ (blanks held back for a while), blank/ (blanks when discard=keep).
Each keeps the frame's path relative to the inbox, so camera sub-folders survive.

Every operation can be replayed after a crash: a move whose source is gone but whose destination
holds the right bytes is done; a delete of a missing file is done. Frames that exist only in memory
(a camera source) are written the same way: to a temporary name, fsync'd, then linked into place,
so a name is never overwritten. What is kept how long, and what goes when the card fills, is
`retention.py`'s job.

The store holds bytes, never symbolic links: the folder source refuses links in the inbox, and a
move refuses one that got this far (it would store the link, and the bytes would stay outside).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from firmware_app.actions import FOLDERS, Action
from firmware_app.hashing import sha256_bytes, sha256_file

log = logging.getLogger(__name__)

# link() cannot be used here (FAT/exFAT cards have no hard links): rename after checking the name
NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


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

    def destination(self, action: Action, rel: str, sha256: str) -> str | None:
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
        if src.is_symlink():  # the store holds bytes, never links (the source refuses them first)
            raise OSError(errno.ELOOP, "a symbolic link, not a frame's bytes: never stored", str(src))
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
            elif exc.errno in NO_LINKS:
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
            with os.fdopen(os.open(src, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fin, partial.open("wb") as fout:
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

    def write_new(self, action: Action, rel: str, data: bytes) -> tuple[str, str]:
        """Write a frame that exists only in memory to `action`'s folder; (dest, sha256 of the bytes).

        Atomic and never overwriting: a temporary file, fsync, then a link to the final name (which
        fails if the name is taken; then the frame's short hash goes into its name). Writing the same
        bytes to the same name again (a replay) is a no-op.
        """
        sha = sha256_bytes(data)
        for _ in range(2):  # the second pass: someone took the name between destination() and link()
            dest = self.destination(action, rel, sha)
            if dest is None:
                raise ValueError(f"action {action} writes no file")
            target = self.root / dest
            if target.exists():
                return dest, sha  # same bytes already there (destination() checked)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            try:
                with partial.open("wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(partial, target)
                except OSError as exc:
                    if exc.errno == errno.EEXIST:
                        continue
                    if exc.errno not in NO_LINKS:
                        raise
                    if target.exists():
                        continue
                    os.rename(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            fsync_dir(target.parent)
            return dest, sha
        raise FileExistsError(errno.EEXIST, "destination name taken twice while writing", str(self.root / rel))

    def clean_partials(self) -> int:
        """Remove temporary files a crash left mid-write (`.NAME.partial`): never a finished frame."""
        removed = 0
        for folder in sorted(set(FOLDERS.values())):
            for partial in (self.root / folder).rglob(".*.partial"):
                partial.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d unfinished temporary file(s) under %s", removed, self.root)
        return removed

    def free_mb(self) -> float:
        stats = os.statvfs(self.root if self.root.exists() else self.root.parent)
        return stats.f_bavail * stats.f_frsize / 1e6
