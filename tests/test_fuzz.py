"""Property-based tests: hostile config values, MQTT cutoff payloads, damaged JPEGs, odd inbox
files and `kill -9` of the daemon at random moments while frames arrive and uploads stall, each
followed by the invariants the README promises.

CI runs a fixed, small budget (derandomised: the same examples every run, no example database);
`bench/fuzz_soak.py` runs the same properties with random seeds and a large budget. Each property is
a plain callable (no pytest fixtures), so the soak can re-run it with other settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # damaged EXIF, on purpose
hypothesis = pytest.importorskip("hypothesis", reason="the fuzz suite needs hypothesis (the dev extra)")

from camera_jpegs import VARIANTS, segment  # noqa: E402
from conftest import FRAMES, TESTS, cli_env  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from firmware_app.classifiers import Classifier, load_classifier  # noqa: E402
from firmware_app.config import SECTIONS, _is_path_field, load_config  # noqa: E402
from firmware_app.errors import ConfigError, ImageError  # noqa: E402
from firmware_app.events.mqtt import parse_cutoff  # noqa: E402
from firmware_app.events.payloads import CUTOFF_RANGE  # noqa: E402
from firmware_app.imaging import ImagingSettings, decode_jpeg, prepare_jpeg, prepare_jpeg_views  # noqa: E402
from firmware_app.ledger import name_from_db, printable  # noqa: E402

SHIPPED = TESTS.parent / "models" / "blankfilter-cellnet-320.tflite"
CUTOFF = 0.2  # in the fixture frames' score gap: some are kept, some deleted (the card's keeps nearly all)

# CI budget: fixed examples (derandomize), no example database, no per-example deadline.
CI = settings(derandomize=True, database=None, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


# name -> (the check, its strategies, the CI budget): what the soak (bench/fuzz_soak.py) runs again.
PROPERTIES: dict[str, tuple[Callable[..., None], dict[str, st.SearchStrategy[Any]], int]] = {}


def prop(name: str, examples: int, **strategies: st.SearchStrategy[Any]) -> Callable[[Callable[..., None]], Any]:
    """Register a property and return it as a test of the CI budget (fixed examples)."""

    def register(check: Callable[..., None]) -> Any:
        PROPERTIES[name] = (check, strategies, examples)
        return settings(CI, max_examples=examples)(given(**strategies)(check))

    return register


def soak(name: str, examples: int) -> Callable[[], None]:
    """The property `name` with another budget and fresh random examples (each call new ones)."""
    check, strategies, _ = PROPERTIES[name]
    return settings(CI, max_examples=examples, derandomize=False)(given(**strategies)(check))  # type: ignore[no-any-return]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@cache
def classifier() -> Classifier:
    return load_classifier(SHIPPED, threads=1)


@cache
def fixture_bytes(rel: str) -> bytes:
    return (FRAMES / rel).read_bytes()


@cache
def variant_bytes(variant: str, rel: str) -> bytes:
    """A real-camera variant of a fixture frame, made once (its preview JPEGs hold random noise)."""
    return VARIANTS[variant](fixture_bytes(rel))


# Small and mid-sized real frames (the 600 kB Peru frames make each example slow for no new path).
FIXTURES = [
    "wellington/11374_1-1.JPG", "wellington/1200_1-0.JPG", "wellington/1200_2-0.JPG",
    "missouri/SEQ75192_IMG_0001.JPG", "missouri/SEQ75192_IMG_0005.JPG",
    "owl/RCNX1419.JPG", "speciesnet/blank.jpg",
]  # fmt: skip


# -- 1. config values -------------------------------------------------------------------------------
def schema() -> list[tuple[str, Any, dict[str, Any]]]:
    """(section.key, type hint, meta) of every config key, read from the dataclasses themselves."""
    out = []
    for name, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out.append((f"{name}.{f.name}", hints[f.name], dict(f.metadata)))
    return out


KEYS = schema()

control_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x1F), min_size=1, max_size=8)
hostile_values = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, -1, -0.0, 0, 1, 2**63, -(2**63) - 1, 10**30,
                     0.5, 1e-320, True, False, "", [], {}, [[]], ["" ], [1, 2], [16, 16], [".jpg"], ["jpg"],
                     "x" * 10_000, "nan", "inf", "1e308", "-1", "٠.٥", "auto", "poll", "delete", "\n", "a\x00b",
                     "/", ".", "-rf", "--set"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=40),
    control_text,
    st.lists(st.one_of(st.text(max_size=10), st.integers(-5, 10_000)), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip


def toml_literal(value: Any) -> str:
    """A value as TOML writes it (`nan`, `inf`, lists, inline tables, escaped strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise AssertionError(f"no TOML for {value!r}")


def toml_string(text: str) -> str:
    """A TOML basic string: backslash, quote and control characters escaped, the rest as is."""
    escaped = "".join(
        f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else "\\" + ch if ch in '"\\' else ch for ch in text
    )
    return f'"{escaped}"'


def within_bounds(dotted: str, value: Any, hint: Any, info: dict[str, Any]) -> None:
    """An accepted value is one the schema documents: its type, finite, within lo..hi, a choice."""
    if hint is bool:
        assert isinstance(value, bool), (dotted, value)
    elif hint in (int, float, float | None):
        if value is None:
            assert hint == float | None, (dotted, value)
            return
        assert isinstance(value, int if hint is int else float) and not isinstance(value, bool), (dotted, value)
        assert math.isfinite(value), (dotted, value)
        assert info["lo"] is None or value >= info["lo"], (dotted, value)
        assert info["hi"] is None or value <= info["hi"], (dotted, value)
    elif hint is Path:
        assert isinstance(value, Path) and str(value) and len(str(value)) <= info["max_len"], (dotted, value)
        assert "\x00" not in str(value), f"{dotted} accepted a path with a NUL, which no file system takes"
    elif hint == list[str]:
        assert value and all(isinstance(v, str) and v.startswith(".") for v in value), (dotted, value)
    elif hint == list[int]:
        assert len(value) == 2 and all(16 <= v <= 8192 for v in value), (dotted, value)
    else:
        assert isinstance(value, str) and len(value) <= info["max_len"], (dotted, value)
        assert not info["choices"] or value in info["choices"], (dotted, value)
        if names_a_file(dotted):
            assert "\x00" not in value, f"{dotted} accepted a file name with a NUL, which no file system takes"


def names_a_file(dotted: str) -> bool:
    section, _, key = dotted.partition(".")
    return bool(_is_path_field(section, key))


def check_config_value(key: tuple[str, Any, dict[str, Any]], value: Any, via_file: bool) -> None:
    dotted, hint, info = key
    section, name = dotted.split(".")
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"store.root={tmp}/store", f"source.inbox={tmp}/inbox"]  # never the defaults' /var/lib
        try:
            if via_file:
                path = Path(tmp) / "config.toml"
                path.write_text(f"[{section}]\n{name} = {toml_literal(value)}\n", encoding="utf-8")
                base = [b for b in base if not b.startswith(f"{dotted}=")]
                config = load_config(path, base)
            else:
                base = [b for b in base if not b.startswith(f"{dotted}=")]
                config = load_config(None, [*base, f"{dotted}={toml_literal(value)}"])
        except ConfigError as exc:
            assert dotted in str(exc), f"the error does not name {dotted}: {exc}"
            return
        # (any other exception fails the property, with the example that raised it)
    within_bounds(dotted, getattr(getattr(config, section), name), hint, info)


@prop("config", 1000, key=st.sampled_from(KEYS), value=hostile_values, via_file=st.booleans())
def prop_config_value(key: tuple[str, Any, dict[str, Any]], value: Any, via_file: bool) -> None:
    """Any hostile value for any key, from a file or --set: accepted within its documented bounds,
    or a ConfigError that names the key; never another exception."""
    check_config_value(key, value, via_file)


def test_config_values() -> None:
    prop_config_value()


FILE_NAME_KEYS = [k[0] for k in KEYS if names_a_file(k[0])]


@pytest.mark.parametrize("dotted", FILE_NAME_KEYS)
def test_a_relative_path_with_a_nul_in_a_config_file_is_a_config_error(dotted: str) -> None:
    """Found by the config property: it reached Path.resolve() and raised ValueError (embedded null byte)."""
    key = next(k for k in KEYS if k[0] == dotted)
    check_config_value(key, "a\x00b", via_file=True)


@pytest.mark.parametrize(
    "dotted", ["source.inbox", "store.root", "model.path", "context.extractor", "camera.motion_mask"]
)
@pytest.mark.parametrize("via_file", [False, True])
def test_a_path_with_a_nul_is_refused(dotted: str, via_file: bool) -> None:
    """Found by the config property: `config` said ok and `run` then died with a traceback."""
    key = next(k for k in KEYS if k[0] == dotted)
    check_config_value(key, "/tmp/a\x00b", via_file=via_file)


# -- 2. MQTT cutoff payloads ------------------------------------------------------------------------
NON_ASCII_DIGITS = "٠١٢٣٤٥٦٧٨٩０１２３４５６７８９۰۱۲۳۴۵۶۷۸۹²³¹"
cutoff_texts = st.one_of(
    st.sampled_from(["0.3", " 0.3 ", "0.30\n", ".5", "5e-1", "1_0", "nan", "NaN", "inf", "-inf", "-0.0", "0x1p-2",
                     "1e308", "1e-400", "0.01", "0.99", "0", "1", "true", "null", "[]", "{}", '{"cutoff": null}',
                     '{"cutoff": "nan"}', '{"cutoff": NaN}', '{"cutoff": Infinity}', '{"cutoff": 1e999}',
                     '{"cutoff": true}', '{"cutoff": [0.3]}', '{"cutoff": "0.3"}', '{"cutoff": 0.3}',
                     "٠.٥", "０.５", "0.５", '{"cutoff": "٠.٥"}']),
    st.floats().map(repr),
    st.decimals(allow_nan=True).map(str),
    st.text(st.sampled_from("0123456789.eE+-_ " + NON_ASCII_DIGITS), max_size=12),
    st.floats().map(lambda v: json.dumps({"cutoff": v})),
    st.text(st.sampled_from("0123456789.eE+-_ " + NON_ASCII_DIGITS), max_size=8).map(
        lambda s: json.dumps({"cutoff": s})),
)  # fmt: skip
deep_json = st.tuples(st.integers(1, 200_000), st.sampled_from(["[", '{"cutoff": ', '{"a": [', "{"])).map(
    lambda t: (t[1] * t[0]).encode()
)
cutoff_payloads = st.one_of(
    cutoff_texts.map(lambda s: s.encode("utf-8")),
    deep_json,
    st.binary(max_size=300),
    st.integers(0, 3).map(lambda k: b"0." + b"3" * (10**k * 100)),  # huge
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=16).map(lambda b: b'{"cutoff": ' + b + b"}"),
)


@prop("cutoff", 2000, payload=cutoff_payloads)
def prop_cutoff_payload(payload: bytes) -> None:
    """parse_cutoff returns a finite cutoff in range, from ASCII digits, or (None, why); nothing else."""
    value, why = parse_cutoff(payload)
    if value is None:
        assert isinstance(why, str) and why, payload
        assert len(why) < 400, f"a {len(why)}-character refusal is not one log line"
        return
    assert why == "", (payload, why)
    assert isinstance(value, float) and math.isfinite(value), (payload, value)
    assert CUTOFF_RANGE[0] <= value <= CUTOFF_RANGE[1] and 0.0 <= value <= 1.0, (payload, value)
    assert payload.isascii(), f"a cutoff accepted from non-ASCII bytes: {payload!r}"
    assert not any(ch.isdigit() and not ch.isascii() for ch in payload.decode("ascii")), payload


def test_mqtt_cutoff_payloads() -> None:
    prop_cutoff_payload()


# -- 3. damaged JPEGs -------------------------------------------------------------------------------
OTHER_HEADERS = [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP",
                 b"%PDF-1.4", b"\x00\x00\x00\x0cjP  ", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd8", b"\xff",
                 b"PK\x03\x04", b"\x00" * 8]  # fmt: skip


@st.composite
def damaged_jpeg(draw: st.DrawFn) -> bytes:
    data = bytearray(fixture_bytes(draw(st.sampled_from(FIXTURES))))
    if draw(st.booleans()):
        data = bytearray(variant_bytes(draw(st.sampled_from(sorted(VARIANTS))), draw(st.sampled_from(FIXTURES))))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "segment", "append", "header", "splice", "sof"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip" and data:
            for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
                data[pos] = draw(st.integers(0, 255))
        elif kind == "segment":
            marker = draw(st.sampled_from([0xE0, 0xE1, 0xE2, 0xEE, 0xFE, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD, 0xDA]))
            seg = segment(marker, draw(st.binary(max_size=200)))
            where = draw(st.sampled_from([2, at]))
            data = data[:where] + seg + data[where:]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=2000))
        elif kind == "header":
            head = draw(st.sampled_from(OTHER_HEADERS))
            data = bytearray(head) + (data[len(head) :] if draw(st.booleans()) else data)
        elif kind == "splice":
            other = fixture_bytes(draw(st.sampled_from(FIXTURES)))
            data = data[:at] + other[draw(st.integers(0, len(other) - 1)) :]
        elif kind == "sof":  # a huge, zero or odd size, or another precision, in the frame header
            pos = bytes(data).find(b"\xff\xc0")
            if pos > 0 and pos + 9 <= len(data):
                data[pos + 4] = draw(st.sampled_from([8, 12, 16, 0, 255]))
                data[pos + 5 : pos + 9] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


@prop("jpeg", 1000, data=damaged_jpeg(), max_mp=st.sampled_from([1.0, 100.0]))
def prop_damaged_jpeg(data: bytes, max_mp: float) -> None:
    """What the trap calls on a file's bytes gives a prepared frame or an ImageError; nothing else."""
    card = classifier().card
    specs = [card.input, dataclasses.replace(card.input, width=288, height=288, resize="letterbox")]
    im = ImagingSettings(max_pixels=int(max_mp * 1e6))
    for call in (
        lambda: prepare_jpeg_views(data, specs, im),
        lambda: [prepare_jpeg(data, card.input, im)],
        lambda: [decode_jpeg(data, (card.input.width, card.input.height), im)],
    ):
        try:
            out = call()
        except ImageError as exc:
            assert str(exc)
            continue
        for item in out:
            if isinstance(item, tuple):
                image, size, _ = item
                assert image.mode == "RGB" and min(image.size) >= 1 and min(size) >= 1
            else:
                assert item.pixels.dtype.name == "uint8" and item.pixels.shape[2] == 3


def test_damaged_jpegs() -> None:
    prop_damaged_jpeg()


# -- 4. the folder trap, end to end -----------------------------------------------------------------
FRAME_EXTS = [b".jpg", b".JPG", b".jpeg", b".JpEg"]
OTHER_EXTS = [b".txt", b"", b".jpg.part", b".png"]
text_stem = st.text(st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]), min_size=1,
                    max_size=24).map(lambda s: s.encode("utf-8"))  # fmt: skip
byte_stem = st.binary(min_size=1, max_size=24).map(lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_"))
stems = st.one_of(
    st.sampled_from([b"IMG_0001", b"-rf", b"--once", b"-", b" ", b"a b", b"line\nbreak", b"\r", b"caf\xe9",
                     b"\xff\xfe", b"\\", b"*", b"'$(x)'", "日本語".encode(), b"\xed\xa0\x80", b"..x"]),
    text_stem, byte_stem,
    st.tuples(st.sampled_from([b"-", b"--", b" ", b"\n", b"\t"]), text_stem).map(b"".join),
)  # fmt: skip
folders = st.sampled_from([b"", b"cam1", b"-cam2", b"caf\xe9", "Kamera ü".encode(), b"a\nb", b" sp ace"])


class Content(bytes):
    """File content that prints short in a failing example (its length, hash and how it was made)."""

    label = ""

    def __repr__(self) -> str:
        return f"<{self.label}: {len(self)} bytes, sha256 {sha(self)[:12]}>"


def content(data: bytes, label: str) -> Content:
    out = Content(data)
    out.label = label
    return out


@st.composite
def inbox_file(draw: st.DrawFn) -> tuple[bytes, bytes, float]:
    """(relative path as bytes, content, mtime offset in seconds)."""
    folder = draw(folders)
    ext = draw(st.sampled_from(FRAME_EXTS)) if draw(st.integers(0, 4)) else draw(st.sampled_from(OTHER_EXTS))
    name = draw(stems)[:150] + ext
    rel = folder + b"/" + name if folder else name
    kind = draw(st.sampled_from(["frame", "frame", "frame", "variant", "damaged", "empty", "text"]))
    if kind == "frame":
        rel_fixture = draw(st.sampled_from(FIXTURES))
        data = content(fixture_bytes(rel_fixture), rel_fixture)
    elif kind == "variant":
        variant, rel_fixture = draw(st.sampled_from(sorted(VARIANTS))), draw(st.sampled_from(FIXTURES))
        data = content(variant_bytes(variant, rel_fixture), f"{variant} of {rel_fixture}")
    elif kind == "damaged":
        data = content(draw(damaged_jpeg()), "damaged")
    else:
        data = content(b"" if kind == "empty" else b"field notes\n", kind)
    return rel, data, float(draw(st.integers(0, 120)))


def ignored(rel: bytes) -> bool:
    """Dot-files and in-progress uploads are silently ignored by the source (README, sources/folder)."""
    return any(part.startswith(b".") for part in rel.split(b"/")) or rel.lower().endswith(
        (b".part", b".partial", b".tmp", b".crdownload")
    )


def is_frame(rel: bytes) -> bool:
    return os.path.splitext(rel)[1].lower() in (b".jpg", b".jpeg")


def db_rows(root: Path, table: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{root / 'ledger.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    finally:
        db.close()


def as_bytes(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else os.fsencode(name)


def blank_on_full_bytes(content: bytes) -> bool:
    """Scored independently on the original bytes: decodable, and under the cutoff."""
    try:
        prepared = prepare_jpeg(content, classifier().card.input, ImagingSettings())
    except ImageError:
        return False
    return classifier().score(prepared.pixels) < CUTOFF


KEPT = {"kept", "failed_kept"}
STORED = {"kept", "failed_kept", "audit", "quarantined", "blank_kept"}


def run_once(tmp: Path) -> None:
    """`blankfilter run --once`, in-process, through the same build_trap and loop as the CLI."""
    from firmware_app.app import build_trap

    config = load_config(
        None,
        [
            f"source.inbox={tmp / 'inbox'}", f"store.root={tmp / 'store'}", "source.settle_s=0",
            "source.watch=poll", "store.discard=delete", "store.audit_rate=0", "store.min_free_mb=0",
            f"model.cutoff={CUTOFF}", "context.enabled=false",
        ],
    )  # fmt: skip
    trap = build_trap(config, once=True, classifier=classifier())
    try:
        summary = trap.loop.run()
    finally:
        trap.close()
    assert not summary.failures, summary.failures
    assert trap.loop.waiting == 0, "run --once left frames undecided"


def check_folder_run(files: list[tuple[bytes, bytes, float]]) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        inbox, root = os.fsencode(tmp / "inbox"), tmp / "store"
        os.makedirs(inbox)
        originals: dict[bytes, bytes] = {}
        for rel, content, offset in files:
            if rel in originals or any(rel.startswith(p + b"/") or p.startswith(rel + b"/") for p in originals):
                continue  # one file per name (and no file where another's folder is)
            path = os.path.join(inbox, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(content)
            stamp = 1_650_000_000.0 + offset
            os.utime(path, (stamp, stamp))
            originals[rel] = content

        run_once(tmp)
        rows = db_rows(root, "frames")
        run_once(tmp)  # a restart over the same inbox and ledger: nothing new, nothing twice
        assert db_rows(root, "frames") == rows, "a second run changed the ledger"

        for action in sorted({r["action"] for r in rows}):
            hypothesis.event(f"action {action}")
        by_path = Counter(as_bytes(r["path"]) for r in rows)
        assert all(n == 1 for n in by_path.values()), f"more than one row for a frame: {by_path}"
        row_of = {as_bytes(r["path"]): r for r in rows}
        skipped = {as_bytes(r["path"]) for r in db_rows(root, "skipped")}
        for rel, content in originals.items():
            where = os.path.join(inbox, rel)
            if ignored(rel) or not is_frame(rel):
                assert rel not in row_of, f"{rel!r} is not a frame but has a row"
                with open(where, "rb") as fh:
                    assert fh.read() == content, f"{rel!r} (not a frame) was changed"
                assert ignored(rel) or rel in skipped, f"{rel!r} was neither judged nor recorded as skipped"
                continue
            assert rel in row_of, f"frame {rel!r} has no ledger row"
            row = row_of[rel]
            assert row["sha256"] == sha(content), f"{rel!r}: the ledger's sha256 is not of its full bytes"
            assert row["state"] == "done", row
            assert not os.path.lexists(where), f"{rel!r} is still in the inbox after a {row['action']}"
            if row["action"] == "deleted":
                assert row["decision"] == "blank" and row["score"] is not None and row["score"] < CUTOFF, row
                assert blank_on_full_bytes(content), f"{rel!r} deleted, but its full bytes do not score blank"
            else:
                assert row["action"] in STORED, row
                with open(os.path.join(os.fsencode(root), as_bytes(row["dest"])), "rb") as fh:
                    assert fh.read() == content, f"{row['dest']!r} holds other bytes than {rel!r}"
            if row["score"] is None:
                assert row["action"] == "failed_kept" and row["error"], row

        bursts: dict[str, set[str]] = {}
        for row in rows:
            bursts.setdefault(row["burst"], set()).add(row["action"])
        kept_bursts = {b for b, actions in bursts.items() if actions & KEPT}
        for b in kept_bursts:
            assert "deleted" not in bursts[b], f"burst {b} was kept and deleted in part: {bursts[b]}"
        events = [json.loads(r["payload"]) for r in db_rows(root, "outbox")]
        assert sorted(e["burst"] for e in events) == sorted(kept_bursts), "not one event per kept burst"
        for event in events:
            assert {f["sha256"] for f in event["frames"]} == {
                r["sha256"] for r in rows if r["burst"] == event["burst"]
            }, event
            burst_rows = [r for r in rows if r["burst"] == event["burst"]]
            assert len(event["frames"]) == len(burst_rows), (event, burst_rows)
            for frame in event["frames"]:
                named = [r for r in burst_rows if r["sha256"] == frame["sha256"] and r["dest"]
                         and printable(name_from_db(r["dest"]) or "") == frame["file"]]  # fmt: skip
                assert named, f"the event names {frame['file']}, which no row of its burst was stored as"
                stored = os.path.join(os.fsencode(root), as_bytes(named[0]["dest"]))
                assert os.path.isfile(stored), f"the event names {frame['file']}, which does not exist"


@prop("folder", 150, files=st.lists(inbox_file(), min_size=1, max_size=8))
def prop_folder_trap(files: list[tuple[bytes, bytes, float]]) -> None:
    """Any set of files in a real inbox, run --once twice with the shipped model: every frame kept,
    stored or deleted only when its full bytes score blank; one row each; one event per kept burst."""
    check_folder_run(files)


def test_folder_trap_end_to_end() -> None:
    prop_folder_trap()


# -- 5. kill -9 at random moments, with frames arriving and uploads stalling ------------------------
DAEMON_SETS = ["source.settle_s=0", "source.watch=poll", "source.poll_s=0.1", "store.min_free_mb=0",
               "store.audit_rate=0", "store.discard=delete", f"model.cutoff={CUTOFF}",
               "context.enabled=false"]  # fmt: skip
STEP_TIMEOUT = 60.0  # no wait of the property is unbounded: start-up, a kill, the final run


# when a kill lands: at once (start-up and recovery too), once the model is loaded, or once the
# daemon has recorded a row for a file waiting in the inbox (scoring, the ledger being written), or
# (bursts closing: a short gap) once it has decided one more frame (its move or delete just done)
kill_modes = st.sampled_from(["now", "started", "scored", "decided"])


@st.composite
def kill_schedule(draw: st.DrawFn) -> tuple[float, list[tuple[Any, ...]]]:
    """(decision.burst_gap_s, steps). Steps: ("drop", fixture), ("stall", fixture, fraction written),
    ("finish", which open stall), ("wait", ms) and ("kill", when); at least one kill, and frames.

    With the default 10 s gap no burst closes in the daemon while the steps run: kills land in
    start-up, recovery, scanning, scoring and the writing of rows, and a stalled upload's first row is
    superseded. With a 0.3 s gap bursts close and kills land in decisions, moves and deletes too; a
    stalled upload is then a plain drop (a burst that closed on a half file keeps it, by design)."""
    step = st.one_of(
        st.tuples(st.just("drop"), st.sampled_from(FIXTURES)),
        st.tuples(st.just("stall"), st.sampled_from(FIXTURES), st.sampled_from([0.1, 0.5, 0.9])),
        st.tuples(st.just("finish"), st.integers(0, 3)),
        st.tuples(st.just("wait"), st.integers(10, 300)),
        st.tuples(st.just("kill"), kill_modes),
    )
    steps = draw(st.lists(step, min_size=2, max_size=14))
    where = draw(st.integers(0, len(steps)))
    steps = [("drop", draw(st.sampled_from(FIXTURES))), *steps[:where], ("kill", draw(kill_modes)), *steps[where:]]
    gap = draw(st.sampled_from([10.0, 0.3]))
    if gap < 1:
        steps = [("drop", s[1]) if s[0] == "stall" else s for s in steps]
    return gap, steps


def start_daemon(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "firmware_app", *args], stdout=subprocess.DEVNULL,
                                stderr=err, env=cli_env(), start_new_session=True)  # fmt: skip


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon and anything it started (its own session); bounded."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STEP_TIMEOUT)


def wait_for_log(proc: subprocess.Popen[bytes], log: Path, text: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"no {text!r} from the daemon in {STEP_TIMEOUT:.0f} s"
        time.sleep(0.01)  # let the daemon start


def ledger_rows(root: Path) -> list[dict[str, Any]]:
    """The frame rows, read while the daemon may be writing them (none before it made its tables)."""
    try:
        return db_rows(root, "frames")
    except sqlite3.Error:
        return []


def waiting(inbox: Path, root: Path) -> bool:
    """Whether a file in the inbox has bytes the ledger has no row for (the daemon will score it)."""
    known = {(r["path"], r["sha256"]) for r in ledger_rows(root)}
    for path in inbox.rglob("*"):
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # a folder, or moved away by the daemon meanwhile
            continue
        if (path.relative_to(inbox).as_posix(), sha(data)) not in known:
            return True
    return False


def decided(rows: list[dict[str, Any]]) -> int:
    return sum(r["state"] == "done" for r in rows)


def wait_for_row(proc: subprocess.Popen[bytes], root: Path, count: Callable[[list[dict[str, Any]]], int],
                 before: int) -> None:  # fmt: skip
    """Until count(rows) grows past `before`: the daemon recorded (or decided) one more frame."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while count(ledger_rows(root)) <= before:
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"the daemon recorded no new row in {STEP_TIMEOUT:.0f} s"
        time.sleep(0.01)  # let the daemon work


def undecided(root: Path) -> bool:
    """Whether the ledger has a row not yet done (read while the daemon may be writing it)."""
    return any(r["state"] != "done" for r in ledger_rows(root))


def check_kill_9(burst_gap: float, schedule: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        inbox, root, log = tmp / "inbox", tmp / "store", tmp / "daemon-0.log"
        for cam in ("cam1", "cam2"):
            (inbox / cam).mkdir(parents=True)
        args = ["--model", str(SHIPPED), "--set", f"source.inbox={inbox}", "--set", f"store.root={root}"]
        for s in [*DAEMON_SETS, f"decision.burst_gap_s={burst_gap}"]:
            args += ["--set", s]
        finals: dict[str, bytes] = {}  # inbox-relative path -> the bytes it ends with
        stalled: list[tuple[Path, bytes, int]] = []  # (path, full bytes, bytes written so far)
        kills = 0
        proc = start_daemon(["run", *args], log)
        try:
            for number, step in enumerate(schedule):
                rel = f"cam{number % 2 + 1}/F{number:03d}.JPG"
                if step[0] == "drop":
                    finals[rel] = fixture_bytes(step[1])
                    (inbox / rel).write_bytes(finals[rel])
                elif step[0] == "stall":
                    finals[rel] = fixture_bytes(step[1])
                    part = max(1, int(len(finals[rel]) * step[2]))
                    (inbox / rel).write_bytes(finals[rel][:part])  # the upload stalls here
                    stalled.append((inbox / rel, finals[rel], part))
                elif step[0] == "finish" and stalled:
                    path, full, part = stalled.pop(step[1] % len(stalled))
                    with path.open("ab") as fh:  # the upload resumes where it stopped
                        fh.write(full[part:])
                elif step[0] == "wait":
                    time.sleep(step[1] / 1000)  # let the daemon work
                elif step[0] == "kill":
                    if step[1] != "now":
                        wait_for_log(proc, log, "cutoff")  # the kill lands in the work, not in start-up
                    if step[1] == "scored" and waiting(inbox, root):
                        wait_for_row(proc, root, lambda rows: len(rows), len(ledger_rows(root)))
                    if step[1] == "decided" and burst_gap < 1 and (waiting(inbox, root) or undecided(root)):
                        wait_for_row(proc, root, decided, decided(ledger_rows(root)))
                    in_flight = undecided(root)
                    kill_group(proc)
                    hypothesis.event(f"killed with {'undecided rows' if in_flight else 'no undecided row'}")
                    if any(r["state"] == "done" for r in ledger_rows(root)):
                        hypothesis.event("killed after a burst was decided")
                    assert proc.returncode == -signal.SIGKILL, log.read_text(errors="replace")
                    kills += 1
                    log = tmp / f"daemon-{kills}.log"  # its own log: "cutoff" is this start's line
                    proc = start_daemon(["run", *args], log)
            assert proc.poll() is None, f"the daemon exited by itself:\n{log.read_text(errors='replace')}"
        finally:
            kill_group(proc)
        hypothesis.event(f"kills {kills}")
        for path, full, part in stalled:
            with path.open("ab") as fh:
                fh.write(full[part:])
        done = subprocess.run([sys.executable, "-m", "firmware_app", "run", "--once", *args], capture_output=True,
                              text=True, timeout=STEP_TIMEOUT, env=cli_env(), check=False)  # fmt: skip
        assert done.returncode == 0, f"the final run --once: rc {done.returncode}\n{done.stderr}"
        check_after_kills(inbox, root, finals)


def check_after_kills(inbox: Path, root: Path, finals: dict[str, bytes]) -> None:
    left = sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file())
    assert not left, f"frames left in the inbox after the final run: {left}"
    rows = db_rows(root, "frames")
    assert all(r["state"] == "done" for r in rows), [r for r in rows if r["state"] != "done"]
    for action in sorted({r["action"] for r in rows}):
        hypothesis.event(f"action {action}")
    live = [r for r in rows if r["action"] != "superseded"]
    by_path = Counter(r["path"] for r in live)
    assert set(by_path) == set(finals), f"rows for {sorted(set(by_path) - set(finals))}, none for " + str(
        sorted(set(finals) - set(by_path))
    )
    assert all(n == 1 for n in by_path.values()), f"more than one live row for a file: {by_path}"
    stored = set()
    for row in live:
        full = finals[row["path"]]
        assert row["sha256"] == sha(full), f"{row['path']}: judged on other bytes than it ended with: {row}"
        if row["action"] == "deleted":
            assert row["decision"] == "blank" and row["score"] is not None and row["score"] < CUTOFF, row
            assert blank_on_full_bytes(full), f"{row['path']} deleted, but its full bytes do not score blank"
        else:
            assert row["action"] in STORED and row["dest"], row
            assert (root / row["dest"]).is_file(), f"{row['path']} was {row['action']} as {row['dest']}, not there"
            assert (root / row["dest"]).read_bytes() == full, f"{row['dest']} holds other bytes than {row['path']}"
            stored.add(row["dest"])
    in_store = {p.relative_to(root).as_posix() for d in ("kept", "audit", "quarantine", "blank")
                for p in (root / d).rglob("*") if p.is_file()}  # fmt: skip
    assert in_store == stored, f"store files no live row names: {sorted(in_store - stored)}"

    bursts: dict[str, set[str]] = {}
    for row in live:
        bursts.setdefault(row["burst"], set()).add(row["action"])
    kept_bursts = {b for b, actions in bursts.items() if actions & KEPT}
    events = [json.loads(r["payload"]) for r in db_rows(root, "outbox")]
    assert sorted(e["burst"] for e in events) == sorted(kept_bursts), "not one event per kept burst"
    for event in events:
        for frame in event["frames"]:
            path = root / frame["file"]
            assert path.is_file(), f"the event names {frame['file']}, which does not exist"
            assert sha(path.read_bytes()) == frame["sha256"], f"{frame['file']} holds other bytes than its event says"


@prop("kill9", 20, schedule=kill_schedule())
def test_kill_9_at_random_moments_loses_and_repeats_nothing(schedule: tuple[float, list[tuple[Any, ...]]]) -> None:
    """A real `run` daemon on a real inbox, SIGKILLed and restarted at drawn moments while complete
    frames arrive and uploads stall and resume; after the last uploads finish and a final run --once:
    every file kept with its bytes or deleted as blank on its full bytes, one live row each, nothing
    undecided, nothing stored twice, one event per kept burst naming files that exist."""
    hypothesis.event(f"burst gap {schedule[0]} s")
    check_kill_9(*schedule)
