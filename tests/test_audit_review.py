"""The monitor's audit review in-process: `audit` messages checked and de-duplicated, the review
queue with undo, who and when, the POST guards (token, loopback Host, Origin/Referer, JSON body),
the exact binomial bound against scipy, the figure, proposals, the exports and the Labels CSV
read back by `blankfilter tune/eval`'s own reader."""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_monitor_api import TOKEN, Server
from test_monitor_store import T0, make_status, publish, thumbnail

from convert.labels import read_labels
from dashboard import recall
from dashboard.contracts import CUTOFF_RANGE
from dashboard.ingest import Ingestor
from dashboard.reviews import Reviews
from dashboard.store import DUPLICATE, MALFORMED, Store
from firmware_app.events import payloads
from firmware_app.events.payloads import iso

HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'


def make_audit(burst: str, camera: str = "cam1", score: float = 0.05, trap: str = "trap-01") -> dict[str, Any]:
    data, width, height = thumbnail()
    audit = {
        "schema": "blankfilter-audit/1",
        "id": (burst.encode().hex() + "0" * 32)[:32],
        "trap": trap,
        "camera": camera,
        "burst": burst,
        "first_capture": iso(T0),
        "last_capture": iso(T0 + 2),
        "frames": [frame(f"audit/{camera}/{burst}-{i}.jpg", score / (i + 1)) for i in range(2)],
        "context_state": None,
        "cutoffs": {"cutoff": 0.2, "context_cutoff": None},
        "thumbnail": {"jpeg_base64": base64.b64encode(data).decode(), "width": width, "height": height},
    }
    return audit


def frame(file: str, score: float) -> dict[str, Any]:
    return {"file": file, "score": score, "context_score": None, "context_state": None, "action": "audit"}


def counts_status(discarded: int, audited: int, kept: int, camera: str = "cam1") -> dict[str, Any]:
    status = make_status()
    status.update({"discarded_bursts": {camera: discarded}, "audited_bursts": {camera: audited},
                   "kept_bursts": {camera: kept}})  # fmt: skip
    return status


class Client:
    """The server's HTTP API as the review page uses it: same Origin, JSON bodies."""

    def __init__(self, server: Server, headers: dict[str, str] | None = None) -> None:
        self.server, self.headers = server, headers or {}
        self.origin = f"http://127.0.0.1:{server.port}"

    def request(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        sent = {"Host": f"127.0.0.1:{self.server.port}", **self.headers, **headers}
        if method == "POST":
            sent = {"Origin": self.origin, "Content-Type": "application/json", **sent}
            sent = {k: v for k, v in sent.items() if v != ""}
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        out = response.status, response.read()
        conn.close()
        return out

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.request(method, path, body)
        assert status == 200, (status, data)
        return json.loads(data)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.close()


# -- the bound ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("misses", "reviewed"), [(0, 50), (1, 50), (5, 200), (0, 59), (0, 299), (3, 7), (7, 7)])
def test_the_upper_bound_is_the_exact_clopper_pearson_one_of_scipy(misses: int, reviewed: int) -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy is in the dev extra: pip install -e '.[dev]'")
    ours = recall.upper_bound(misses, reviewed)
    via_beta = 1.0 if misses == reviewed else float(stats.beta.ppf(0.95, misses + 1, reviewed - misses))
    # one-sided 95 % upper = the upper end of the two-sided 90 % exact interval
    via_test = stats.binomtest(misses, reviewed).proportion_ci(confidence_level=0.90, method="exact").high
    assert ours == pytest.approx(via_beta, rel=1e-9, abs=1e-12)
    assert ours == pytest.approx(via_test, rel=1e-9, abs=1e-12)


def test_zero_misses_need_59_reviews_for_5_percent_and_299_for_1_percent() -> None:
    assert recall.reviews_needed(0.05) == 59 and recall.reviews_needed(0.01) == 299
    assert recall.upper_bound(0, 59) < 0.05 < recall.upper_bound(0, 58)  # type: ignore[operator]
    assert recall.upper_bound(0, 299) < 0.01 < recall.upper_bound(0, 298)  # type: ignore[operator]
    assert recall.upper_bound(0, 0) is None


def test_recall_lower_bound_is_kept_over_kept_plus_upper_share_of_discarded() -> None:
    upper = recall.upper_bound(1, 50)
    assert upper is not None
    assert recall.recall_lower(400, 2000, upper) == pytest.approx(400 / (400 + upper * 2000))
    assert recall.recall_lower(None, 2000, upper) is None


def test_a_proposal_sits_below_the_lowest_missed_score_and_ignores_context_decided_misses() -> None:
    p = recall.propose_cutoff([0.12, 0.08, None, 0.5], current=0.2, margin=0.1)
    assert p.cutoff == 0.072 and p.lowest_missed_score == 0.08
    assert recall.propose_cutoff([0.5], current=0.2, margin=0.1).cutoff is None  # above the cutoff: context did it
    # three significant digits, cut down (a miss at 0.00298, the 1.2.0 card's cutoff, still gets one) ...
    assert recall.propose_cutoff([0.00298], current=0.2, margin=0.1).cutoff == 0.00268
    # ... and never under the lowest the trap accepts, which is the trap's own range
    assert recall.propose_cutoff([0.0005], current=0.2, margin=0.1).cutoff == CUTOFF_RANGE[0]
    assert CUTOFF_RANGE == payloads.CUTOFF_RANGE
    assert recall.propose_cutoff([0.08], current=0.072, margin=0.1).cutoff is None  # already in force


# -- ingest -------------------------------------------------------------------------------------------
def test_audits_are_checked_against_the_schema_and_deduplicated_on_id(tmp_path: Path) -> None:
    store = Store(tmp_path / "monitor.db")
    ingestor = Ingestor(store)
    assert publish(ingestor, "trap-01", "audit", make_audit("b1")) == "audit"
    assert publish(ingestor, "trap-01", "audit", make_audit("b1")) == "duplicate"
    assert publish(ingestor, "trap-02", "audit", make_audit("b2")).startswith("malformed")  # speaks for trap-01
    bad = make_audit("b3")
    del bad["cutoffs"]
    assert publish(ingestor, "trap-01", "audit", bad) == "malformed: audit schema: (top) (required)"
    assert publish(ingestor, "trap-01", "audit", make_audit("b4", camera="cam#1")).startswith("malformed")
    counters = store.counters()
    assert counters[DUPLICATE] == {"audit id": counters[DUPLICATE]["audit id"]}
    assert counters[DUPLICATE]["audit id"]["count"] == 1
    assert counters[MALFORMED]["audit: trap_id is not the topic's"]["count"] == 1
    queued, waiting = ingestor.recall.reviews.queue()
    assert waiting == 1 and queued is not None and queued["id"] == make_audit("b1")["id"]
    assert ingestor.recall.reviews.thumbnail(queued["id"]) == thumbnail()[0]
    store.close()


def test_a_version_1_monitor_database_gains_the_review_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE events (event_id TEXT PRIMARY KEY, trap TEXT NOT NULL, first_frame_at TEXT NOT NULL,"
                     " day TEXT NOT NULL, hour INTEGER NOT NULL, payload TEXT NOT NULL, received_at TEXT NOT NULL,"
                     " thumbnail BLOB); PRAGMA user_version=1;")  # fmt: skip
    db.close()
    store = Store(path)
    reviews = Reviews(store)
    assert reviews.add_audit(make_audit("b1"), None)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == 2
    store.close()


# -- the review API -----------------------------------------------------------------------------------
def test_reviewing_takes_one_burst_at_a_time_records_who_and_when_and_undoes(server: Server) -> None:
    for i in range(3):
        publish(server.ingestor, "trap-01", "audit", make_audit(f"b{i}", score=0.1 + i / 100))
    client = Client(server)
    first = client.json("GET", "/api/review/next")
    assert first["waiting"] == 3 and first["audit"]["burst"] == "b0" and first["audit"]["review"] is None
    done = client.json("POST", "/api/reviews", {"id": first["audit"]["id"], "verdict": "missed", "note": " a vole "})
    assert done["audit"]["review"]["verdict"] == "missed" and done["audit"]["review"]["note"] == "a vole"
    assert done["audit"]["review"]["who"] == "local" and done["audit"]["review"]["at"].endswith("Z")
    second = client.json("GET", "/api/review/next")
    assert second["waiting"] == 2 and second["audit"]["burst"] == "b1"
    assert client.json("POST", "/api/reviews/undo", {})["undone"] == first["audit"]["id"]
    assert client.json("GET", "/api/review/next")["audit"]["burst"] == "b0"
    assert client.json("POST", "/api/reviews/undo", {})["undone"] is None
    recent = client.json("GET", "/api/reviews")["reviews"]
    assert [(r["verdict"], r["undone_at"] is not None) for r in recent] == [("missed", True)]


def test_a_reviewer_who_gives_a_name_is_recorded_by_it_and_undoes_only_their_own(server: Server) -> None:
    for i in range(2):
        publish(server.ingestor, "trap-01", "audit", make_audit(f"b{i}"))
    client = Client(server)
    first = client.json("GET", "/api/review/next")["audit"]["id"]
    ana = client.json("POST", "/api/reviews", {"id": first, "verdict": "blank", "reviewer": " Ana "})
    assert ana["audit"]["review"]["who"] == "Ana (local)"
    second = client.json("GET", "/api/review/next")["audit"]["id"]
    client.json("POST", "/api/reviews", {"id": second, "verdict": "missed", "reviewer": "Ben"})
    assert client.json("POST", "/api/reviews/undo", {"reviewer": "Ana"})["undone"] == first  # not Ben's
    assert client.request("POST", "/api/reviews", {"id": second, "verdict": "blank", "reviewer": "a\nb"})[0] == 400
    assert client.request("POST", "/api/reviews", {"id": second, "verdict": "blank", "reviewer": "x" * 81})[0] == 400
    assert client.request("POST", "/api/reviews", {"id": second, "verdict": "blank", "reviewer": 7})[0] == 400


def test_a_post_from_another_site_or_without_json_is_refused(server: Server) -> None:
    publish(server.ingestor, "trap-01", "audit", make_audit("b0"))
    client = Client(server)
    body = {"id": make_audit("b0")["id"], "verdict": "blank"}
    assert client.request("POST", "/api/reviews", body, Origin="https://evil.example")[0] == 403
    assert client.request("POST", "/api/reviews", body, Origin="null")[0] == 403
    assert client.request("POST", "/api/reviews", body, Origin="", Referer="https://evil.example/x")[0] == 403
    assert client.request("POST", "/api/reviews", body, Origin="")[0] == 403  # neither: not this page
    form = b"id=" + body["id"].encode() + b"&verdict=blank"
    assert (
        client.request("POST", "/api/reviews", form, **{"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    )
    assert client.request("POST", "/api/reviews", body, Host="attacker.example:80")[0] == 421  # DNS rebinding
    referer = f"http://127.0.0.1:{server.port}/review"
    assert client.request("POST", "/api/reviews", body, Origin="", Referer=referer)[0] == 200
    assert client.request("POST", "/api/reviews", {"id": body["id"], "verdict": "cat"})[0] == 400
    assert client.request("POST", "/api/reviews", {"id": "0" * 32, "verdict": "blank"})[0] == 404


def test_with_a_token_reviewing_needs_it_and_is_recorded_as_the_tokens(tmp_path: Path) -> None:
    s = Server(tmp_path, token=TOKEN)
    try:
        publish(s.ingestor, "trap-01", "audit", make_audit("b0"))
        body = {"id": make_audit("b0")["id"], "verdict": "blank"}
        assert Client(s).request("POST", "/api/reviews", body)[0] == 401
        page = Client(s, {"Cookie": f"bf_token={TOKEN}"})  # the browser's cookie: only from the page itself
        assert page.request("POST", "/api/reviews", body, Origin="https://evil.example")[0] == 403
        assert page.request("POST", "/api/reviews", body, Origin="")[0] == 403
        assert page.json("POST", "/api/reviews", body)["audit"]["review"]["who"] == "token"
        script = Client(s, {"Authorization": f"Bearer {TOKEN}"})  # a header no other site can make a browser send
        reply = script.request("POST", "/api/reviews", {**body, "verdict": "missed"}, Origin="")
        assert reply[0] == 200 and json.loads(reply[1])["audit"]["review"]["verdict"] == "missed"
    finally:
        s.close()


def test_the_figure_proposal_and_exports_follow_the_reviews(server: Server) -> None:
    published: list[tuple[str, bytes]] = []
    server.app.publish = lambda topic, payload: published.append((topic, payload)) is None
    publish(server.ingestor, "trap-01", "status", counts_status(discarded=2000, audited=40, kept=400))
    for i in range(20):
        publish(server.ingestor, "trap-01", "audit", make_audit(f"b{i:02d}", score=0.15 if i == 3 else 0.02))
    client = Client(server)
    for _ in range(20):
        audit = client.json("GET", "/api/review/next")["audit"]
        verdict = "missed" if audit["burst"] == "b03" else "blank"
        client.json("POST", "/api/reviews", {"id": audit["id"], "verdict": verdict, "note": HOSTILE})
    (cam,) = client.json("GET", "/api/recall")["cameras"]
    upper = recall.upper_bound(1, 20)
    assert upper is not None
    assert (cam["discarded"], cam["audited"], cam["kept"], cam["received"], cam["reviewed"], cam["misses"]) == (
        2000, 40, 400, 20, 20, 1)  # fmt: skip
    assert cam["share"] == 0.05 and cam["share_upper"] == upper
    assert cam["recall_lower"] == pytest.approx(400 / (400 + upper * 2000))
    assert cam["over_limit"] and cam["proposal"]["cutoff"] == 0.135  # 10 % under the miss's 0.15
    assert cam["proposal"]["remote_cutoff"] is False and cam["series"][-1]["misses"] == 1
    confirm = {"trap": "trap-01", "camera": "cam1", "cutoff": 0.135}
    assert client.request("POST", "/api/cutoff", confirm)[0] == 409  # the trap takes no remote cutoff
    publish(server.ingestor, "trap-01", "config", {"cutoff": 0.2, "source": "start", "camera_cutoffs": {}})
    assert client.request("POST", "/api/cutoff", {**confirm, "cutoff": 0.1})[0] == 409  # not what is proposed
    assert published == []
    assert client.json("POST", "/api/cutoff", confirm)["published"] == "blankfilter/trap-01/set/cutoff/cam1"
    assert published == [("blankfilter/trap-01/set/cutoff/cam1", b"0.135")]
    publish(
        server.ingestor, "trap-01", "config", {"cutoff": 0.2, "source": "remote", "camera_cutoffs": {"cam1": 0.135}}
    )
    assert client.json("GET", "/api/recall")["cameras"][0]["proposal"]["cutoff"] is None  # in force now
    assert client.json("GET", "/api/state")["traps"][0]["camera_cutoffs"] == {"cam1": 0.135}

    rows = list(csv.DictReader(io.StringIO(client.request("GET", "/api/recall.csv")[1].decode())))
    assert rows[-1]["misses"] == "1" and float(rows[-1]["share_upper"]) == pytest.approx(upper, rel=1e-5)
    labels = client.request("GET", "/api/labels.csv")[1]
    path = server.store.path.rsplit("/", 1)[0] + "/labels.csv"
    Path(path).write_bytes(labels)
    frames = read_labels(Path(path))
    assert len(frames) == 40 and {f.label for f in frames} == {"blank", "animal"}
    missed = [f for f in frames if f.nonblank]
    assert [f.sequence for f in missed] == ["b03", "b03"] and missed[0].location == "trap-01"
    assert missed[0].path == Path(path).parent / "audit/cam1/b03-0.jpg"


def test_a_cutoff_confirmed_while_the_trap_was_away_is_sent_again_when_it_connects_until_it_is_in_force(
    tmp_path: Path,
) -> None:
    """A real mosquitto, the monitor's own subscriber and ingest; the trap's config echoes as
    docs/events.md gives them (`start` at each connect, `remote` after it took a cutoff)."""
    import paho.mqtt.client as mqtt
    from mqtt_broker import Broker, Subscriber, wait_until

    from dashboard.subscriber import BrokerURL
    from dashboard.subscriber import Subscriber as MonitorSubscriber

    broker = Broker(tmp_path / "broker").start()
    store = Store(tmp_path / "monitor.db")
    ingestor = Ingestor(store)
    monitor = MonitorSubscriber(BrokerURL("mqtt", "127.0.0.1", broker.port, None), ingestor.handle)
    to_trap = Subscriber(broker.port, "blankfilter/+/set/#").ready()
    trap = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="trap-01")
    try:
        monitor.start()
        ingestor.resend = monitor.send
        wait_until(lambda: monitor.connected, 10, "the monitor connected")
        trap.connect("127.0.0.1", broker.port)
        trap.loop_start()
        reviews = ingestor.recall.reviews
        reviews.log_cutoff("trap-01", "cam1", 0.00268, "Ana (local)")  # confirmed: the trap is away, it is lost

        def echo(source: str, cameras: dict[str, float]) -> None:
            body = {"cutoff": 0.00298, "source": source, "at": "2026-12-01T12:00:00+00:00", "remote_cutoff": True,
                    "camera_cutoffs": cameras}  # fmt: skip
            trap.publish("blankfilter/trap-01/config", json.dumps(body), qos=1, retain=True).wait_for_publish(5)

        echo("start", {})  # the trap is back, without it
        wait_until(lambda: to_trap.on("blankfilter/trap-01/set/cutoff/cam1") == [b"0.00268"], 10, "the cutoff again")
        assert reviews.waiting_cutoffs("trap-01")["cam1"]["who"] == "Ana (local)"
        echo("remote", {"cam1": 0.00268})  # it took it
        wait_until(lambda: not reviews.waiting_cutoffs("trap-01"), 10, "the request applied")
        echo("start", {})  # a later connect sends nothing again: the request was applied once
        echo("start", {"cam1": 0.00268})
        last = {"cutoff": 0.00298, "source": "start", "remote_cutoff": True, "camera_cutoffs": {"cam1": 0.00268}}
        wait_until(lambda: store.config("trap-01") == last, 10, "the last echo taken in")
        monitor.send("blankfilter/trap-01/set/marker", b"after")  # the monitor's messages arrive in order
        wait_until(lambda: bool(to_trap.on("blankfilter/trap-01/set/marker")), 10, "the marker")
        assert to_trap.on("blankfilter/trap-01/set/cutoff/cam1") == [b"0.00268"]  # sent again once only
    finally:
        trap.loop_stop()
        to_trap.close()
        monitor.stop()
        store.close()
        broker.stop()
