"""`blankfilter monitor`: the HTTP API in-process (a real server on a free port, no MQTT): the JSON
shapes, the security headers, the token and Host checks, the CSV export, thumbnails, the live
stream; and the command's refusals (non-loopback without a token, a password in the URL)."""

from __future__ import annotations

import csv
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env
from test_monitor_store import T0, make_event, make_status, publish, thumbnail

from dashboard import web
from dashboard.ingest import Ingestor
from dashboard.live import Broadcaster
from dashboard.store import Store

TOKEN = "s3cret-token-0123456789abcdef"
Get = Callable[..., tuple[int, dict[str, str], bytes]]


class Server:
    def __init__(self, tmp_path: Path, token: str | None = None) -> None:
        self.store = Store(tmp_path / "monitor.db")
        self.hub = Broadcaster()
        self.app = web.App(self.store, self.hub, token=token)
        self.server = web.make_server(self.app, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        if token is None:
            self.app.allowed_hosts = web.loopback_hosts(self.port)
        self.ingestor = Ingestor(self.store, self.hub.publish)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{self.port}", **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def close(self) -> None:
        self.hub.close()
        self.server.shutdown()
        self.server.server_close()
        self.store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.close()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "locked", token=TOKEN)
    yield s
    s.close()


def fill(s: Server) -> dict[str, Any]:
    jpeg = thumbnail()
    first = make_event(thumb=jpeg, frames=3)
    publish(s.ingestor, "trap-01", "event", first)
    publish(s.ingestor, "trap-01", "event", make_event(burst="b2", ts=T0 + 7200, file="=1+1"))
    publish(s.ingestor, "trap-02", "event", make_event(trap="trap-02", burst="x", ts=T0 + 86400))
    publish(s.ingestor, "trap-01", "status", make_status())
    publish(s.ingestor, "trap-01", "availability", "online")
    publish(s.ingestor, "trap-01", "event", "{broken")
    return first


def test_page_and_api_have_the_security_headers(server: Server) -> None:
    for path in ("/", "/app.js", "/app.css", "/api/state", "/api/events", "/nope"):
        status, headers, _ = server.get(path)
        assert headers["x-content-type-options"] == "nosniff", path
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    status, headers, body = server.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="app.js" defer></script>' in body and body.count(b"<script") == 1  # no inline script
    assert server.get("/app.js")[1]["content-type"].startswith("text/javascript")
    assert b"innerHTML" not in server.get("/app.js")[2]  # data goes in as text only
    assert server.get("/nope")[0] == 404


def test_json_shapes(server: Server) -> None:
    first = fill(server)
    status, headers, body = server.get("/api/state")
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
    state = json.loads(body)
    assert set(state) == {"now", "broker", "traps", "counters", "stale_after_s", "recall"}
    assert [c["trap"] for c in state["traps"]] == ["trap-01", "trap-02"]
    card = state["traps"][0]
    assert card["availability"] == "online" and card["outbox_depth"] == 0 and card["events"] == 2
    assert state["traps"][1]["availability"] is None and state["traps"][1]["heartbeat_at"] is None
    assert state["counters"]["malformed"]["not JSON"]["count"] == 1

    events = json.loads(server.get("/api/events?trap=trap-01")[2])["events"]
    assert [e["burst"] for e in events] == ["b2", "b1"]
    e = events[1]
    assert set(e) == {"seq", "event_id", "trap", "burst", "first_frame_at", "last_frame_at", "frames", "files",
                      "max_score", "unscored_frames", "cutoff", "model", "received_at", "thumbnail"}  # fmt: skip
    assert e["event_id"] == first["event_id"] and e["frames"] == 3 and e["first_frame_at"] == first["first_frame_at"]
    paged = json.loads(server.get(f"/api/events?limit=1&before={events[0]['seq']}&trap=trap-01")[2])["events"]
    assert [p["burst"] for p in paged] == ["b1"]

    status, headers, jpeg = server.get("/" + e["thumbnail"]["url"])
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpeg == thumbnail()[0]
    assert server.get(f"/api/thumbnails/{events[0]['event_id']}.jpg")[0] == 404  # it had none
    assert server.get("/api/thumbnails/../../etc/passwd")[0] == 404

    activity = json.loads(server.get("/api/activity")[2])
    assert activity["hour_of_day"]["trap-01"][17] == 1 and activity["hour_of_day"]["trap-01"][19] == 1
    assert activity["per_day"] == [{"day": "2006-02-10", "trap": "trap-01", "count": 2},
                                   {"day": "2006-02-11", "trap": "trap-02", "count": 1}]  # fmt: skip
    assert json.loads(server.get("/api/activity?from=2006-02-11&to=2006-02-11")[2])["per_day"] == [
        {"day": "2006-02-11", "trap": "trap-02", "count": 1}
    ]
    for bad in ("/api/events?trap=%3Cscript%3E", "/api/events?from=yesterday", "/api/events?limit=0",
                "/api/activity?to=2006-13-01", "/api/events?" + "&".join(f"a{i}=1" for i in range(30))):  # fmt: skip
        assert server.get(bad)[0] == 400, bad


def test_csv_export(server: Server) -> None:
    fill(server)
    status, headers, body = server.get("/api/events.csv?trap=trap-01")
    assert status == 200 and headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"] == 'attachment; filename="blankfilter-events-trap-01.csv"'
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["burst"] for r in rows] == ["b1", "b2"] and rows[0]["thumbnail"] == "yes" and rows[0]["frames"] == "3"
    assert rows[1]["first_file"] == "'=1+1"  # a formula from MQTT stays text in a spreadsheet


def test_csv_export_refuses_a_trap_id_with_a_trailing_newline_instead_of_putting_it_in_a_header(
    server: Server,
) -> None:
    fill(server)
    for trap in ("trap-01%0A", "trap-01%0D%0ASet-Cookie:%20x=1", "trap-01%0A%0A"):
        status, headers, _ = server.get(f"/api/events.csv?trap={trap}")
        assert status == 400, (trap, status, headers)
        assert "content-disposition" not in headers and "set-cookie" not in headers, headers
        assert server.get(f"/api/events?trap={trap}")[0] == 400, trap


def test_numbers_and_days_in_a_query_take_ascii_digits_only(server: Server) -> None:
    fill(server)
    for bad in ("/api/events?limit=%C2%B2", "/api/events?limit=%D9%A3", "/api/events?limit=5%0A",
                "/api/events?from=2006-02-10%0A", "/api/activity?to=%D9%A2%D9%A0%D9%A0%D9%A6-02-10"):  # fmt: skip
        assert server.get(bad)[0] == 400, bad
    assert server.get("/api/events?limit=5&from=2006-02-10")[0] == 200


def test_loopback_without_token_answers_loopback_names_only(server: Server) -> None:
    assert server.get("/api/state", {"Host": f"localhost:{server.port}"})[0] == 200
    status, _, body = server.get("/api/state", {"Host": "attacker.example"})  # DNS rebinding
    assert status == 421 and b"loopback" in body


def test_token_is_required_when_set(locked: Server) -> None:
    fill(locked)
    for path in ("/", "/app.js", "/api/state", "/api/events.csv", "/api/stream"):
        status, headers, _ = locked.get(path)
        assert status == 401 and headers["www-authenticate"] == "Bearer", path
    assert locked.get("/api/state", {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
    assert locked.get("/api/state", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert locked.get("/api/state", {"Host": "dashboard.example:8080", "Authorization": f"Bearer {TOKEN}"})[0] == 200
    # Opening the page with ?token= sets an HttpOnly cookie and takes the token out of the address bar.
    status, headers, _ = locked.get(f"/?token={TOKEN}")
    assert status == 303 and headers["location"] == "./"
    assert headers["set-cookie"] == f"bf_token={TOKEN}; HttpOnly; SameSite=Strict; Path=/"
    assert locked.get("/api/events.csv", {"Cookie": f"bf_token={TOKEN}"})[0] == 200
    assert locked.get("/api/state", {"Cookie": "bf_token=nope"})[0] == 401
    status, headers, _ = locked.get("/?token=x%0d%0aSet-Cookie:%20evil=1")  # header injection: refused
    assert status == 401 and "evil" not in json.dumps(headers)


def test_live_stream_pushes_events(server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    reader = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += reader.readline()
    assert b"200" in head.split(b"\r\n")[0] and b"text/event-stream" in head and b"nosniff" in head
    assert reader.readline() == b"retry: 2000\n"
    server.app.set_broker(True, "connected")
    publish(server.ingestor, "trap-01", "event", make_event(burst="<b>live</b>"))
    lines = []
    while len([x for x in lines if x.startswith(b"event: ")]) < 4:
        line = reader.readline()
        assert line, "stream closed"
        lines.append(line.rstrip(b"\n"))
    kinds = [x[7:].decode() for x in lines if x.startswith(b"event: ")]
    assert kinds == ["broker", "broker", "event", "trap"]
    event = json.loads(lines[lines.index(b"event: event") + 1][6:])
    assert event["burst"] == "<b>live</b>"  # JSON: the page puts it in as text
    assert server.hub.clients == 1
    sock.close()


def run_monitor(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dashboard", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=cli_env(), check=False)


def test_monitor_refuses_unsafe_settings(tmp_path: Path) -> None:
    db = ["--db", str(tmp_path / "m.db")]
    done = run_monitor("--broker", "mqtt://127.0.0.1:1", "--listen", "0.0.0.0:0", *db)
    assert done.returncode == 2
    assert "refusing to serve the traps' data on a non-loopback address without an access token" in done.stderr
    assert "--token-file" in done.stderr and "--insecure" in done.stderr
    done = run_monitor("--broker", "mqtt://dashboard:hunter2@127.0.0.1", *db)
    assert done.returncode == 2 and "--password-file" in done.stderr and "hunter2" not in done.stderr
    (tmp_path / "short").write_text("abc\n")
    done = run_monitor("--broker", "mqtt://127.0.0.1", "--token-file", str(tmp_path / "short"), *db)
    assert done.returncode == 2 and "16 to 256 characters" in done.stderr
    done = run_monitor("--broker", "http://127.0.0.1", *db)
    assert done.returncode == 2 and "mqtt://HOST[:PORT]" in done.stderr


def test_listen_port_takes_ascii_digits_only(tmp_path: Path) -> None:
    done = run_monitor("--broker", "mqtt://127.0.0.1:1", "--listen", "127.0.0.1:٨٠٨٠", "--db", str(tmp_path / "m.db"))
    assert done.returncode == 2 and "--listen" in done.stderr and "expected HOST:PORT" in done.stderr, done.stderr
