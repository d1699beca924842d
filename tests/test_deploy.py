"""deploy/ and systemd/: the Pi installer (a dry run, and a real install into a throw-away root),
the unit file (systemd-analyze verify) and the generated config example.

The real install creates a venv and pip-installs the runtime (tflite-runtime with numpy < 2, as on
Bookworm's Python 3.11) into tmp_path: about 10 s with a warm pip cache, a minute on a cold one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from firmware_app import __version__
from firmware_app.config import DEFAULT_CONFIG_PATH, describe

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
UNIT = REPO / "systemd" / "blankfilter.service"
EXAMPLE = REPO / "deploy" / "config.example.toml"
CONSTRAINTS = REPO / "deploy" / "constraints-pi.txt"
FRAME = REPO / "tests" / "fixtures" / "frames" / "speciesnet" / "ocelot.jpg"
# The Pi's runtime where this Python has wheels for it (tflite-runtime 2.14 stops at 3.11).
RUNTIME = "tflite-runtime" if sys.version_info[:2] <= (3, 11) else "ai-edge-litert"
MOSQUITTO_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
APT_LINE = "apt-get install --no-install-recommends python3-venv python3-picamera2 python3-opencv python3-gpiozero"


def install(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """deploy/install.sh with this checkout as --source and this Python for the venv; must exit 0."""
    cmd = ["bash", str(INSTALL), "--source", str(REPO), "--python", sys.executable, *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: rc {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def tree(root: Path) -> dict[str, bytes | str]:
    """Every path under root with its content (files) or link target: to prove nothing changed."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        out[key] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return out


def unit_settings() -> dict[str, list[str]]:
    """The unit's Key=value lines (repeatable keys keep every value)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_config_example", REPO / "deploy" / "make_config_example.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the config example ------------------------------------------------------------------------


def test_config_example_is_what_the_schema_generates_now() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == load_generator().render(), (
        "deploy/config.example.toml is stale (a config key was added or changed): "
        "run python deploy/make_config_example.py and commit the result"
    )


def test_config_example_has_every_key_at_its_default(run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    parsed = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for dotted, default, _help in describe():
        section, key = dotted.split(".")
        if default is None:  # unset by default: present only as a comment
            assert key not in parsed[section]
            assert f"# {key} =" in EXAMPLE.read_text(encoding="utf-8")
        else:
            expected = str(default) if isinstance(default, Path) else default
            assert parsed[section][key] == (list(expected) if isinstance(expected, tuple) else expected), dotted
    # The Pi's data stays where the unit may write (ReadWritePaths=/var/lib/blankfilter).
    assert parsed["source"]["inbox"].startswith("/var/lib/blankfilter/")
    assert parsed["store"]["root"] == "/var/lib/blankfilter"
    done = run_cli("config", "--config", EXAMPLE, check_rc=0)
    assert "ok" in done.stdout


# -- the unit ----------------------------------------------------------------------------------


def test_unit_matches_the_app_and_the_installer() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["WatchdogSec"] == ["120"] and s["Restart"] == ["on-failure"]
    assert s["ExecStart"] == [f"/opt/blankfilter/venv/bin/blankfilter run --config {DEFAULT_CONFIG_PATH}"]
    assert s["User"] == ["blankfilter"] and s["SupplementaryGroups"] == ["video gpio"]
    assert "BLANKFILTER_MODELS_DIR=/opt/blankfilter/models" in s["Environment"]
    assert "PYTHONUNBUFFERED=1" in s["Environment"]
    assert s["ProtectSystem"] == ["strict"] and s["ReadWritePaths"] == ["/var/lib/blankfilter"]
    assert s["PrivateDevices"] == ["no"] and s["DevicePolicy"] == ["closed"]
    assert {"char-video4linux rw", "char-media rw", "char-dma_heap rw", "char-gpiochip rw"} <= set(s["DeviceAllow"])
    # The credential the app reads ($CREDENTIALS_DIRECTORY/mqtt_password), optional via SetCredential=.
    assert s["LoadCredential"] == ["mqtt_password:/etc/blankfilter/mqtt_password"]
    assert s["SetCredential"][0].startswith("mqtt_password:")
    # Exit 2 (bad config/model) must not loop; the installer's layout is the unit's.
    assert s["RestartPreventExitStatus"] == ["2"]
    script = INSTALL.read_text(encoding="utf-8")
    assert "APP_DIR=/opt/blankfilter\n" in script and "MODELS=$APP_DIR/models\n" in script
    assert "DATA_DIR=/var/lib/blankfilter\n" in script and "CONF=$CONF_DIR/config.toml\n" in script
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)


def test_unit_keeps_its_files_from_other_users_and_hides_their_processes() -> None:
    s = unit_settings()
    assert s["UMask"] == ["0027"], "kept frames and the ledger readable by the group at most"
    assert s["ProtectProc"] == ["invisible"] and s["RemoveIPC"] == ["yes"] and s["PrivateMounts"] == ["yes"]
    assert s["SystemCallFilter"] == ["@system-service"], "tighter filters are to be tried on a Pi first"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the keys are checked above; systemd-analyze verify runs on the installed unit below
    done = subprocess.run([analyze, "security", "--offline=true", "--json=short", str(UNIT)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert all(checks[k]["set"] for k in ("ProtectProc=", "RemoveIPC=", "PrivateMounts=")), done.stdout
    assert "world-readable" not in checks["UMask="]["description"]
    # Exposure, systemd's own 0-10 score (in tenths here): 2.1 before these four keys, 1.7 with them.
    threshold = subprocess.run([analyze, "security", "--offline=true", "--threshold=17", str(UNIT)],
                               capture_output=True, text=True, check=False)  # fmt: skip
    assert threshold.returncode == 0, threshold.stdout[-400:]


# -- the broker config ----------------------------------------------------------------------------


def mosquitto_settings() -> dict[str, list[str]]:
    """deploy/mosquitto/mosquitto.conf as mosquitto reads it: `key value` lines, # comments."""
    out: dict[str, list[str]] = {}
    for line in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, []).append(value.strip())
    return out


def test_shipped_broker_config_saves_what_it_acknowledged_after_every_change() -> None:
    """A trap forgets an event at PUBACK: the broker must have it on disk then, not at its next timed
    save (tests/test_mqtt_tls.py kills the shipped config with SIGKILL and finds every event)."""
    s = mosquitto_settings()
    assert s["persistence"] == ["true"]
    assert s["persistence_location"] == ["/var/lib/mosquitto/"], "Debian's mosquitto state folder, trailing /"
    assert s["autosave_on_changes"] == ["true"], "autosave_interval must count changes, not seconds"
    assert s["autosave_interval"] == ["1"], "a save after every change: a kill loses nothing acknowledged"
    assert "persistence_file" not in s and "persistent_client_expiration" not in s  # the monitor's session stays
    docs = (REPO / "docs" / "monitor.md").read_text(encoding="utf-8")
    readme = (REPO / "deploy" / "mosquitto" / "README.md").read_text(encoding="utf-8")
    for text in (docs, readme):
        assert "autosave_on_changes" in text and "PUBACK" in text and "outbox" in text


# -- the installer: dry run ----------------------------------------------------------------------


def test_dry_run_into_a_root_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = install("--dry-run", "--root", root).stdout
    assert not root.exists(), "a dry run created files"
    assert "DRY RUN" in out
    assert APT_LINE in out and "mosquitto-clients" in out
    assert f"-m venv --system-site-packages {root}/opt/blankfilter/venv" in out
    pip = next(line for line in out.splitlines() if "-m pip install --upgrade --constraint" in line)
    assert f"--constraint {CONSTRAINTS}" in pip and "tflite-runtime" in pip and "paho-mqtt" in pip
    assert not re.search(r"ai-edge-litert|tensorflow|torch|opencv", pip), pip
    assert "--no-deps" in out  # the project itself: its ai-edge-litert dependency stays out
    assert "useradd --system --user-group --groups video,gpio blankfilter" in out
    assert f"install -d -m 2770 {root}/var/lib/blankfilter/inbox" in out
    assert "chown blankfilter:blankfilter /var/lib/blankfilter" in out  # named as skipped in --root
    assert f"install -m 0640 {REPO}/deploy/config.example.toml {root}/etc/blankfilter/config.toml" in out
    assert "never overwritten" in out
    assert f"{root}/opt/blankfilter/models/blankfilter-cellnet-320.tflite" in out
    assert f"install -m 0644 {REPO}/systemd/blankfilter.service {root}/etc/systemd/system/blankfilter.service" in out
    assert f"systemctl --root={root} enable blankfilter.service" in out
    assert "journalctl -u blankfilter -f" in out and "blankfilter stats" in out and "mosquitto_sub" in out


def test_dry_run_with_a_config_says_it_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = root / "etc" / "blankfilter" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[trap]\nid = "mine"\n')
    before = tree(root)
    out = install("--dry-run", "--root", root, "--runtime", "ai-edge-litert").stdout
    assert tree(root) == before
    assert f"{config} exists: kept as it is (never overwritten)" in out
    assert f"install -m 0640 {REPO}/deploy/config.example.toml" not in out
    pip = next(line for line in out.splitlines() if "-m pip install --upgrade --constraint" in line)
    assert "ai-edge-litert" in pip and "tflite-runtime" not in pip


def test_dry_run_on_the_real_system_prints_apt_user_and_systemctl() -> None:
    """Without --root nothing is skipped; --dry-run still changes nothing (no root needed for it)."""
    out = install("--dry-run", "--no-start").stdout
    assert "apt-get update" in out
    assert "apt-get install -y --no-install-recommends python3-venv python3-picamera2" in out
    assert re.search(r"useradd --system .*blankfilter|usermod --append --groups video,gpio blankfilter", out)
    assert "install -d -m 0750 -o blankfilter -g blankfilter /var/lib/blankfilter" in out
    assert "-m venv --system-site-packages /opt/blankfilter/venv" in out
    assert "systemctl enable blankfilter.service" in out


# -- the installer: for real, into a throw-away root ---------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    prefix = tmp_path_factory.mktemp("pi") / "root"
    out = install("--root", prefix, "--no-start", "--runtime", RUNTIME).stdout
    return prefix, out


def test_install_makes_a_working_venv(installed: tuple[Path, str]) -> None:
    prefix, out = installed
    venv = prefix / "opt" / "blankfilter" / "venv"
    done = subprocess.run([venv / "bin" / "blankfilter", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"blankfilter {__version__}"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    local = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "list", "--local", "--format=json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = {p["name"].lower(): p["version"] for p in json.loads(local)}
    assert RUNTIME in names and "blankfilter" in names
    assert not {"tensorflow", "tensorflow-cpu", "torch", "opencv-python", "opencv-python-headless"} & set(names)
    if RUNTIME == "tflite-runtime":
        assert "ai-edge-litert" not in names
        assert int(names["numpy"].split(".")[0]) < 2
    # The link for people resolves inside the root (it names the path on the target system).
    assert os.readlink(prefix / "usr" / "local" / "bin" / "blankfilter") == "/opt/blankfilter/venv/bin/blankfilter"
    assert "skipped (--root): apt-get install" in out and "skipped (--root): useradd" in out


def test_installed_models_score_a_frame_on_the_installed_runtime(installed: tuple[Path, str]) -> None:
    prefix, _ = installed
    models = prefix / "opt" / "blankfilter" / "models"
    shipped = sorted(p.name for p in (REPO / "models").glob("*.tflite"))
    assert sorted(p.name for p in models.glob("*.tflite")) == shipped
    assert all((models / name).with_suffix(".json").is_file() for name in shipped)
    assert sorted(p.name for p in (models / "context").glob("*.tflite")) == sorted(
        p.name for p in (REPO / "models" / "context").glob("*.tflite")
    )
    # As the unit runs it: BLANKFILTER_MODELS_DIR points at the installed models.
    env = {**os.environ, "BLANKFILTER_MODELS_DIR": str(models)}
    env.pop("PYTHONPATH", None)  # the installed package, not this checkout
    done = subprocess.run(
        [prefix / "opt/blankfilter/venv/bin/blankfilter", "classify", "--json", FRAME],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["error"] is None and row["blank"] is False  # the ocelot is kept


def test_installed_unit_passes_systemd_analyze_verify(installed: tuple[Path, str], tmp_path: Path) -> None:
    prefix, _ = installed
    unit = prefix / "etc" / "systemd" / "system" / "blankfilter.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert (unit.parent / "multi-user.target.wants" / "blankfilter.service").is_symlink()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: install it (apt-get install systemd) so the unit can be verified")
    # verify --root loads the unit's dependencies (sysinit.target, ...) from the root too: give a copy
    # of this machine's system units to a copy of the root (the installed root stays as installed).
    root = tmp_path / "root"
    shutil.copytree(prefix, root, symlinks=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    done = subprocess.run(
        [analyze, "verify", f"--root={root}", "blankfilter.service"], capture_output=True, text=True, check=False
    )
    # Any message (unknown key, bad value, missing ExecStart binary) is a failure, not just rc != 0.
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def test_reinstall_keeps_a_changed_config_then_uninstall_keeps_the_data(installed: tuple[Path, str]) -> None:
    prefix, _ = installed
    config = prefix / "etc" / "blankfilter" / "config.toml"
    assert config.read_bytes() == EXAMPLE.read_bytes()
    config.write_text('[trap]\nid = "ridge-07"\n')
    frame = prefix / "var" / "lib" / "blankfilter" / "inbox" / "cam1" / "frame.jpg"
    frame.parent.mkdir(parents=True)
    shutil.copyfile(FRAME, frame)

    out = install("--root", prefix, "--no-start", "--runtime", RUNTIME).stdout
    assert config.read_text() == '[trap]\nid = "ridge-07"\n'
    assert "kept as it is (never overwritten)" in out
    assert "ok (trap ridge-07" in out  # the kept config was checked with the new version

    out = install("--uninstall", "--root", prefix).stdout
    assert not (prefix / "opt" / "blankfilter").exists()
    assert not (prefix / "etc" / "systemd" / "system" / "blankfilter.service").exists()
    assert not (prefix / "etc" / "systemd" / "system" / "multi-user.target.wants" / "blankfilter.service").exists()
    assert not (prefix / "usr" / "local" / "bin" / "blankfilter").is_symlink()
    assert config.read_text() == '[trap]\nid = "ridge-07"\n'
    assert frame.read_bytes() == FRAME.read_bytes()
    assert "KEPT" in out
