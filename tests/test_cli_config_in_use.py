"""Which config a command uses, and what a read-only command leaves behind: the CLI as a subprocess,
a real config file, the real feature extractor and reference bank in SQLite.

Without a config file the trap's store is /var/lib/blankfilter; a command that touches the store or
the ledger says so (or names the file) in one line on stderr at its start, and a command that only
reads (`reference list`) makes no folder or database where there was none."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FRAMES, MODELS, TINY_U8

from firmware_app.config import DEFAULT_CONFIG_PATH

RunCli = Callable[..., subprocess.CompletedProcess[str]]
EXTRACTOR = MODELS / "tiny_features.tflite"
BUILT_IN_STORE = Path("/var/lib/blankfilter")


def config_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "store at " in line]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "trap.toml"
    path.write_text(
        f'[source]\ninbox = "{tmp_path / "inbox"}"\nsettle_s = 0\n'
        f'[store]\nroot = "{tmp_path / "store"}"\nmin_free_mb = 0\n'
        f'[context]\nextractor = "{EXTRACTOR}"\n',
        encoding="utf-8",
    )
    return path


def test_reference_list_makes_no_folder_or_bank_where_there_was_none(tmp_path: Path, run_cli: RunCli) -> None:
    store = tmp_path / "nowhere" / "store"
    done = run_cli("reference", "list", "--set", f"store.root={store}", "--set", f"source.inbox={tmp_path / 'in'}",
                   "--set", f"context.extractor={EXTRACTOR}", check_rc=0)  # fmt: skip
    assert "0 reference(s) (no references)" in done.stdout, done.stdout
    assert not (tmp_path / "nowhere").exists(), sorted(p.name for p in (tmp_path / "nowhere").rglob("*"))
    assert not (tmp_path / "in").exists()


def test_reference_list_reads_an_existing_bank_without_changing_it(tmp_path: Path, run_cli: RunCli) -> None:
    config = write_config(tmp_path)
    run_cli("reference", "add", FRAMES / "speciesnet" / "blank.jpg", "--camera", "cam1", "--config", config,
            check_rc=0)  # fmt: skip
    store = tmp_path / "store"
    before = snapshot(store)
    done = run_cli("reference", "list", "--config", config, check_rc=0)
    assert "1 reference(s) (cam1/day: 1)" in done.stdout, done.stdout
    after = snapshot(store)
    # SQLite's own index of a WAL database (-shm, -wal) may be left by a reader; the bank is not touched
    assert after["references.db"] == before["references.db"]
    assert {k for k in after if not k.endswith(("-shm", "-wal"))} == set(before)


def test_each_command_that_touches_the_store_says_once_which_config_file_it_uses(
    tmp_path: Path, run_cli: RunCli
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    expected = f"blankfilter: config {config}, store at {tmp_path / 'store'}"
    for command in (["run", "--once", "--model", TINY_U8], ["stats"], ["reference", "list"]):
        done = run_cli(*command, "--config", config, check_rc=0)
        assert config_lines(done.stderr) == [expected], f"{command}:\n{done.stderr}"
        assert done.stderr.splitlines()[0] == expected, f"{command}: not said first:\n{done.stderr}"


def test_set_overrides_are_named_with_the_config_in_use(tmp_path: Path, run_cli: RunCli) -> None:
    store = tmp_path / "store"
    done = run_cli("reference", "list", "--set", f"store.root={store}", "--set", f"context.extractor={EXTRACTOR}",
                   check_rc=0)  # fmt: skip
    origin = (
        "config " + str(DEFAULT_CONFIG_PATH) if DEFAULT_CONFIG_PATH.is_file() else "no config file: built-in defaults"
    )
    assert config_lines(done.stderr) == [f"blankfilter: {origin} with 2 --set override(s), store at {store}"]


@pytest.mark.skipif(
    DEFAULT_CONFIG_PATH.exists() or BUILT_IN_STORE.exists(),
    reason=f"this machine has {DEFAULT_CONFIG_PATH} or {BUILT_IN_STORE}: a trap, not a clean workstation",
)
def test_without_a_config_file_reference_list_names_the_built_in_store_and_creates_nothing(run_cli: RunCli) -> None:
    done = run_cli("reference", "list", check_rc=0)
    assert config_lines(done.stderr) == [
        f"blankfilter: no config file: built-in defaults, store at {BUILT_IN_STORE}"
    ], done.stderr
    assert not BUILT_IN_STORE.exists(), f"a read-only command made {BUILT_IN_STORE}"
