"""Events as CSV, one row per event, safe to open in a spreadsheet.

A cell that starts with = + - @ (or a tab or carriage return) would be read as a formula by Excel,
LibreOffice or Sheets (CSV injection): such cells get a leading apostrophe, as OWASP recommends. The
spreadsheets skip leading blanks and line breaks and read the full-width signs (＝ ＋ － ＠) as the
ASCII ones, so the first character that is not white space or invisible is what counts, compared in
its compatibility form (NFKC). The values come from traps over MQTT, so a file name may well start
with any of them.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

COLUMNS = ("event_id", "trap_id", "burst", "first_frame_at", "last_frame_at", "hour", "frames", "max_score",
           "unscored_frames", "cutoff", "model", "model_version", "software", "first_file", "received_at",
           "thumbnail")  # fmt: skip
_FORMULA_SIGNS = frozenset("=+-@")
_FORMULA_START = ("\t", "\r")  # a cell starting with these is guarded whatever follows


def starts_a_formula(text: str) -> bool:
    """Whether a spreadsheet could read the cell as a formula (see the module's docstring)."""
    if text.startswith(_FORMULA_START):
        return True
    for char in text:
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf"):  # blanks, controls, BOM, zero-width
            continue
        return unicodedata.normalize("NFKC", char) in _FORMULA_SIGNS
    return False


def safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if starts_a_formula(text) else text


def row(event: dict[str, Any], received_at: str, has_thumbnail: bool) -> list[str]:
    first = event["first_frame_at"]
    values = [event["event_id"], event["trap_id"], event["burst"], first, event["last_frame_at"],
              first[11:13] if len(first) >= 13 else "", len(event["frames"]), event["max_score"],
              event["unscored_frames"], event["cutoff"], event["model"]["name"], event["model"]["version"],
              event["software"], event["frames"][0]["file"], received_at, "yes" if has_thumbnail else "no"]  # fmt: skip
    return [safe_cell(v) for v in values]


def lines(rows: Iterable[tuple[dict[str, Any], str, bool]]) -> Iterator[str]:
    """The CSV text, header first, a line at a time (for a streamed download)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for event, received_at, has_thumbnail in rows:
        writer.writerow(row(event, received_at, has_thumbnail))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def to_text(rows: Iterable[tuple[dict[str, Any], str, bool]]) -> str:
    return "".join(lines(rows))
