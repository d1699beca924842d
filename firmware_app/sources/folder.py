"""Folder source: the camera (or its card reader, or rsync) drops JPEGs into an inbox.

inotify (through watchdog) says when a file was closed after writing; a periodic rescan catches
whatever events were missed (queue overflow, files present at start, network shares) and is the
whole mechanism when inotify is unavailable. A file counts as complete when it was closed, or when
its modification time is at least `settle_s` old.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_app.sources import Frame, Skipped

log = logging.getLogger(__name__)

IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload")
INOTIFY_RESCAN_S = 60.0


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
            st = path.stat()
        except OSError:
            return
        if not path.is_file():
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
        resolved = path.resolve()
        return not any(resolved.is_relative_to(ex) for ex in self.exclude)

    def _scan(self) -> None:
        present: set[Path] = set()
        walker = os.walk(self.inbox) if self.recursive else [(str(self.inbox), [], os.listdir(self.inbox))]
        for dirpath, dirnames, filenames in walker:
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and self._wanted_name(Path(dirpath, d))]
            for name in filenames:
                path = Path(dirpath, name)
                if not self._wanted_name(path):
                    continue
                try:
                    st = path.stat()
                except OSError:
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
                    st = path.stat()
                except OSError:
                    del self._waiting[path]  # gone before it settled
                    continue
                seen.size, seen.mtime = st.st_size, st.st_mtime
                if not (seen.closed or now - st.st_mtime >= self.settle_s):
                    continue
                del self._waiting[path]
                if self._handed.get(path) == (st.st_size, st.st_mtime):
                    continue
                self._handed[path] = (st.st_size, st.st_mtime)
                rel = path.relative_to(self.inbox).as_posix()
                if path.suffix.lower() not in self.extensions:
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
