"""The web side: the page (one HTML file, app.js, app.css), a small JSON API, the CSV export, the
thumbnails and a server-sent-events stream, on the standard library's ThreadingHTTPServer.

Security, for a page that shows what any device on the broker may publish:
- every response carries a strict Content-Security-Policy (scripts only from this origin, no inline
  script or style, no frames), `X-Content-Type-Options: nosniff`, no referrer; the page puts data in
  the DOM with textContent only;
- with a token (`--token-file`) every request needs it: `Authorization: Bearer TOKEN`, or the cookie
  set when the page is opened once as `/?token=TOKEN` (HttpOnly, SameSite=Strict);
- without a token the server is on loopback (the CLI refuses otherwise unless --insecure) and only
  answers requests whose Host is a loopback name, so a web site cannot reach it by DNS rebinding.

GET /                      the page                GET /api/state     traps, broker, counters
GET /api/events            event summaries         GET /api/activity  hour of day per trap, counts per day
GET /api/events.csv        CSV export              GET /api/stream    server-sent events: event, trap, counters, broker
GET /api/thumbnails/ID.jpg a checked JPEG
Filters (events, activity, CSV): trap=ID, from=YYYY-MM-DD, to=YYYY-MM-DD (the trap's day, inclusive).

The audit review (dashboard.reviewapi): GET /review (the page), /api/review/next, /api/audits/ID,
/api/audits/ID.jpg, /api/reviews, /api/recall, /api/recall.csv, /api/labels.csv; POST /api/reviews,
/api/reviews/undo, /api/cutoff. A POST needs what a GET needs (the token, or a loopback Host) and
also comes from this page: its Origin (or, without one, its Referer) must be this server's, and its
body JSON (a cross-site form cannot send that without a CORS preflight, which is never granted).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import queue
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import date
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dashboard import contracts, csvexport, reviewapi
from dashboard.fieldrecall import FieldRecall
from dashboard.live import Broadcaster, sse
from dashboard.reviews import Reviews
from dashboard.routes import Publish
from dashboard.store import Store, now_iso

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")  # fmt: skip
COOKIE = "bf_token"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"), "/app.css": ("app.css", "text/css; charset=utf-8"),
          "/favicon.svg": ("favicon.svg", "image/svg+xml"),
          "/review": ("review.html", "text/html; charset=utf-8"),
          "/review.js": ("review.js", "text/javascript; charset=utf-8")}  # fmt: skip
THUMB = re.compile(r"/api/thumbnails/([0-9a-f]{32})\.jpg")  # fullmatch, as every pattern here
DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)  # fullmatch: `$` would let a trailing newline in
KEEPALIVE_S = 15.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class App:
    store: Store
    hub: Broadcaster
    token: str | None = None
    stale_after_s: float = 900.0
    broker: dict[str, Any] = field(default_factory=lambda: {"url": "", "connected": False, "since": None})
    allowed_hosts: set[str] | None = None  # Host headers accepted; None: any (a token guards the server)
    static: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    recall: FieldRecall | None = None  # the audit review's figures (made from the store when not given)
    publish: Publish | None = None  # (topic, payload) -> delivered: the confirmed cutoffs
    prefix: str = contracts.DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if self.recall is None:
            self.recall = FieldRecall(self.store, Reviews(self.store))
        folder = resources.files("dashboard") / "static"
        for path, (name, ctype) in STATIC.items():
            self.static[path] = ((folder / name).read_bytes(), ctype)
        self._broker_lock = threading.Lock()

    def set_broker(self, connected: bool, why: str) -> None:
        with self._broker_lock:
            changed = connected != self.broker["connected"] or self.broker["since"] is None
            if changed:
                self.broker = {**self.broker, "connected": connected, "since": now_iso()}
            self.broker = {**self.broker, "why": why}
            state = dict(self.broker)
        if changed:
            self.hub.publish("broker", state)

    def state(self) -> dict[str, Any]:
        assert self.recall is not None
        return {"now": now_iso(), "broker": dict(self.broker), "traps": self.store.traps(),
                "counters": self.store.counters(), "stale_after_s": self.stale_after_s,
                "recall": self.recall.cameras()}  # fmt: skip


class BadRequest(Exception):
    pass


class MonitorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    server: MonitorServer
    server_version = "blankfilter-monitor"
    sys_version = ""
    timeout = 30  # a client that stops reading (a stalled live stream) is dropped

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ---------------------------------------------------------------------------------
    def _headers(self, status: int, ctype: str, length: int | None = None, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self._headers(status, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data, separators=(",", ":")).encode(), "application/json; charset=utf-8")

    def _text(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8", extra)

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        token = self.server.app.token
        if token is None:
            return True
        offered: list[str] = []
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered.append(auth[7:].strip())
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        if COOKIE in cookie:
            offered.append(cookie[COOKIE].value)
        offered += query.get("token", [])[:1]
        return any(hmac.compare_digest(t.encode(), token.encode()) for t in offered)

    def bearer_authorised(self) -> bool:
        """The token came in an Authorization header: a script's request, which no other web site can
        make a browser send (unlike the cookie), so it needs no same-origin check."""
        token, auth = self.server.app.token, self.headers.get("Authorization", "")
        if token is None or not auth.startswith("Bearer "):
            return False
        return hmac.compare_digest(auth[7:].strip().encode(), token.encode())

    def _offered_in_query(self, query: dict[str, list[str]]) -> bool:
        token = self.server.app.token or ""
        return any(hmac.compare_digest(t.encode(), token.encode()) for t in query.get("token", [])[:1])

    # -- requests ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def _admitted(self) -> tuple[Any, dict[str, list[str]]] | None:
        """The Host check and the token, for every method: (url, query), or None when answered."""
        app = self.server.app
        host = self.headers.get("Host", "")
        if app.allowed_hosts is not None and host.lower() not in app.allowed_hosts:
            self._text(HTTPStatus.MISDIRECTED_REQUEST, "this monitor answers on its loopback address only")
            return None
        url = urlsplit(self.path)
        try:
            query = parse_qs(url.query, max_num_fields=20)
        except ValueError:
            self._text(HTTPStatus.BAD_REQUEST, "too many query parameters")
            return None
        if not self._authorised(query):
            self._text(HTTPStatus.UNAUTHORIZED, "token required: open /?token=TOKEN once (the --token-file's "
                       "content), or send Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})  # fmt: skip
            return None
        return url, query

    @property
    def who(self) -> str:
        """Who reviews: the token's holder, or whoever sits at a loopback-only monitor."""
        return "token" if self.server.app.token else "local"

    def do_POST(self) -> None:
        admitted = self._admitted()
        if admitted is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            reviewapi.post(self, admitted[0].path)

    def do_GET(self) -> None:
        app = self.server.app
        admitted = self._admitted()
        if admitted is None:
            return
        url, query = admitted
        if url.path == "/" and app.token and self._offered_in_query(query):
            # Remember the token in a cookie and take it out of the address bar. (Only the real token,
            # checked and restricted to URL-safe characters by the CLI, ever goes into the header.)
            cookie = f"{COOKIE}={app.token}; HttpOnly; SameSite=Strict; Path=/"
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "./", "Set-Cookie": cookie})
            return
        try:
            self._route(url.path, query)
        except BadRequest as exc:
            self._text(HTTPStatus.BAD_REQUEST, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        app = self.server.app
        if path in app.static:
            body, ctype = app.static[path]
            self._send(200, body, ctype)
        elif path == "/api/state":
            self._json(app.state())
        elif path == "/api/events":
            trap, since, until = self._filters(query)
            limit = self._int(query, "limit", 100, 1, 1000)
            before = self._int(query, "before", 0, 0, 2**62) or None
            self._json({"events": app.store.events(trap, since, until, limit, before)})
        elif path == "/api/activity":
            trap, since, until = self._filters(query)
            self._json({"hour_of_day": app.store.hour_of_day(trap, since, until),
                        "per_day": app.store.per_day(trap, since, until)})  # fmt: skip
        elif path == "/api/events.csv":
            self._csv(*self._filters(query))
        elif path == "/api/stream":
            self._stream()
        elif reviewapi.get(self, path, query):
            pass
        elif m := THUMB.fullmatch(path):
            data = app.store.thumbnail(m.group(1))
            if data is None:
                self._text(HTTPStatus.NOT_FOUND, "no thumbnail")
            else:
                self._send(200, data, "image/jpeg")
        else:
            self._text(HTTPStatus.NOT_FOUND, "not found")

    @staticmethod
    def _int(query: dict[str, list[str]], key: str, default: int, low: int, high: int) -> int:
        text = query.get(key, [""])[0]
        if not text:
            return default
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:  # "²".isdigit() is True
            raise BadRequest(f"{key}: a whole number from {low} to {high}")
        return int(text)

    @staticmethod
    def _filters(query: dict[str, list[str]]) -> tuple[str | None, str | None, str | None]:
        trap = query.get("trap", [""])[0] or None
        if trap is not None and not contracts.is_trap_id(trap):
            raise BadRequest("trap: not a trap id")
        days = []
        for key in ("from", "to"):
            text = query.get(key, [""])[0] or None
            if text is not None:
                try:
                    if not DAY.fullmatch(text):
                        raise ValueError
                    date.fromisoformat(text)
                except ValueError:
                    raise BadRequest(f"{key}: a day as YYYY-MM-DD") from None
            days.append(text)
        return trap, days[0], days[1]

    def _csv(self, trap: str | None, since: str | None, until: str | None) -> None:
        body = csvexport.to_text(self.server.app.store.export_rows(trap, since, until)).encode("utf-8")
        name = "blankfilter-events" + "".join(f"-{v}" for v in (trap, since, until) if v) + ".csv"
        self._send(200, body, "text/csv; charset=utf-8", {"Content-Disposition": f'attachment; filename="{name}"'})

    def _stream(self) -> None:
        app = self.server.app
        q = app.hub.subscribe()
        if q is None:
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, "too many open pages")
            return
        try:
            self._headers(200, "text/event-stream; charset=utf-8", extra={"X-Accel-Buffering": "no"})
            if self.command == "HEAD":
                return
            self.wfile.write(("retry: 2000\n\n" + sse("broker", app.broker)).encode())
            self.wfile.flush()
            while True:
                try:
                    message = q.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    message = ": keep-alive\n\n"
                if message is None:
                    break
                self.wfile.write(message.encode())
                self.wfile.flush()
        except OSError:  # the page went away
            pass
        finally:
            app.hub.unsubscribe(q)
            self.close_connection = True


def loopback_hosts(port: int) -> set[str]:
    names = ("127.0.0.1", "localhost", "[::1]")
    return {f"{n}:{port}" for n in names} | ({*names} if port == 80 else set())


def make_server(app: App, host: str, port: int) -> MonitorServer:
    return MonitorServer((host.strip("[]"), port), app)
