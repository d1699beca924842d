"""Fan-out of live updates to the open pages (one queue per server-sent-events connection).

A page that does not keep up (its queue is full) is dropped rather than slowing the MQTT thread: its
browser reconnects by itself and reloads the state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from typing import Any

log = logging.getLogger(__name__)

CLOSE = None  # the sentinel that ends a stream


class Broadcaster:
    def __init__(self, max_clients: int = 32, backlog: int = 256) -> None:
        self.max_clients, self.backlog = max_clients, backlog
        self._clients: set[queue.Queue[str | None]] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> queue.Queue[str | None] | None:
        """A queue of ready-to-send SSE messages, or None when too many pages are open."""
        with self._lock:
            if len(self._clients) >= self.max_clients:
                return None
            q: queue.Queue[str | None] = queue.Queue(self.backlog)
            self._clients.add(q)
            return q

    def unsubscribe(self, q: queue.Queue[str | None]) -> None:
        with self._lock:
            self._clients.discard(q)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def publish(self, kind: str, data: Any) -> None:
        message = sse(kind, data)
        with self._lock:
            clients = list(self._clients)
        for q in clients:
            try:
                q.put_nowait(message)
            except queue.Full:
                log.info("a page does not keep up with the live feed: dropped (it reconnects)")
                self.unsubscribe(q)
                _force(q, CLOSE)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients), set()
        for q in clients:
            _force(q, CLOSE)


def _force(q: queue.Queue[str | None], item: str | None) -> None:
    """Put even into a full queue (dropping its oldest): used to end a stream."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                q.get_nowait()


def sse(kind: str, data: Any) -> str:
    """One server-sent event. JSON never contains a raw newline, so `data:` is one line."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
