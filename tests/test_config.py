"""firmware_app.config: defaults, file and --set precedence, path resolution, and error messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from firmware_app.config import SECTIONS, Config, describe, load_config
from firmware_app.errors import ConfigError

# Keys the design, the docs and the deploy files rely on (DESIGN.md, "Config (TOML)").
DESIGN_KEYS = [
    "trap.id",
    "source.kind",
    "source.inbox",
    "model.path",
    "model.cutoff",
    "model.threads",
    "model.edgetpu",
    "store.root",
    "store.discard",
    "store.audit_rate",
]


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load() -> None:
    config = load_config()
    assert config.origin == "defaults"
    assert config.trap.id == "trap-01"
    assert config.source.kind == "folder"
    assert config.source.inbox == Path("/var/lib/blankfilter/inbox")
    assert config.model.path == "" and config.model.cutoff is None
    assert config.model.threads == 2 and config.model.edgetpu is False
    assert config.store.root == Path("/var/lib/blankfilter")
    assert config.store.discard == "delete" and config.store.audit_rate == 0.02
    assert config.ledger_path == Path("/var/lib/blankfilter/ledger.db")
    assert config == Config()  # no file, no --set: exactly the dataclass defaults


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[trap]\nid = "ridge_2"\n[model]\nthreads = 3\ncutoff = 0.3\nedgetpu = true\n'
        '[store]\ndiscard = "quarantine"\naudit_rate = 0.1\n[source]\nextensions = [".JPG"]\n',
    )
    config = load_config(path)
    assert config.origin == str(path)
    assert config.trap.id == "ridge_2"
    assert config.model.threads == 3 and config.model.cutoff == 0.3 and config.model.edgetpu is True
    assert config.store.discard == "quarantine" and config.store.audit_rate == 0.1
    assert config.source.extensions == [".jpg"]  # compared case-insensitively
    assert config.imaging.gamma == "auto"  # untouched keys keep their defaults


def test_set_overrides_file_and_later_set_wins(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\ndiscard = "quarantine"\naudit_rate = 0.1\n[model]\nthreads = 3\n')
    config = load_config(path, ["store.discard=keep", "model.threads=4", "model.threads=6"])
    assert config.store.discard == "keep"  # --set beats the file
    assert config.model.threads == 6  # the last --set wins
    assert config.store.audit_rate == 0.1  # the file beats the defaults


def test_set_values_are_typed() -> None:
    config = load_config(
        None,
        ["model.edgetpu=true", "store.audit_rate=0", "decision.burst_gap_s=3", 'trap.id="north-1"', "log.level=debug"],
    )
    assert config.model.edgetpu is True
    assert config.store.audit_rate == 0.0 and isinstance(config.store.audit_rate, float)
    assert config.decision.burst_gap_s == 3.0 and isinstance(config.decision.burst_gap_s, float)
    assert config.trap.id == "north-1"
    assert config.log.level == "debug"


def test_relative_paths_resolve_against_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        '[source]\ninbox = "inbox"\n[store]\nroot = "../data"\n[model]\npath = "models/m.tflite"\n',
        name="etc/config.toml",
    )
    monkeypatch.chdir(tmp_path)  # somewhere else than the file's folder
    config = load_config(path)
    folder = path.parent.resolve()
    assert config.source.inbox == folder / "inbox"
    assert config.store.root == folder.parent / "data"
    assert config.model.path == str(folder / "models" / "m.tflite")


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, f'[source]\ninbox = "{tmp_path / "in"}"\n[model]\npath = "/opt/m.tflite"\n')
    config = load_config(path)
    assert config.source.inbox == tmp_path / "in"
    assert config.model.path == "/opt/m.tflite"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\ndiscrad = 'keep'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "store.discrad" in message and "discard" in message  # lists known keys


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[modle]\nthreads = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "[modle]" in str(info.value)
    with pytest.raises(ConfigError, match=r"--set modle\.threads=2.*unknown section \[modle\]"):
        load_config(None, ["modle.threads=2"])


def test_top_level_key_without_section(tmp_path: Path) -> None:
    path = write(tmp_path, 'discard = "keep"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "discard" in str(info.value)


def test_malformed_set() -> None:
    for item in ("store.discard", "discard=keep", ".discard=keep"):
        with pytest.raises(ConfigError, match=r"section\.key=value"):
            load_config(None, [item])


BAD_VALUES = [
    # (section, key, TOML value, words the message must also contain)
    ("model", "threads", '"two"', "number"),
    ("model", "threads", "2.5", "whole number"),
    ("model", "threads", "0", "at least"),
    ("model", "threads", "65", "at most"),
    ("model", "cutoff", "1.5", "at most"),
    ("model", "edgetpu", '"yes"', "true or false"),
    ("model", "runtime", '"tensorflow"', "one of"),
    ("store", "discard", '"shred"', "one of"),
    ("store", "audit_rate", "-0.1", "at least"),
    ("store", "root", "42", "path"),
    ("source", "extensions", '".jpg"', "list of strings"),
    ("source", "poll_s", "true", "number"),
    ("imaging", "gamma", '"on"', "one of"),
]


def bad_value_id(case: tuple[str, str, str, str]) -> str:
    return f"{case[0]}.{case[1]}={case[2]}"


@pytest.mark.parametrize("case", BAD_VALUES, ids=[bad_value_id(c) for c in BAD_VALUES])
def test_bad_value_in_file(tmp_path: Path, case: tuple[str, str, str, str]) -> None:
    section, key, value, words = case
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{section}.{key}" in message
    assert value.strip('"').lower() in message.lower()  # a TOML true is shown as Python's True
    assert words in message


@pytest.mark.parametrize("case", BAD_VALUES, ids=[bad_value_id(c) for c in BAD_VALUES])
def test_bad_value_on_command_line(case: tuple[str, str, str, str]) -> None:
    section, key, value, words = case
    item = f"{section}.{key}={value}"
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    message = str(info.value)
    assert f"--set {item}" in message
    assert f"{section}.{key}" in message
    assert words in message


def test_bad_trap_id_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[trap]\nid = "north/1"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "trap.id" in message and "north/1" in message


def test_bad_trap_id_from_set_names_the_set(tmp_path: Path) -> None:
    path = write(tmp_path, '[trap]\nid = "fine"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, ['trap.id="has space"'])
    message = str(info.value)
    assert "--set trap.id=" in message and "trap.id" in message and "has space" in message
    assert str(path) not in message  # the file's value was fine: blaming the file would mislead


@pytest.mark.parametrize("trap_id", ["", "-lead", "a" * 65, "n+1", "ünï"])
def test_trap_id_rules(trap_id: str) -> None:
    with pytest.raises(ConfigError, match=r"trap\.id"):
        load_config(None, [f'trap.id="{trap_id}"'])


def test_dark_below_must_be_under_bright_above(tmp_path: Path) -> None:
    path = write(tmp_path, "[imaging]\ndark_below = 0.6\nbright_above = 0.6\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "imaging.dark_below" in message and "0.6" in message
    with pytest.raises(ConfigError) as info:
        load_config(None, ["imaging.dark_below=0.8"])  # over the default bright_above, 0.75
    message = str(info.value)
    assert "--set imaging.dark_below=0.8" in message and "0.8" in message and "0.75" in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\nthreads = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "TOML" in message and "line 2" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)


def test_describe_lists_every_key_with_help_and_real_defaults() -> None:
    rows = describe()
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys))
    expected = {f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert set(keys) == expected
    assert set(DESIGN_KEYS) <= set(keys)
    defaults = Config()
    for key, default, help_text in rows:
        section, name = key.split(".")
        assert help_text.strip(), f"{key} has no help"
        assert default == getattr(getattr(defaults, section), name), key


def test_every_described_default_round_trips_through_set() -> None:
    """A default written back with --set must load: docs that print defaults stay valid config."""
    for key, default, _ in describe():
        if default is None:
            continue
        if isinstance(default, bool):
            text = "true" if default else "false"
        elif isinstance(default, (int, float)):
            text = repr(default)
        elif isinstance(default, list):
            text = "[" + ", ".join(str(v) if isinstance(v, int) else f'"{v}"' for v in default) + "]"
        else:
            text = f'"{default}"'
        if text == '""':
            continue  # empty strings (model.path) mean "use the default": nothing to round-trip
        config = load_config(None, [f"{key}={text}"])
        section, name = key.split(".")
        assert getattr(getattr(config, section), name) == default, key


# -- numbers must be finite and bounded; lists and strings must be usable (issue 15, item 9) ---------
NUMBER_KEYS = [
    (name, f.name)
    for name, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
    if f.type in ("float", "int", "float | None")
]


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "+nan"])
def test_non_finite_numbers_are_refused_for_every_number_key_in_a_file(tmp_path: Path, text: str) -> None:
    assert ("model", "cutoff") in NUMBER_KEYS and ("decision", "burst_gap_s") in NUMBER_KEYS
    for section, key in NUMBER_KEYS:
        path = write(tmp_path, f"[{section}]\n{key} = {text}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert str(path) in message and f"{section}.{key}" in message, message
        said = message.replace(str(path), "")  # the test's own folder name says "finite" too
        assert text.lstrip("+-") in said and "must be a finite number" in said, message


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_for_every_number_key_on_the_command_line(text: str) -> None:
    for section, key in NUMBER_KEYS:
        item = f"{section}.{key}={text}"
        with pytest.raises(ConfigError) as info:
            load_config(None, [item])
        message = str(info.value)
        assert f"--set {item}" in message and "must be a finite number" in message, message


def test_every_number_key_has_a_lower_and_an_upper_bound() -> None:
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.type in ("float", "int", "float | None"):
                assert f.metadata["lo"] is not None and f.metadata["hi"] is not None, f"{name}.{f.name}"


@pytest.mark.parametrize("how", ["file", "set"])
def test_a_free_space_floor_of_1e308_is_refused(tmp_path: Path, how: str) -> None:
    with pytest.raises(ConfigError) as info:
        if how == "file":
            load_config(write(tmp_path, "[store]\nmin_free_mb = 1e308\n"))
        else:
            load_config(None, ["store.min_free_mb=1e308"])
    message = str(info.value)
    assert "store.min_free_mb" in message and "1e+308" in message and "at most" in message


@pytest.mark.parametrize("value", ["[]", '[""]', '["jpg"]', '[".j/pg"]'])
@pytest.mark.parametrize("how", ["file", "set"])
def test_extensions_must_be_a_non_empty_list_of_suffixes(tmp_path: Path, how: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        if how == "file":
            load_config(write(tmp_path, f"[source]\nextensions = {value}\n"))
        else:
            load_config(None, [f"source.extensions={value}"])
    message = str(info.value)
    assert "source.extensions" in message and 'e.g. [".jpg", ".jpeg"]' in message, message


@pytest.mark.parametrize("how", ["file", "set"])
def test_a_10_kb_client_id_is_refused_and_23_to_256_characters_are_accepted(tmp_path: Path, how: str) -> None:
    def load(client_id: str) -> Config:
        if how == "file":
            return load_config(write(tmp_path, f'[mqtt]\nclient_id = "{client_id}"\n'))
        return load_config(None, [f'mqtt.client_id="{client_id}"'])

    with pytest.raises(ConfigError) as info:
        load("x" * 10_000)
    message = str(info.value)
    assert "mqtt.client_id" in message and "at most 256" in message and len(message) < 400, message
    for n in (23, 256):  # 23: what every MQTT 3.1.1 broker must accept
        assert load("c" * n).mqtt.client_id == "c" * n


def test_several_bad_values_in_a_file_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[model]\ncutoff = nan\n[decision]\nburst_gap_s = nan\n[store]\naudit_rate = nan\nmin_free_mb = 1e308\n"
        "[source]\nextensions = []\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for key in ("model.cutoff", "decision.burst_gap_s", "store.audit_rate", "store.min_free_mb", "source.extensions"):
        assert key in message, message
    assert message.count(str(path)) == 5


def test_config_command_refuses_a_nan_cutoff_with_one_message(tmp_path: Path, run_cli: Any) -> None:
    path = write(tmp_path, "[model]\ncutoff = nan\n[store]\naudit_rate = nan\n")
    done = run_cli("config", "--config", path, check_rc=2)
    assert "model.cutoff = nan" in done.stderr and "store.audit_rate = nan" in done.stderr
    assert "finite" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("config", "--set", "decision.burst_gap_s=nan", check_rc=2)
    assert "--set decision.burst_gap_s=nan" in done.stderr and "finite" in done.stderr


# -- folders must be folders (issue 15, item 7) -------------------------------------------------------
@pytest.mark.parametrize("key", ["source.inbox", "store.root"])
@pytest.mark.parametrize("how", ["file", "set"])
def test_a_folder_key_naming_a_regular_file_is_a_config_error_naming_key_and_path(
    tmp_path: Path, key: str, how: str
) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a folder\n")
    for given in (plain, plain / "below"):  # the file itself, or a folder that would have to be made under it
        section, name = key.split(".")
        with pytest.raises(ConfigError) as info:
            if how == "file":
                load_config(write(tmp_path, f'[{section}]\n{name} = "{given}"\n', name="c.toml"))
            else:
                load_config(None, [f"{key}={given}"])
        message = str(info.value)
        assert key in message and str(given) in message and "folder" in message, message
        assert str(plain) in message and "regular file" in message, message


def test_a_dangling_link_as_the_inbox_is_a_config_error(tmp_path: Path) -> None:
    link = tmp_path / "inbox"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"source.inbox={link}", f"store.root={tmp_path / 'store'}"])
    message = str(info.value)
    assert "source.inbox" in message and str(link) in message and "link" in message, message


def test_folders_that_exist_or_can_be_made_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "inbox")
    for inbox in (tmp_path / "inbox", tmp_path / "linked", tmp_path / "new" / "deeper" / "inbox"):
        config = load_config(None, [f"source.inbox={inbox}", f"store.root={tmp_path / 'store'}"])
        assert config.source.inbox == inbox
    assert not (tmp_path / "new").exists(), "checking a config makes no folder"


def test_config_and_run_refuse_an_inbox_that_is_a_regular_file_without_a_traceback(
    tmp_path: Path, run_cli: Any, store_args: Any
) -> None:
    inbox = tmp_path / "inbox"
    inbox.write_text("a file, not the camera's folder\n")
    done = run_cli("config", "--set", f"source.inbox={inbox}", "--set", f"store.root={tmp_path / 'store'}",
                   check_rc=2)  # fmt: skip
    assert "source.inbox" in done.stderr and str(inbox) in done.stderr and "Traceback" not in done.stderr
    done = run_cli("run", "--once", *store_args(inbox=inbox), check_rc=2)
    assert "source.inbox" in done.stderr and str(inbox) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- every problem at once, each naming its key and where it came from ---------------------------------
def problems(raised: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(raised.value).splitlines()


def test_cross_key_problems_are_reported_together_with_the_bad_values(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a folder\n")
    path = write(
        tmp_path,
        f'[trap]\nid = "north/1"\n[model]\nthreads = 0\n[mqtt]\nha_prefix = "ha/"\nca_file = "{tmp_path / "no.pem"}"\n'
        f'tls = true\n[store]\nroot = "{plain}"\n[imaging]\ndark_below = 0.8\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = problems(info)
    for key in ("trap.id", "model.threads", "mqtt.ha_prefix", "mqtt.ca_file", "store.root", "imaging.dark_below"):
        assert sum(f"{key} " in line for line in lines) == 1, (key, lines)
    assert len(lines) == 6 and all(line.startswith(str(path)) for line in lines), lines


def test_a_check_across_keys_is_left_out_when_one_of_its_keys_is_already_wrong() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["imaging.dark_below=2"])  # out of range; its default, 0.25, is under bright_above
    (line,) = problems(info)
    assert line.startswith("--set imaging.dark_below=2: imaging.dark_below = 2: must be at most 1.0"), line
    with pytest.raises(ConfigError) as info:
        load_config(None, ["mqtt.cert_file=42", "mqtt.key_file=/k"])  # a bad cert_file is not "missing"
    assert [line.split(":")[0] for line in problems(info)] == ["--set mqtt.cert_file=42", "--set mqtt.key_file=/k"]


def test_every_malformed_set_is_reported_with_the_bad_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["discard", "model.threads=0", "x=1", "store.discard=shred"])
    lines = problems(info)
    assert len(lines) == 4, lines
    assert "--set 'discard'" in lines[0] and "--set 'x=1'" in lines[1], lines
    assert any("model.threads = 0" in line for line in lines) and any("'shred'" in line for line in lines)


def test_a_flag_is_named_as_typed_not_as_a_set() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            None, ["model.threads=3"], [("model.cutoff=2.0", "--cutoff 2.0"), ("model.threads=0", "--threads 0")]
        )
    lines = problems(info)
    assert sorted(lines) == [
        "--cutoff 2.0: model.cutoff = 2.0: must be at most 1.0 (allowed: 0.0 to 1.0)",
        "--threads 0: model.threads = 0: must be at least 1 (allowed: 1 to 64)",
    ], lines
    config = load_config(None, ["model.threads=3"], [("model.threads=4", "--threads 4")])
    assert config.model.threads == 4, "a flag wins over --set, as it always did"
