"""`blankfilter run` says how far it is and, in a dry run, what it would do: real subprocesses on the
fixture frames. Not a terminal (a pipe, as in a journal): a progress line every `--progress-every`
seconds; a terminal (a real pseudo-terminal here): a progress bar."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import ALL_FRAMES, BURSTS, TINY_U8, cli_env

RunCli = Callable[..., subprocess.CompletedProcess[str]]
CUTOFF = float(json.loads(TINY_U8.with_suffix(".json").read_text())["cutoff"])


def scores(run_cli: RunCli, inbox: Path) -> dict[str, float]:
    done = run_cli("classify", "--json", "--model", TINY_U8, inbox, check_rc=0)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {Path(d["path"]).relative_to(inbox).as_posix(): d["score"] for d in lines}


def test_a_piped_run_writes_progress_lines_and_a_closing_line_with_the_frame_count(
    run_cli: RunCli, make_inbox: Callable[..., Path], store_args: Callable[..., list[str]]
) -> None:
    make_inbox()
    done = run_cli("run", "--once", "--progress-every", "0", *store_args(), check_rc=0)
    total = len(ALL_FRAMES)
    progress = re.findall(
        r"progress: judged (\d+) of (\d+) frames \(\d+%\), [\d.]+ frames/s, about .* left", done.stderr
    )
    assert [int(n) for n, _ in progress] == list(range(1, total)), done.stderr
    assert {int(t) for _, t in progress} == {total}
    assert f"judged {total} frames in " in done.stderr


def test_a_small_inbox_judged_within_the_interval_writes_no_progress_line(
    run_cli: RunCli, make_inbox: Callable[..., Path], store_args: Callable[..., list[str]]
) -> None:
    make_inbox()
    done = run_cli("run", "--once", *store_args(), check_rc=0)  # the default: every 30 s
    assert "progress:" not in done.stderr
    assert "judged " not in done.stderr


def test_a_run_on_a_terminal_shows_a_progress_bar_with_the_frame_count(
    make_inbox: Callable[..., Path], store_args: Callable[..., list[str]]
) -> None:
    make_inbox()
    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "firmware_app", "run", "--once", *store_args()]
    env = {k: v for k, v in cli_env().items() if k != "JOURNAL_STREAM"} | {"COLUMNS": "100"}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    output = b""
    while True:  # read until the child closes the terminal
        ready, _, _ = select.select([leader], [], [], 120)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # EIO: the child is gone
            chunk = b""
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    total = len(ALL_FRAMES)
    assert "judging" in text and f"{total}/{total}" in text, text
    assert f"judged {total} frames in " in text
    assert "progress:" not in text  # the bar, not the journal's lines


def test_a_dry_run_says_would_keep_and_would_quarantine_for_each_frame_and_touches_nothing(
    run_cli: RunCli, make_inbox: Callable[..., Path], store_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    inbox = make_inbox()
    p = scores(run_cli, inbox)
    before = sorted(f.relative_to(inbox).as_posix() for f in inbox.rglob("*") if f.is_file())
    done = run_cli(
        "run", "--once", "--dry-run", *store_args(store__discard="quarantine", store__audit_rate=0), check_rc=0
    )
    said = dict(
        (m.group(2), m.group(1)) for m in re.finditer(r"dry run: (would keep|would quarantine) (\S+) -> ", done.stderr)
    )
    expected = {}
    for folder, names in BURSTS:
        blank = all(p[f"{folder}/{n}"] < CUTOFF for n in names)
        expected |= {f"{folder}/{n}": "would quarantine" if blank else "would keep" for n in names}
    assert said == expected, done.stderr
    assert "would quarantine" in said.values() and "would keep" in said.values()  # both wordings shown
    counts = {w: sum(v == w for v in expected.values()) for w in ("would keep", "would quarantine")}
    assert f"dry run done: would keep {counts['would keep']} frame(s), would quarantine {counts['would quarantine']}" \
        in done.stderr  # fmt: skip
    assert "nothing was moved, deleted or recorded" in done.stderr
    assert sorted(f.relative_to(inbox).as_posix() for f in inbox.rglob("*") if f.is_file()) == before
    assert not (tmp_path / "store" / "ledger.db").exists()
