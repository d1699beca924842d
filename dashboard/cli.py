"""`blankfilter monitor` (and `python -m dashboard`): the live dashboard of a fleet of traps.

It joins the `blankfilter` command through the `blankfilter.commands` entry point; registering
imports nothing heavy (paho-mqtt and jsonschema load when the command runs).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE = 0, 2
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]{16,256}")  # fullmatch


class UsageError(Exception):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        required=True,
        metavar="URL",
        help="mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS); a user name may go in it (user@HOST)",
    )
    p.add_argument(
        "--db",
        type=Path,
        default=Path("blankfilter-monitor.db"),
        help="SQLite file for events and status (default ./blankfilter-monitor.db)",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where the web page is served (default 127.0.0.1:8080, loopback only)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding an access token (16+ URL-safe characters): every request needs it; "
        "required to listen on a non-loopback address",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --listen without a token (anyone who reaches the port sees the data)",
    )
    p.add_argument("--ca-file", type=Path, help="CA certificate(s) for mqtts:// (default: the system's)")
    p.add_argument("--username", help="MQTT user name (the broker's ACL has a `dashboard` user)")
    p.add_argument("--password-file", type=Path, help="file holding the MQTT password (never logged)")
    p.add_argument(
        "--client-id",
        help="fixed MQTT client id: a persistent session, the broker keeps QoS 1 events "
        "while the monitor is away (default: a random id, clean session)",
    )
    p.add_argument("--prefix", default="blankfilter", help="the traps' mqtt.topic_prefix (default blankfilter)")
    p.add_argument("--max-payload-kb", type=int, default=512, help="larger payloads are refused (default 512)")
    p.add_argument(
        "--max-thumbnail-kb",
        type=int,
        default=64,
        help="larger thumbnails are dropped, the event kept (default 64; traps send 12 at most)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=900.0,
        metavar="S",
        help="a trap whose last heartbeat is older is shown as late (default 900 s)",
    )
    p.add_argument(
        "--recall-limit",
        type=float,
        default=0.05,
        metavar="SHARE",
        help="a camera whose 95 %% upper bound on the share of discarded bursts that held an animal passes "
        "this gets a lower cutoff proposed (default 0.05)",
    )
    p.add_argument(
        "--cutoff-margin",
        type=float,
        default=0.1,
        metavar="SHARE",
        help="a proposed cutoff sits this share below the lowest missed burst's best score (default 0.1)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def register(sub: Any) -> None:
    p = sub.add_parser("monitor", help="live web dashboard of a fleet of traps (subscribes to the broker)")
    add_arguments(p)
    p.set_defaults(func=cmd_monitor)


def parse_listen(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):([0-9]{1,5})", text)
    if not m or int(m.group(2)) > 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    return m.group(1).strip("[]"), int(m.group(2))


def read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path}: cannot read it ({exc.__class__.__name__})") from None


def cmd_monitor(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)  # fmt: skip
    try:
        return run(args)
    except UsageError as exc:
        print(f"blankfilter monitor: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        raise UsageError("the monitor needs jsonschema: pip install 'blankfilter[dashboard]'") from None
    from dashboard import web
    from dashboard.contracts import SchemaMissing
    from dashboard.fieldrecall import FieldRecall, Settings
    from dashboard.ingest import Ingestor, Limits
    from dashboard.live import Broadcaster
    from dashboard.reviews import Reviews
    from dashboard.store import Store
    from dashboard.subscriber import BrokerURLError, Subscriber, parse_broker_url

    try:
        url = parse_broker_url(args.broker)
    except BrokerURLError as exc:
        raise UsageError(str(exc)) from None
    host, port = parse_listen(args.listen)
    token = None
    if args.token_file:
        token = read_secret(args.token_file, "--token-file").strip()
        if not TOKEN_CHARS.fullmatch(token):
            raise UsageError(
                f"--token-file {args.token_file}: the token must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ - "
                "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
    loopback = web.is_loopback(host)
    if not loopback and token is None and not args.insecure:
        raise UsageError(f"--listen {args.listen}: refusing to serve the traps' data on a non-loopback address "
                         "without an access token; give --token-file FILE (or --insecure to do it anyway)")  # fmt: skip
    if args.prefix.strip("/") != args.prefix or any(c in args.prefix for c in "#+") or not args.prefix:
        raise UsageError(f"--prefix {args.prefix!r}: a topic without wildcards or leading/trailing '/'")
    password = read_secret(args.password_file, "--password-file") if args.password_file else None
    if password is not None and not (args.username or url.username):
        raise UsageError("--password-file needs --username (or user@ in --broker)")
    if args.ca_file and not url.tls:
        raise UsageError("--ca-file is for TLS: use an mqtts:// broker URL")
    if args.ca_file and not args.ca_file.is_file():
        raise UsageError(f"--ca-file {args.ca_file}: no such file")
    if args.max_payload_kb < 1 or args.max_thumbnail_kb < 1:
        raise UsageError("--max-payload-kb and --max-thumbnail-kb must be at least 1")
    if not 0 < args.recall_limit < 1 or not 0 <= args.cutoff_margin < 1:
        raise UsageError("--recall-limit is a share in (0, 1), --cutoff-margin one in [0, 1)")

    try:
        store = Store(args.db)
    except Exception as exc:  # sqlite3.Error, OSError: a path that is not a database, a folder missing
        raise UsageError(f"--db {args.db}: {exc}") from None
    hub = Broadcaster()
    try:
        recall = FieldRecall(store, Reviews(store), Settings(args.recall_limit, args.cutoff_margin))
        app = web.App(store, hub, token=token, stale_after_s=args.stale_after, recall=recall, prefix=args.prefix)
        app.broker = {"url": str(url), "connected": False, "since": None, "why": "connecting"}
        if token is None and loopback:
            app.allowed_hosts = web.loopback_hosts(port)
        limits = Limits(args.max_payload_kb * 1024, args.max_thumbnail_kb * 1024)
        ingestor = Ingestor(store, hub.publish, args.prefix, limits, recall)
    except SchemaMissing as exc:
        store.close()
        raise UsageError(f"the trap's schemas are missing: {exc}") from None
    try:
        server = web.make_server(app, host, port)
    except OSError as exc:
        store.close()
        raise UsageError(f"--listen {args.listen}: {exc.strerror or exc}") from None
    subscriber = Subscriber(url, ingestor.handle, args.prefix, username=args.username, password=password,
                            ca_file=str(args.ca_file) if args.ca_file else None, client_id=args.client_id,
                            on_state=app.set_broker)  # fmt: skip
    app.publish = subscriber.publish
    ingestor.resend = subscriber.send

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="http", daemon=True)
    thread.start()
    subscriber.start()
    shown = f"[{host}]" if ":" in host else host
    log.info("serving http://%s:%d/ (broker %s, database %s)", shown, server.server_address[1], url, args.db)
    if token:
        log.info("access token required: open the page once as /?token=… (the content of %s)", args.token_file)
    elif not loopback:
        log.warning("listening on %s WITHOUT an access token (--insecure): anyone who reaches this port sees the "
                    "traps' data", args.listen)  # fmt: skip
    while not stop.wait(0.5):  # wakes for signals on every platform
        pass
    log.info("stopping")
    subscriber.stop()
    hub.close()
    server.shutdown()
    server.server_close()
    store.close()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__.splitlines()[0] if __doc__ else "")
    add_arguments(parser)
    parser.set_defaults(func=cmd_monitor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
