"""Commands that explain themselves: usage errors exit 2 and name what the user typed, every config
problem is reported at once, helps describe each command, `stats --json` has named fields, and the
console shows plain messages (the service's log keeps its journal format). Each runs the real CLI
as a subprocess."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ALL_FRAMES, FRAMES, TINY_U8, cli_env

RunCli = Callable[..., subprocess.CompletedProcess[str]]
LABELS = FRAMES / "labels.csv"
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
RUNTIME_INFO = "Created TensorFlow Lite XNNPACK delegate"


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    for suffix in (".tflite", ".json"):
        shutil.copyfile(TINY_U8.with_suffix(suffix), tmp_path / f"model{suffix}")
    return tmp_path / "model.tflite"


# -- usage errors exit 2 and say what is wrong ---------------------------------------------------------
def test_tune_plot_without_matplotlib_names_the_extra_to_install_before_tuning(model_copy: Path) -> None:
    """matplotlib made unimportable the way Python documents: a None entry in sys.modules makes
    `import matplotlib` raise ModuleNotFoundError, as on a trap without the convert extra."""
    card = model_copy.with_suffix(".json")
    before = card.read_bytes()
    blocked = "import sys; sys.modules['matplotlib'] = None; from firmware_app.cli import main; sys.exit(main())"
    argv = ["tune", "--model", str(model_copy), "--labels", str(LABELS), "--plot", str(model_copy.parent / "c.png")]
    done = subprocess.run([sys.executable, "-c", blocked, *argv, "--quiet"], capture_output=True, text=True,
                          env=cli_env(), timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2, done
    no_traceback(done)
    assert "--plot needs matplotlib" in done.stderr and "blankfilter[convert]" in done.stderr, done.stderr
    assert done.stdout == "", "checked before tuning: no half-done result"
    assert card.read_bytes() == before
    assert not (model_copy.parent / "c.png").exists()


LOLO = ["eval", "--context", "--labels", str(LABELS), "--lolo"]
HELD_OUT = ["--held-out-scores", str(LABELS), "--held-out-cutoffs", str(LABELS)]  # a labels CSV: no scores
HELD_OUT_TOGETHER = "--held-out-scores and --held-out-cutoffs go together, with --lolo and --deployment"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["tune"], "tune needs --labels CSV"),
        (["eval"], "eval needs --labels CSV"),
        (["eval", "--context"], "eval --context needs --labels CSV"),
        (["eval", "--scores", str(LABELS)], "eval --scores needs --cutoff"),
        ([*LOLO, "--held-out-scores", str(LABELS)], HELD_OUT_TOGETHER),
        (
            [*LOLO, "--deployment", *HELD_OUT],
            f"held-out classifier: {LABELS}, line 2: needs a path and a score in 0..1",
        ),
        # the time-order replay does not record each frame's references, which the veto needs
        ([*LOLO, *HELD_OUT], HELD_OUT_TOGETHER),
    ],
    ids=[
        "tune",
        "eval",
        "eval-context",
        "eval-scores-without-cutoff",
        "held-out-scores-alone",
        "held-out-scores-without-scores",
        "held-out-scores-without-deployment",
    ],
)
def test_tune_and_eval_without_their_input_are_usage_errors_exit_2(
    run_cli: RunCli, argv: list[str], words: str
) -> None:
    done = run_cli(*argv, "--quiet")
    assert done.returncode == 2, done
    assert f"blankfilter: error: {words}" in done.stderr, done.stderr
    no_traceback(done)


def test_an_error_names_the_option_the_user_typed(run_cli: RunCli) -> None:
    done = run_cli("classify", "--model", TINY_U8, "--cutoff", "2", "--threads", "0", FRAMES / ALL_FRAMES[0])
    assert done.returncode == 2, done
    assert "--cutoff 2.0: model.cutoff = 2.0: must be at most 1.0" in done.stderr, done.stderr
    assert "--threads 0: model.threads = 0: must be at least 1" in done.stderr, done.stderr
    assert "--set" not in done.stderr, "nobody typed a --set"
    done = run_cli("classify", "--set", "model.cutoff=2", FRAMES / ALL_FRAMES[0])
    assert done.returncode == 2 and "--set model.cutoff=2: model.cutoff = 2" in done.stderr, done.stderr


def test_bench_on_a_folder_that_does_not_exist_says_so(run_cli: RunCli, tmp_path: Path) -> None:
    done = run_cli("bench", "--images", tmp_path / "nonexistent", "--model", TINY_U8)
    assert done.returncode == 2, done
    assert f"blankfilter: error: --images {tmp_path / 'nonexistent'}: no such folder" in done.stderr, done.stderr
    no_traceback(done)


def test_a_failed_bench_variant_says_what_failed_after_the_colon(run_cli: RunCli, tmp_path: Path) -> None:
    """The model is only opened in the variants' own processes: their error must reach the user."""
    missing = tmp_path / "gone.tflite"
    done = run_cli("bench", "--images", FRAMES / "owl", "--model", missing, "--repeat", "1")
    assert done.returncode == 2, done
    (line,) = [ln for ln in done.stderr.splitlines() if "failed" in ln]
    assert re.search(r"bench variant reduced failed \(exit 2\): \S", line), line
    assert str(missing) in line and "cannot read model file" in line, line


def test_reference_add_outside_the_inbox_needs_camera(run_cli: RunCli, tmp_path: Path) -> None:
    store, inbox = tmp_path / "store", tmp_path / "inbox"
    frame = tmp_path / "elsewhere.jpg"
    shutil.copyfile(FRAMES / "speciesnet" / "blank.jpg", frame)
    sets = ["--set", f"store.root={store}", "--set", f"source.inbox={inbox}", "--model", str(TINY_U8)]
    done = run_cli("reference", "add", frame, *sets)
    assert done.returncode == 2, done
    assert str(frame) in done.stderr and "give --camera NAME" in done.stderr, done.stderr
    assert not (store / "references.db").exists(), "nothing is added under a made-up camera name"
    # In the inbox, the sub-folder names the camera, as the folder loop does.
    (inbox / "gate").mkdir(parents=True)
    shutil.copyfile(frame, inbox / "gate" / "blank.jpg")
    done = run_cli("reference", "add", inbox / "gate" / "blank.jpg", *sets, check_rc=0)
    assert "reference of camera gate" in done.stdout, done.stdout


def test_every_config_problem_of_a_file_is_reported_at_once(run_cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[trap]\nid = "north/1"\n[model]\nthreads = 0\n[store]\ndiscard = "shred"\n'
        '[mqtt]\ntopic_prefix = "a/#"\n[imaging]\ndark_below = 0.9\n[modle]\nx = 1\n'
    )
    done = run_cli("config", "--config", path)
    assert done.returncode == 2, done
    lines = done.stderr.removeprefix("blankfilter: error: ").splitlines()
    keys = ["trap.id", "model.threads", "store.discard", "mqtt.topic_prefix", "imaging.dark_below", "[modle]"]
    for key in keys:
        assert sum(key in line for line in lines) == 1, (key, lines)
    assert len(lines) == len(keys) and all(line.startswith(str(path)) for line in lines), lines
    done = run_cli("config", "--set", "trap.id=a b", "--set", "mqtt.ha_prefix=/x", "--set", "nokey", "--set",
                   "model.threads=0")  # fmt: skip
    assert done.returncode == 2, done
    for words in ("--set trap.id=a b: trap.id", "--set mqtt.ha_prefix=/x: mqtt.ha_prefix", "--set 'nokey'",
                  "--set model.threads=0: model.threads"):  # fmt: skip
        assert words in done.stderr, (words, done.stderr)


# -- helps ---------------------------------------------------------------------------------------------
HELP_WORDS = [("run", "Process the inbox"), ("stats", "frames per capture day"), ("eval", "recall, TNR and AUC"),
              ("tune", "Pick the cutoff")]  # fmt: skip


@pytest.mark.parametrize("command, words", HELP_WORDS)
def test_each_command_help_describes_it(run_cli: RunCli, command: str, words: str) -> None:
    done = run_cli(command, "--help", check_rc=0)
    description = done.stdout.split("\n\n")[1]  # argparse: usage, blank line, description
    assert words in " ".join(description.split()), done.stdout


def test_stats_help_explains_json_and_the_clock(run_cli: RunCli) -> None:
    text = " ".join(run_cli("stats", "--help", check_rc=0).stdout.split())
    assert "--json print the summary as one JSON object" in text, text
    assert "camera clock (EXIF, no zone)" in text and "processing time" in text, text


def test_config_defaults_list_the_allowed_values_of_keys_with_choices(run_cli: RunCli) -> None:
    out = run_cli("config", "--defaults", check_rc=0).stdout
    sections = {name: body for name, body in re.findall(r"\n\[(\w+)\]\n(.*?)(?=\n\n|\Z)", out, re.S)}
    for dotted, allowed in [
        ("store.discard", "delete, quarantine, keep"),
        ("camera.trigger", "pir, motion, both"),
        ("source.watch", "auto, inotify, poll"),
        ("model.runtime", "auto, ai_edge_litert, tflite_runtime"),
        ("log.level", "debug, info, warning, error"),
    ]:
        section, key = dotted.split(".")
        (line,) = [ln for ln in sections[section].splitlines() if ln.startswith(f"{key} = ")]
        assert line.endswith(f"(one of: {allowed})"), line
    assert "(one of:" not in next(ln for ln in sections["model"].splitlines() if ln.startswith("threads = "))


# -- stats ---------------------------------------------------------------------------------------------
def test_stats_json_days_are_capture_days_with_named_fields_and_their_clock(
    run_cli: RunCli, make_inbox: Callable[..., Path], store_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    make_inbox()  # EXIF frames carry their camera time; the rest have file times on 2023-11-14 (UTC)
    run_cli("run", "--once", *store_args(), check_rc=0)
    ledger = tmp_path / "store" / "ledger.db"
    with sqlite3.connect(ledger) as db:  # a row without a capture time, as an old ledger may have
        db.execute("UPDATE frames SET captured_at = NULL WHERE path = 'owl/RCNX1419.JPG'")
        seen = db.execute("SELECT substr(seen_at, 1, 10) FROM frames WHERE path = 'owl/RCNX1419.JPG'").fetchone()[0]
    stats_args = [a for a in store_args() if a not in ("--model", str(TINY_U8))]
    stats = json.loads(run_cli("stats", "--json", *stats_args, check_rc=0).stdout)
    days = {(d["day"], d["clock"]): d for d in stats["days"]}
    assert all(set(d) == {"day", "clock", "frames", "blank", "nonblank", "failed_kept"} for d in stats["days"])
    assert {key: d["frames"] for key, d in days.items()} == {
        ("2023-11-14", "utc"): 11,  # wellington and missouri: file times
        ("2016-09-25", "camera"): 1, ("2006-02-10", "camera"): 1,  # speciesnet: EXIF
        ("2014-07-01", "camera"): 1, ("2014-07-02", "camera"): 1,  # peru: EXIF
        (seen, "processed"): 1,  # the owl, its capture time gone: the day it was processed
    }  # fmt: skip
    assert all(d["blank"] + d["nonblank"] + d["failed_kept"] == d["frames"] for d in stats["days"])
    assert set(stats["clocks"]) == {"camera", "utc", "processed"}
    assert "EXIF, no zone" in stats["clocks"]["camera"]
    (model,) = stats["models"]
    assert set(model) == {"model", "version", "frames"} and model["frames"] == len(ALL_FRAMES)
    text = run_cli("stats", *stats_args, check_rc=0).stdout
    assert "capture day" in text and "2016-09-25" in text, text


# -- console output ------------------------------------------------------------------------------------
def test_interactive_commands_print_plain_messages_without_the_runtime_line(run_cli: RunCli, tmp_path: Path) -> None:
    done = run_cli("classify", "--model", TINY_U8, FRAMES / "owl", check_rc=0)
    assert done.stderr == "", done.stderr
    assert RUNTIME_INFO not in done.stdout
    inbox = tmp_path / "inbox" / "gate"
    inbox.mkdir(parents=True)
    shutil.copyfile(FRAMES / "speciesnet" / "blank.jpg", inbox / "blank.jpg")
    done = run_cli("reference", "add", inbox / "blank.jpg", "--model", TINY_U8, "--set", f"store.root={tmp_path}/s",
                   "--set", f"source.inbox={tmp_path / 'inbox'}", check_rc=0)  # fmt: skip
    assert done.stderr.splitlines() == [f"blankfilter: no config file: built-in defaults with 2 --set override(s), "
                                        f"store at {tmp_path}/s"], done.stderr  # fmt: skip


def test_runtime_warnings_pass_while_its_info_lines_are_dropped() -> None:
    """What the C++ runtime writes to fd 2 while a model loads: INFO lines go, anything else stays."""
    code = (
        "import os, sys\n"
        "from firmware_app.classifiers.runtime_log import runtime_info_to_debug\n"
        "with runtime_info_to_debug():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nERROR: op 7 failed\\n')\n"
        "    print('from python', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert done.stderr.splitlines() == ["ERROR: op 7 failed", "from python", "after"]


def test_with_no_room_for_the_catch_a_model_loads_and_the_runtime_lines_show() -> None:
    """A full card (no temporary file can be made): nothing is caught, nothing is lost or stopped."""
    code = (
        "import errno, os, tempfile\n"
        "def full(*a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "tempfile.TemporaryFile = full\n"
        "from firmware_app.classifiers.runtime_log import runtime_info_to_debug\n"
        "with runtime_info_to_debug():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "print('loaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert done.stdout == "loaded\n" and done.stderr == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"


def run_lines(args: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "firmware_app", "run", "--once", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=True)  # fmt: skip
    return [line for line in done.stderr.splitlines() if not line.startswith("blankfilter: ")]


def test_run_as_a_service_keeps_level_and_logger_and_at_a_terminal_prints_plain(
    make_inbox: Callable[..., Path], store_args: Callable[..., list[str]]
) -> None:
    make_inbox(bursts=[("speciesnet", ["blank.jpg"])])
    env = cli_env() | {"JOURNAL_STREAM": "8:12345"}
    journal = run_lines(store_args(), env)
    assert journal and all(re.match(r"^(INFO|WARNING|ERROR) [\w.]+: ", line) for line in journal), journal
    assert not any(RUNTIME_INFO in line for line in journal), journal
    env.pop("JOURNAL_STREAM")
    logfile = run_lines(store_args(), env)  # stderr a pipe (cron, a log file): time stamps
    assert logfile and all(STAMP.match(line) for line in logfile), logfile
    # At a terminal: the message alone.
    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "firmware_app", "run", "--once", *store_args()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the run is over
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    lines = [ln for ln in out.decode().splitlines() if ln.strip() and not ln.startswith("blankfilter: ")]
    assert lines and any(ln.startswith("done: ") for ln in lines), lines
    assert not any(re.match(r"^(\d{4}-\d\d-\d\d |INFO |WARNING |ERROR |DEBUG )", ln) for ln in lines), lines
