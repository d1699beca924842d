"""The README's two commands on a fresh machine.

scripts/demo runs end to end as a real subprocess (on a copy of what it reads, so a person's ./demo/
stays as it is; BLANKFILTER_DEMO_VENV points it at the venv running this test instead of building
.venv-demo). Its report is checked against the ledger its run wrote and against labels.csv.

scripts/lib.sh holds what scripts/test and scripts/demo decide before they install anything (which
Python, which torch, which system packages); its functions are called here with real interpreters
and a PATH made for each case, and install nothing.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FRAMES
from mqtt_broker import Subscriber, wait_until

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "scripts" / "lib.sh"
TOOLS = ("ls", "sort", "sed", "awk", "uname", "id", "cat")  # what lib.sh calls besides Python


# -- scripts/demo -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """scripts/demo run once in a copy of the files it reads: (that folder, its stdout)."""
    root = tmp_path_factory.mktemp("demo-checkout")
    shutil.copytree(REPO / "scripts", root / "scripts")
    shutil.copytree(REPO / "examples", root / "examples")
    shutil.copytree(FRAMES, root / "tests" / "fixtures" / "frames")
    (root / "models").symlink_to(REPO / "models")  # the shipped model the demo checks for
    env = {**os.environ, "BLANKFILTER_DEMO_VENV": str(Path(sys.executable).parent.parent)}
    done = subprocess.run(
        [str(root / "scripts" / "demo")], cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    yield root, done.stdout


def ledger(root: Path) -> dict[str, list[dict[str, object]]]:
    """The run's frames per burst, read with plain sqlite3."""
    db = sqlite3.connect(f"file:{root / 'demo' / 'store' / 'ledger.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    bursts: dict[str, list[dict[str, object]]] = {}
    for row in db.execute("SELECT * FROM frames WHERE burst IS NOT NULL ORDER BY captured_ts, path"):
        bursts.setdefault(row["burst"], []).append(dict(row))
    db.close()
    return bursts


def burst_blocks(stdout: str) -> dict[str, list[str]]:
    """The report's three lines per burst, by the burst's first frame."""
    lines = stdout.splitlines()
    blocks = {}
    for i, line in enumerate(lines):
        if m := re.match(r"\d+\. (\S+)(?: \.\. \S+)? \(\d+ frames?, taken ", line):
            blocks[m.group(1)] = lines[i : i + 3]
    return blocks


def labels() -> dict[str, str]:
    with (FRAMES / "labels.csv").open(newline="") as fh:
        return {row["path"]: row["label"] for row in csv.DictReader(fh)}


def test_demo_says_for_every_burst_what_the_ledger_recorded_and_which_frame_kept_it(demo: tuple[Path, str]) -> None:
    root, stdout = demo
    blocks = burst_blocks(stdout)
    recorded = ledger(root)
    assert len(blocks) == len(recorded) == 8
    for frames in recorded.values():
        first = frames[0]["path"]
        heading, decision, _ = blocks[str(first)]
        kept = any(f["action"] in ("kept", "failed_kept") for f in frames)
        assert decision.strip().startswith("KEPT" if kept else ("DISCARDED", "AUDITED")), (heading, decision)
        assert f"{len(frames)} frame" in heading
        folders = {str(Path(str(f["dest"])).parent) for f in frames}
        assert all(f"demo/store/{folder}/" in decision for folder in folders), decision
        if kept:  # the frame that kept it, with its score against the cutoff in force
            assert re.search(r"(scores|context score) \d\.\d{3} against (the|its) cutoff \d\.\d{3}", decision)
        taken = re.search(r"taken (\d{4})-", heading)
        assert taken and 2000 < int(taken.group(1)) <= 2024, heading  # capture times, not today's date


def test_demo_shows_camera_context_discarding_the_empty_burst_and_keeping_the_animal(demo: tuple[Path, str]) -> None:
    _, stdout = demo
    blocks = burst_blocks(stdout)
    assert "wellington (ir): 2 reference(s): 1 added by hand, 1 learned from bursts it discarded" in stdout
    assert "missouri, owl, peru, speciesnet: no references, so the classifier decides alone there" in stdout
    empty = blocks["wellington/1200_2-0.JPG"][1]
    assert empty.strip().startswith("DISCARDED whole as empty: every frame matches the camera's empty references")
    assert "the classifier alone would have kept it" in empty and "demo/store/quarantine/wellington/" in empty
    animal = blocks["wellington/11374_1-1.JPG"][1]
    assert animal.strip().startswith("KEPT whole:") and "context matched" in animal
    assert "no references for this camera" in blocks["owl/RCNX1419.JPG"][1]


def test_demo_compares_every_burst_with_labels_kept_out_of_its_inbox(demo: tuple[Path, str]) -> None:
    root, stdout = demo
    truth = labels()
    assert not list((root / "demo" / "inbox").rglob("labels.csv"))
    assert (root / "tests" / "fixtures" / "frames" / "labels.csv").is_file()  # never deleted
    blocks = burst_blocks(stdout)
    right = wrong = 0
    for frames in ledger(root).values():
        named = [truth[str(f["path"])] for f in frames if str(f["path"]) in truth]
        line = blocks[str(frames[0]["path"])][2]
        if not named:
            assert line.strip() == "labels.csv: not labelled"
            continue
        kept = any(f["action"] in ("kept", "failed_kept") for f in frames)
        ok = kept == any(label != "blank" for label in named)
        assert ("-> RIGHT" if ok else "-> WRONG") in line, line
        right, wrong = right + ok, wrong + (not ok)
    assert "labels.csv: empty -> WRONG: an empty burst was kept" in blocks["speciesnet/blank.jpg"][2]
    assert f"Against labels.csv: {right} of {right + wrong} labelled bursts right, {wrong} wrong" in stdout
    assert (
        "(3 of its frames are empty: kept with it, a burst is kept whole)"
        in blocks["missouri/SEQ75192_IMG_0001.JPG"][2]
    )


def test_demo_ends_with_what_was_kept_discarded_and_audited_where_and_the_events_waiting(
    demo: tuple[Path, str],
) -> None:
    root, stdout = demo
    summary = stdout[stdout.index("== In short") :]
    kept = len([p for p in (root / "demo" / "store" / "kept").rglob("*") if p.is_file()])
    quarantined = len([p for p in (root / "demo" / "store" / "quarantine").rglob("*") if p.is_file()])
    assert f"Kept:      {kept} frame(s) in " in summary and "demo/store/kept/" in summary
    assert f"Discarded: {quarantined} frame(s) in 1 burst(s) as empty, set aside in demo/store/quarantine/" in summary
    assert "Audited:   " in summary and "demo/store/audit/" in summary
    db = sqlite3.connect(f"file:{root / 'demo' / 'store' / 'ledger.db'}?mode=ro", uri=True)
    waiting = db.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]
    db.close()
    assert waiting > 0
    assert f"Events:    {waiting} event(s) wait in the ledger's outbox for an MQTT broker" in summary
    assert "--set mqtt.host=BROKER" in summary
    assert "2026" not in summary.split("Against")[0]  # no processing dates posing as capture days


def test_the_command_the_demo_gives_sends_its_waiting_events_to_a_broker(
    demo: tuple[Path, str], broker: Any, tmp_path: Path
) -> None:
    root, stdout = demo
    copy = tmp_path / "checkout"
    shutil.copytree(root, copy, symlinks=True)  # the demo's own ledger stays as the other tests read it
    command = re.search(r"to send them: (blankfilter run .*--set mqtt\.host=)BROKER", stdout)
    assert command, stdout
    words = command.group(1).split()
    subscriber = Subscriber(broker.port, "blankfilter/demo-trap/event").ready()
    try:
        exe = Path(sys.executable).parent / words[0]
        done = subprocess.run(
            [str(exe), *words[1:-1], f"{words[-1]}127.0.0.1", "--set", f"mqtt.port={broker.port}"],
            cwd=copy, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        kept = sum(any(f["action"] == "kept" for f in frames) for frames in ledger(root).values())
        assert kept > 0
        wait_until(lambda: len(subscriber.on("blankfilter/demo-trap/event")) >= kept, 30, "an event per kept burst")
    finally:
        subscriber.close()
    db = sqlite3.connect(f"file:{copy / 'demo' / 'store' / 'ledger.db'}?mode=ro", uri=True)
    assert db.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0] == 0
    db.close()


# -- scripts/lib.sh: what scripts/test and scripts/demo decide -------------------------------------
def interpreter(version: str) -> Path:
    """A real CPython `version` on this machine (apt's, or pyenv's)."""
    found = [Path(p) for p in (shutil.which(f"python{version}"),) if p]
    found += sorted(
        Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob(f"versions/{version}.*/bin/python3")
    )
    for path in found:  # a pyenv shim runs only with pyenv around it: the interpreter behind it is used
        code = "import sys; print(sys.version_info[:2], sys.executable)"
        done = subprocess.run([path, "-c", code], capture_output=True, text=True, check=False)
        have, _, executable = done.stdout.strip().partition(") ")
        if done.returncode == 0 and have + ")" == str(tuple(int(v) for v in version.split("."))):
            return Path(executable).resolve()
    pytest.skip(f"no Python {version} here: apt-get install python{version}, or pyenv install {version}")


def lib(call: str, tmp_path: Path, links: dict[str, Path], **env: str) -> subprocess.CompletedProcess[str]:
    """`call` after sourcing lib.sh, with PATH holding only `links` (name -> real program) and TOOLS."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    bin_dir.chmod(0o755)
    for name, target in {**{t: Path(shutil.which(t) or t) for t in TOOLS}, **links}.items():
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).symlink_to(target)
    clean = {"PATH": str(bin_dir), "HOME": str(tmp_path / "home"), "PYENV_ROOT": str(tmp_path / "pyenv")}
    return subprocess.run(
        ["/bin/bash", "-c", f". {LIB}; {call}"], env={**clean, **env}, capture_output=True, text=True, check=False
    )


def test_find_python_takes_python3_11_on_the_path_first_and_says_which(tmp_path: Path) -> None:
    py311, py312 = interpreter("3.11"), interpreter("3.12")
    done = lib("find_python", tmp_path, {"python3.11": py311, "python3": py312})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "bin" / "python3.11")
    assert done.stderr.strip() == f"== Python 3.11: {tmp_path / 'bin' / 'python3.11'}"


def test_find_python_takes_pyenvs_3_11_before_a_newer_python3(tmp_path: Path) -> None:
    py311, py312 = interpreter("3.11"), interpreter("3.12")
    pyenv_bin = tmp_path / "pyenv" / "versions" / "3.11.9" / "bin"
    pyenv_bin.mkdir(parents=True)
    (pyenv_bin / "python3.11").symlink_to(py311)
    done = lib("find_python", tmp_path, {"python3": py312})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(pyenv_bin / "python3.11")


def test_find_python_accepts_a_newer_python3_but_not_for_the_pi_leg_which_needs_exactly_3_11(tmp_path: Path) -> None:
    py312 = interpreter("3.12")
    done = lib("find_python", tmp_path, {"python3": py312})
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "bin" / "python3")
    assert "== Python 3.12:" in done.stderr
    exact = lib("find_python exact", tmp_path, {"python3": py312})
    assert exact.returncode == 1 and exact.stdout == ""
    assert "no Python 3.11 found" in exact.stderr and "apt-get install python3.11" in exact.stderr


def test_find_python_refuses_a_python3_older_than_3_11_and_says_what_to_install(tmp_path: Path) -> None:
    done = lib("find_python", tmp_path, {"python3": interpreter("3.10")})
    assert done.returncode == 1 and done.stdout == ""
    assert "no Python >= 3.11 found" in done.stderr and "apt-get install python3.11" in done.stderr


def test_find_python_uses_only_the_python_it_is_given(tmp_path: Path) -> None:
    py310, py311 = interpreter("3.10"), interpreter("3.11")
    done = lib("find_python", tmp_path, {"python3.11": py311}, PYTHON=str(py310))
    assert done.returncode == 1 and f"PYTHON={py310} is not a Python >= 3.11" in done.stderr


def wheel_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")  # only its name is looked at: nothing is installed
    return folder


def machine() -> str:
    return os.uname().machine


def test_torch_comes_from_a_local_cpu_wheel_when_pips_find_links_have_one(tmp_path: Path) -> None:
    py311 = interpreter("3.11")
    folder = wheel_folder(tmp_path, f"torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_{machine()}.whl")
    done = lib("torch_install_args python3.11", tmp_path, {"python3.11": py311},
               PIP_FIND_LINKS=str(folder), PIP_CONFIG_FILE=os.devnull)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["--find-links", str(folder), "torch==2.13.0+cpu"]


def test_torch_comes_from_pytorchs_cpu_index_without_a_local_wheel_for_this_python(tmp_path: Path) -> None:
    py312 = interpreter("3.12")
    folder = wheel_folder(tmp_path, f"torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_{machine()}.whl")  # not 3.12's
    done = lib("torch_install_args python3", tmp_path, {"python3": py312},
               PIP_FIND_LINKS=str(folder), PIP_CONFIG_FILE=os.devnull)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "--index-url", "https://download.pytorch.org/whl/cpu", "--extra-index-url", "https://pypi.org/simple",
        "torch==2.13.0+cpu",
    ]  # fmt: skip


def test_missing_system_packages_are_named_and_a_non_root_user_gets_the_line_that_installs_them(
    tmp_path: Path,
) -> None:
    done = lib("missing_apt_packages arm64", tmp_path, {})  # a PATH with none of the tools on it
    missing = set(done.stdout.split())
    assert {"chromium", "chromium-driver", "mosquitto-clients", "nodejs", "npm", "arch-test", "zstd"} <= missing
    assert "arch-test" not in lib("missing_apt_packages", tmp_path, {}).stdout  # arm64's only when asked
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:  # as nobody: it must not try apt, only say how
        shared = Path(tempfile.mkdtemp(prefix="lib-sh-"))  # a folder nobody may enter (pytest's are 0700)
        try:
            shared.chmod(0o755)
            as_nobody = (
                f"{setpriv} --reuid=65534 --regid=65534 --clear-groups /bin/bash -c '. {LIB}; install_apt_packages'"
            )
            done = lib(as_nobody, shared, {})
        finally:
            shutil.rmtree(shared)
    elif os.geteuid() != 0:
        done = lib("install_apt_packages", tmp_path, {})
    else:
        pytest.skip("setpriv (util-linux) is missing: apt-get install util-linux")
    assert done.returncode == 1
    assert re.search(
        r"missing system packages; install them with: sudo apt-get install -y .*chromium-driver", done.stderr
    )
