"""What a route module (dashboard.reviewapi) may use of the web server that calls it: the request
handler's reply helpers and the monitor's parts. `web.Handler` and `web.App` fulfil these protocols;
a route module imports this, never `web`, so the server and its routes do not import each other."""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from io import BufferedIOBase
from typing import Protocol

from dashboard.fieldrecall import FieldRecall
from dashboard.live import Broadcaster

Publish = Callable[[str, bytes], bool]  # (topic, payload) -> the broker acknowledged it


class RouteApp(Protocol):
    @property
    def recall(self) -> FieldRecall | None: ...
    @property
    def hub(self) -> Broadcaster: ...
    @property
    def publish(self) -> Publish | None: ...
    @property
    def prefix(self) -> str: ...


class RouteServer(Protocol):
    @property
    def app(self) -> RouteApp: ...


class RouteHandler(Protocol):
    """The request being answered (the Host and the token are checked before a route sees it)."""

    @property
    def server(self) -> RouteServer: ...
    @property
    def headers(self) -> Message: ...
    @property
    def rfile(self) -> BufferedIOBase: ...
    @property
    def who(self) -> str: ...
    def bearer_authorised(self) -> bool: ...
    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None: ...
    def _json(self, data: object, status: int = 200) -> None: ...
    def _text(self, status: int, text: str, extra: dict[str, str] | None = None) -> None: ...
    def _int(self, query: dict[str, list[str]], key: str, default: int, low: int, high: int) -> int: ...
