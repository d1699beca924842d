"""Folder source: the camera (or its card reader, or rsync) drops JPEGs into an inbox.

inotify (through watchdog) says when a file was closed after writing; a periodic rescan catches
whatever events were missed (queue overflow, files present at start, network shares) and is the
whole mechanism when inotify is unavailable. A file counts as complete when it was closed, or when
its modification time is at least `settle_s` old.

Symbolic links are never followed, whatever they point at: the store holds a frame's bytes, never a
link, and a link must not make the trap read (and send a thumbnail of) a file outside the inbox. A
link to a file or a linked sub-folder is handed back as skipped, with a reason that says whether it
leaves the inbox; it is left where it is, and the ledger's skipped record keeps it from being
reported at every rescan. Refusing every link is simpler and as safe as following those that stay
inside the inbox: such a link only names a file the trap already judges under its own name (so a
frame is judged once), and a rule with no exceptions has no `..` or link-chain corner to get wrong.
Frames are opened with O_NOFOLLOW (`read_frame`), so a file swapped for a link after it was listed
is not read either.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_app.sources import Frame, Skipped

log = logging.getLogger(__name__)

IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload")
INOTIFY_RESCAN_S = 60.0


def read_frame(path: Path) -> tuple[bytes, os.stat_result]:
    """A frame's bytes and the stat of what was read, never through a link (O_NOFOLLOW: ELOOP) and
    never from a pipe or device (which could block the loop for good)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return fh.read(), st


def link_reason(path: Path, inbox: Path) -> str:
    """Why a link in the inbox is not followed; looks at where it points, never reads it."""
    try:
        target = os.readlink(path)
    except OSError as exc:
        target = f"? ({exc.strerror})"
    resolved = Path(os.path.realpath(path))  # follows the chain without raising on a loop
    inside = resolved.is_relative_to(Path(os.path.realpath(inbox)))
    folder = resolved.is_dir()
    what = f"a symbolic link to {'the folder ' if folder else ''}{target}"
    where = " inside the inbox: not followed" if inside else ", outside the inbox: refused, never read"
    then = "; the files under it are not judged" if folder else ""
    return f"{what}{where}{then} (links are never followed: the store holds bytes, never links)"


@dataclass
class _Seen:
    size: int
    mtime: float
    closed: bool = False


class FolderSource:
    def __init__(
        self,
        inbox: Path,
        extensions: list[str],
        recursive: bool = True,
        watch: str = "auto",
        poll_s: float = 5.0,
        settle_s: float = 2.0,
        exclude: tuple[Path, ...] = (),
    ) -> None:
        self.inbox = inbox
        self.extensions = tuple(e.lower() for e in extensions)
        self.recursive = recursive
        self.watch = watch
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.exclude = tuple(p.resolve() for p in exclude)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._waiting: dict[Path, _Seen] = {}
        self._handed: dict[Path, tuple[int, float]] = {}
        self._observer: Any = None
        self._next_scan = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        if self.watch != "poll":
            self._start_inotify()
        self._scan()

    def _start_inotify(self) -> None:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers.inotify import InotifyObserver
        except ImportError as exc:
            return self._no_inotify(f"watchdog's inotify observer is not available ({exc})")

        source = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event: FileSystemEvent) -> None:
                source._notice(event.src_path, closed=True)

            def on_created(self, event: FileSystemEvent) -> None:
                source._notice(event.src_path, closed=False)

            def on_moved(self, event: FileSystemEvent) -> None:
                source._notice(event.dest_path, closed=True)  # rename into place: complete

        try:
            observer = InotifyObserver()
            observer.schedule(Handler(), str(self.inbox), recursive=self.recursive)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit
            return self._no_inotify(f"inotify failed ({exc})")
        self._observer = observer
        rescan = max(self.poll_s, INOTIFY_RESCAN_S)
        log.info("watching %s with inotify (safety rescan every %.0f s)", self.inbox, rescan)

    def _no_inotify(self, why: str) -> None:
        if self.watch == "inotify":
            raise RuntimeError(f"source.watch = 'inotify' but {why}")
        log.warning("%s: polling %s every %.1f s instead", why, self.inbox, self.poll_s)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def wake(self) -> None:
        """End a wait in ready() now: the pipeline is stopping."""
        self._wake.set()

    # -- events and scans -------------------------------------------------------------------
    def _notice(self, raw: str | bytes, closed: bool) -> None:
        path = Path(os.fsdecode(raw))
        if not self._wanted_name(path):
            return
        try:
            st = path.lstat()  # a link is looked at, never followed
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            closed = True  # made whole in one step: reported as soon as it is seen
        elif not stat.S_ISREG(st.st_mode):
            return
        with self._lock:
            seen = self._waiting.get(path)
            if seen is None:
                self._waiting[path] = _Seen(st.st_size, st.st_mtime, closed)
            else:
                seen.size, seen.mtime, seen.closed = st.st_size, st.st_mtime, seen.closed or closed
        self._wake.set()

    def _wanted_name(self, path: Path) -> bool:
        """Dot-files and in-progress uploads are silently ignored, as are our own store folders."""
        if path.name.startswith(".") or path.name.lower().endswith(IN_PROGRESS_SUFFIXES):
            return False
        resolved = path.parent.resolve() / path.name  # not through the file itself: a link is reported
        return not any(resolved.is_relative_to(ex) for ex in self.exclude)

    def _scan(self) -> None:
        present: set[Path] = set()
        walker = os.walk(self.inbox) if self.recursive else [(str(self.inbox), [], os.listdir(self.inbox))]
        for dirpath, dirnames, filenames in walker:
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and self._wanted_name(Path(dirpath, d))]
            linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]  # not walked: reported
            dirnames[:] = [d for d in dirnames if d not in linked]
            for name in filenames + linked:
                path = Path(dirpath, name)
                if not self._wanted_name(path):
                    continue
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue
                present.add(path)
                with self._lock:
                    if self._handed.get(path) == (st.st_size, st.st_mtime) or path in self._waiting:
                        continue
                    self._waiting[path] = _Seen(st.st_size, st.st_mtime)
        with self._lock:
            for gone in [p for p in self._handed if p not in present]:
                del self._handed[gone]
        # With inotify the rescan is only a safety net: rare, so an idle trap sleeps (battery).
        interval = max(self.poll_s, INOTIFY_RESCAN_S) if self._observer is not None else self.poll_s
        self._next_scan = time.monotonic() + interval

    # -- the pipeline's side ----------------------------------------------------------------
    def ready(self, timeout: float) -> tuple[list[Frame], list[Skipped]]:
        wait = min(timeout, self._next_scan - time.monotonic(), self._until_settled())
        if wait > 0:
            self._wake.wait(wait)
        self._wake.clear()
        if time.monotonic() >= self._next_scan:
            self._scan()
        frames: list[Frame] = []
        skipped: list[Skipped] = []
        now = time.time()
        with self._lock:
            for path, seen in sorted(self._waiting.items()):
                try:
                    st = path.lstat()
                except OSError:
                    del self._waiting[path]  # gone before it settled
                    continue
                seen.size, seen.mtime = st.st_size, st.st_mtime
                link = stat.S_ISLNK(st.st_mode)
                if not (link or seen.closed or now - st.st_mtime >= self.settle_s):
                    continue
                del self._waiting[path]
                if self._handed.get(path) == (st.st_size, st.st_mtime):
                    continue
                self._handed[path] = (st.st_size, st.st_mtime)
                rel = path.relative_to(self.inbox).as_posix()
                if link:
                    skipped.append(Skipped(path, rel, link_reason(path, self.inbox), warning=True))
                elif path.suffix.lower() not in self.extensions:
                    reason = f"not a frame: extension '{path.suffix}' is not in source.extensions"
                    skipped.append(Skipped(path, rel, reason))
                else:
                    frames.append(Frame(path, rel))
        return frames, skipped

    def _until_settled(self) -> float:
        """Seconds until the first waiting file may be complete (infinity when none waits)."""
        now = time.time()
        with self._lock:
            waits = [0.0 if s.closed else self.settle_s - (now - s.mtime) for s in self._waiting.values()]
        return max(0.0, min(waits, default=float("inf")))

    def _has_waiting(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    def idle(self) -> bool:
        return not self._has_waiting()

    def release(self, path: Path) -> None:
        """Hand this file out again at the next scan (its processing could not finish)."""
        with self._lock:
            self._handed.pop(path, None)
