"""`blankfilter monitor` end to end: a real mosquitto, the monitor as a subprocess (through the
`blankfilter.commands` entry point, and as `python -m dashboard`), a fake trap publishing what a
trap publishes (a duplicate, malformed payloads and `<script>` in the data among it), and headless
Chromium (Debian's chromium + chromium-driver, through Selenium) looking at the page: the cards, the
live feed updating without a reload, the hour-of-day chart, the escaping, a phone-width layout; then
the broker restarting under the monitor.

Screenshots go to the test's tmp_path. docs/monitor.png (the README's) is written when it is missing
or when UPDATE_SCREENSHOTS=1, so that a test run does not leave a changed image in the work tree.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env
from mqtt_broker import Broker, free_port, wait_until
from test_monitor_store import T0, make_event, make_status, thumbnail

from firmware_app.events.payloads import dumps

REPO = Path(__file__).resolve().parent.parent
README_SCREENSHOT = REPO / "docs" / "monitor.png"
PASSWORD = "pa55-w0rd-never-logged"
WEIRD_MODEL = '<script>alert("model")</script> Ünïcode & "quotes"'
SCRIPT_FILE = "kept/cam1/<script>alert(1)</script>.jpg"
IMG_BURST = "<img src=x onerror=alert(2)>"


class Monitor:
    """`blankfilter monitor` as a subprocess, its log in a file."""

    def __init__(self, folder: Path, broker_port: int, command: tuple[str, ...], *extra: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = folder / "monitor.log"
        cmd = [sys.executable, "-m", *command, "--broker", f"mqtt://127.0.0.1:{broker_port}", "--db",
               str(folder / "monitor.db"), "--listen", f"127.0.0.1:{self.port}", *extra]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=cli_env())
        wait_until(lambda: self._up() and self.api("api/state")["broker"]["connected"], 30, "the monitor")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the monitor exited {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            self.api("api/state")
        except OSError:
            return False
        return True

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        return self.proc.returncode


class Trap:
    """Publishes like a trap does: QoS 1, status and availability retained."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-trap-{port}-{time.monotonic_ns()}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: dict[str, Any] | str | bytes, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes | str) else dumps(payload)
        self.client.publish(f"blankfilter/{topic}", data, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through Selenium, with the page's console kept."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.skip("chromium / chromedriver are not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
                "--window-size=1200,900", "--lang=en-GB", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_bin, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def until(driver: Any, predicate: Callable[[Any], Any], what: str, timeout: float = 15) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(predicate, message=f"waiting for {what}")


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def text_of(driver: Any, selector: str) -> str:
    found = css(driver, selector)
    return str(found[0].text) if found else ""


def attr(driver: Any, selector: str, name: str) -> str | None:
    found = css(driver, selector)
    return found[0].get_attribute(name) if found else None


def assert_no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    raise AssertionError(f"the page ran a script from MQTT data: alert({alert.text!r})")


def save_screenshot(driver: Any, path: Path, width: int) -> None:
    """The whole page at this width (Chromium's DevTools capture, beyond the window)."""
    driver.set_window_size(width, 900)
    time.sleep(0.3)  # layout after the resize
    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    clip = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def small_png(source: Path, dest: Path) -> None:
    """The README copy: halved and quantised to a palette, a few tens of KB."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        image = image.resize((image.width * 2 // 3, image.height * 2 // 3), Image.Resampling.LANCZOS)
        image.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)


def test_monitor_page_end_to_end(tmp_path: Path, broker: Broker, browser: Any) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    monitor = Monitor(tmp_path / "monitor", broker.port, ("firmware_app", "monitor"), "--username", "dashboard",
                      "--password-file", str(tmp_path / "password"), "--log-level", "debug")  # fmt: skip
    trap = Trap(broker.port)
    try:
        jpeg = thumbnail()
        first = make_event(burst="b1", thumb=jpeg, frames=3)  # 17:06 on the camera's clock
        trap.send("trap-01/status", make_status(depth=2, now=time.time()), retain=True)
        trap.send("trap-01/availability", "online", retain=True)
        trap.send("trap-02/status", make_status("trap-02", model=WEIRD_MODEL, now=time.time() - 7200), retain=True)
        trap.send("trap-02/availability", "offline", retain=True)
        trap.send("trap-01/event", first)
        trap.send("trap-01/event", first)  # a resend: de-duplicated
        trap.send("trap-01/event", make_event(burst="b2", ts=T0 + 40 * 60, thumb=jpeg))  # 17:46
        trap.send("trap-02/event", make_event("trap-02", burst=IMG_BURST, ts=T0 + 3 * 3600, file=SCRIPT_FILE))  # 20:06
        bad_thumb = make_event("trap-02", burst="png", ts=T0 + 3 * 3600 + 60, thumb=(b"\x89PNG\r\n\x1a\n" * 8, 8, 8))
        trap.send("trap-02/event", bad_thumb)
        trap.send("trap-01/event", "{not json <script>alert('raw')</script>")
        trap.send("trap-01/event", make_event(burst="b3") | {"trap_id": "<script>alert(3)</script>"})
        wait_until(lambda: len(monitor.api("api/events?limit=100")["events"]) == 4
                   and sum(c["count"] for c in monitor.api("api/state")["counters"]["malformed"].values()) == 2,
                   15, "the monitor to store 4 events and count 2 malformed payloads")  # fmt: skip
        state = monitor.api("api/state")
        assert state["counters"]["duplicate"]["event_id"]["count"] == 1
        assert {k: v["count"] for k, v in state["counters"]["thumbnail_dropped"].items()} == {"not a JPEG": 1}

        # -- the page ---------------------------------------------------------------------------------
        browser.get(monitor.url)
        until(browser, lambda d: len(css(d, "article.card")) == 2, "two trap cards")
        until(browser, lambda d: attr(d, "#live", "data-live") == "true", "the live stream")
        until(browser, lambda d: len(css(d, "#feed li.event")) == 4, "four events in the feed")
        until(browser, lambda d: css(d, 'rect.bar[data-trap="trap-01"][data-hour="17"]'), "the hour-of-day chart")
        browser.execute_script("window.__sameDocument = 42")  # gone if the page reloads

        card1, card2 = 'article.card[data-trap="trap-01"]', 'article.card[data-trap="trap-02"]'
        assert attr(browser, card1, "data-availability") == "online" and attr(browser, card1, "data-stale") == "false"
        assert attr(browser, card2, "data-availability") == "offline" and attr(browser, card2, "data-stale") == "true"
        assert text_of(browser, f"{card1} [data-field=availability]") == "ONLINE"  # CSS upper-cases it
        assert text_of(browser, f"{card1} [data-field=heartbeat]") == "just now"
        assert text_of(browser, f"{card1} [data-field=blank_ratio]") == "86.7 %"
        assert text_of(browser, f"{card1} [data-field=outbox]") == "2 waiting"
        assert text_of(browser, f"{card1} [data-field=disk]") == "24.4 GB free"
        assert text_of(browser, f"{card1} [data-field=temperature]") == "51.1 °C"
        assert text_of(browser, f"{card1} [data-field=model]") == "blankfilter-cellnet 1.1.0"
        assert text_of(browser, f"{card1} [data-field=cutoff]") == "0.0771"
        assert text_of(browser, f"{card1} [data-field=events]") == "2"
        assert text_of(browser, f"{card2} [data-field=heartbeat]") == "2 h ago"

        # -- escaping: MQTT data shows as text, nothing of it runs ------------------------------------
        assert_no_alert(browser)
        assert text_of(browser, f"{card2} [data-field=model]") == f"{WEIRD_MODEL} 1.1.0"
        item = '#feed li.event[data-trap="trap-02"]:not([data-event-id="' + bad_thumb["event_id"] + '"])'
        assert SCRIPT_FILE in text_of(browser, f"{item} .file")
        assert f"burst {IMG_BURST}" in text_of(browser, item)
        assert browser.execute_script("return document.querySelectorAll('script').length") == 1  # app.js only
        assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0

        # -- thumbnails: the good ones shown, the PNG dropped ---------------------------------------
        imgs = css(browser, "#feed li.event img")
        assert len(imgs) == 2 and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        assert text_of(browser, f'#feed li[data-event-id="{bad_thumb["event_id"]}"] .nothumb') == "no thumbnail"

        # -- hour of day: SVG bars with their counts ------------------------------------------------
        def count(trap_id: str, hour: int) -> str | None:
            return attr(browser, f'rect.bar[data-trap="{trap_id}"][data-hour="{hour}"]', "data-count")

        assert count("trap-01", 17) == "2" and count("trap-02", 20) == "2" and count("trap-01", 5) == "0"
        assert len(css(browser, 'rect.bar[data-trap="trap-01"]')) == 24
        assert attr(browser, 'rect.bar[data-day="2006-02-10"]', "data-count") == "4"
        counters = {
            li.get_attribute("data-reason"): li.get_attribute("data-count")
            for li in css(browser, "#counters li[data-kind=malformed]")
        }
        assert counters == {"not JSON": "1", "event schema: trap_id (pattern)": "1"}
        assert "alert('raw')" not in browser.page_source

        # -- live: an event published now appears without a reload ---------------------------------
        live = make_event(burst="live", ts=T0 + 12 * 3600, thumb=jpeg)  # 05:06 the next day
        trap.send("trap-01/event", live)
        until(browser, lambda d: css(d, f'#feed li.event[data-event-id="{live["event_id"]}"]'), "the live event")
        assert css(browser, "#feed li.event")[0].get_attribute("data-event-id") == live["event_id"]  # on top
        until(browser, lambda d: count("trap-01", 5) == "1", "the hour-of-day chart to count the live event")
        until(browser, lambda d: text_of(d, f"{card1} [data-field=events]") == "3", "the card's event count")
        assert browser.execute_script("return window.__sameDocument") == 42  # no reload happened

        # -- filters and the CSV link ----------------------------------------------------------------
        from selenium.webdriver.support.ui import Select

        Select(css(browser, "#f-trap")[0]).select_by_value("trap-02")
        until(browser, lambda d: len(css(d, "#feed li.event")) == 2, "the feed filtered to trap-02")
        assert attr(browser, "#csv", "href") == monitor.url + "api/events.csv?trap=trap-02"
        assert not css(browser, 'rect.bar[data-trap="trap-01"]')
        Select(css(browser, "#f-trap")[0]).select_by_value("")
        until(browser, lambda d: len(css(d, "#feed li.event")) == 5, "the feed unfiltered")

        problems = [
            e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
        ]
        assert problems == [], problems  # no CSP violation, no script error

        # -- a phone screen: one column, nothing wider than the screen -------------------------------
        browser.set_window_size(390, 844)
        time.sleep(0.3)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
        save_screenshot(browser, tmp_path / "monitor-phone.png", 390)
        save_screenshot(browser, tmp_path / "monitor.png", 1100)
        assert (tmp_path / "monitor.png").stat().st_size > 10_000
        if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not README_SCREENSHOT.exists():
            small_png(tmp_path / "monitor.png", README_SCREENSHOT)
    finally:
        trap.close()
        rc = monitor.stop()
    log = monitor.log.read_text()
    assert rc == 0, log
    assert PASSWORD not in log  # never logged, even at debug
    assert "malformed payload on 'blankfilter/trap-01/event': not JSON" in log


def test_monitor_survives_a_broker_restart(tmp_path: Path, broker: Broker, browser: Any) -> None:
    monitor = Monitor(tmp_path / "monitor", broker.port, ("dashboard",))
    trap = Trap(broker.port)
    try:
        trap.send("trap-01/status", make_status(depth=5, now=time.time()), retain=True)
        trap.send("trap-01/availability", "online", retain=True)
        first = make_event()
        trap.send("trap-01/event", first)
        browser.get(monitor.url)
        card = 'article.card[data-trap="trap-01"]'
        until(browser, lambda d: text_of(d, f"{card} [data-field=outbox]") == "5 waiting", "the card")
        until(browser, lambda d: attr(d, "#live", "data-live") == "true", "the live stream")
    finally:
        trap.close()

    broker.stop()  # retained messages go with it (persistence off)
    until(browser, lambda d: attr(d, "#broker", "data-connected") == "false", "the page to show the broker lost")
    broker.start()  # same port
    trap = Trap(broker.port)
    try:
        # The trap publishes its retained status and availability at each connect (most likely before
        # the monitor is back: it then gets them as retained messages).
        status = make_status(depth=0, now=time.time())
        status["model"]["version"] = "1.2.0"
        trap.send("trap-01/status", status, retain=True)
        trap.send("trap-01/availability", "online", retain=True)
        until(browser, lambda d: attr(d, "#broker", "data-connected") == "true", "the monitor to reconnect", 30)
        trap.send("trap-01/event", first)  # and it resends what the broker had not acknowledged
        until(browser, lambda d: text_of(d, f"{card} [data-field=outbox]") == "0 waiting", "the card to update", 15)
        assert text_of(browser, f"{card} [data-field=model]") == "blankfilter-cellnet 1.2.0"
        assert browser.execute_script("return document.querySelectorAll('#feed li.event').length") == 1
        wait_until(lambda: monitor.api("api/state")["counters"]["duplicate"].get("event_id", {}).get("count") == 1,
                   10, "the resent event to be counted as a duplicate")  # fmt: skip
        assert monitor.api("api/state")["traps"][0]["events"] == 1
    finally:
        trap.close()
        rc = monitor.stop()
    log = monitor.log.read_text()
    assert rc == 0, log
    assert "lost the broker" in log and log.count("connected to mqtt://127.0.0.1") == 2
