"""TOML config, validated at the edge: every key optional with a default, unknown keys rejected,
every error naming the key, the bad value and where it came from (file or --set).

The sections are dataclasses; their fields *are* the schema (type, default, `meta` for ranges
and choices), so docs, validation and defaults cannot drift apart. Every number is finite and has
both bounds; every bad value of a file and of --set is reported at once, one line each.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from firmware_app.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/blankfilter/config.toml")
TRAP_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
EXTENSION_PATTERN = re.compile(r"\.[A-Za-z0-9_-]{1,15}")  # a file name's suffix, as Path.suffix gives it
MAX_STRING = 4096  # no config string (a path, a host, a topic) is longer; a longer one is a mistake
MONTH_S = 30 * 86400


def meta(
    help: str,
    *,
    choices: tuple[str, ...] = (),
    lo: float | None = None,
    hi: float | None = None,
    max_len: int = MAX_STRING,
) -> Any:
    return {"help": help, "choices": choices, "lo": lo, "hi": hi, "max_len": max_len}


def opt(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta(help, **kw))
    return field(default=default, metadata=meta(help, **kw))


@dataclass(frozen=True)
class TrapSection:
    id: str = opt("trap-01", "trap name: MQTT topic segment and event field ([A-Za-z0-9_-], up to 64)")


@dataclass(frozen=True)
class SourceSection:
    kind: str = opt("folder", "where frames come from: an inbox folder, or a camera ([camera])",
                    choices=("folder", "picamera2", "opencv"))  # fmt: skip
    inbox: Path = opt(Path("/var/lib/blankfilter/inbox"), "folder the camera writes JPEGs into")
    recursive: bool = opt(True, "also watch sub-folders (one per camera or card)")
    extensions: list[str] = opt([".jpg", ".jpeg"], "file endings taken as frames (case-insensitive; at least one)")
    watch: str = opt("auto", "inotify via watchdog, or polling", choices=("auto", "inotify", "poll"))
    poll_s: float = opt(5.0, "rescan interval when polling, and the safety rescan with inotify", lo=0.1, hi=3600)
    settle_s: float = opt(2.0, "a file is complete when closed, or unchanged in size for this long", lo=0.0, hi=600)


@dataclass(frozen=True)
class ModelSection:
    path: str = opt("", "model .tflite; empty: the shipped model in models/")
    cutoff: float | None = opt(None, "p(non-blank) at or over which a frame is kept; unset: the card's", lo=0.0, hi=1.0)
    threads: int = opt(2, "CPU threads for the interpreter", lo=1, hi=64)
    edgetpu: bool = opt(False, "use the Coral Edge TPU (MODEL_edgetpu.tflite), else fall back to the CPU")
    runtime: str = opt("auto", "TFLite runtime", choices=("auto", "ai_edge_litert", "tflite_runtime"))


@dataclass(frozen=True)
class CameraSection:
    name: str = opt("cam0", "camera name: the folder under kept/ and the camera in the reference bank")
    trigger: str = opt("pir", "what starts a burst", choices=("pir", "motion", "both"))
    pir_pin: int = opt(17, "GPIO (BCM) pin of the PIR sensor", lo=0, hi=40)
    pir_debounce_s: float = opt(2.0, "PIR pulses closer than this are one", lo=0, hi=600)
    burst_frames: int = opt(3, "frames per trigger", lo=1, hi=50)
    burst_interval_s: float = opt(0.5, "time between the frames of a burst", lo=0, hi=60)
    cooldown_s: float = opt(5.0, "no new burst this soon after the last one", lo=0, hi=3600)
    still_size: list[int] = opt([2028, 1520], "size of the captured frames (width, height)")
    lores_size: list[int] = opt([320, 240], "size of the motion-detection stream (width, height)")
    jpeg_quality: int = opt(90, "JPEG quality of the frames written (kept bursts, audit sample)", lo=50, hi=100)
    exposure_time_us: int = opt(0, "fixed exposure; 0: automatic", lo=0, hi=10_000_000)
    analogue_gain: float = opt(0.0, "fixed gain; 0: automatic", lo=0, hi=64)
    night_below: float = opt(0.0, "motion-stream mean grey level (0-255) under which it is night; 0: no night mode",
                             lo=0, hi=255)  # fmt: skip
    night_exposure_time_us: int = opt(0, "night: fixed exposure (IR lamp lit scene); 0: automatic", lo=0, hi=10_000_000)
    night_analogue_gain: float = opt(0.0, "night: fixed gain; 0: automatic", lo=0, hi=64)
    motion_threshold: float = opt(25.0, "grey-level change that counts as motion in a pixel", lo=1, hi=255)
    motion_min_area: float = opt(0.002, "share of the watched area that must change", lo=0.0001, hi=1)
    motion_warmup_frames: int = opt(10, "lores frames before motion can trigger", lo=0, hi=1000)
    motion_mask: str = opt("", "PNG, white = watched; empty: the whole frame")
    device: str = opt("0", "opencv: a /dev/video index or path, or an rtsp:// URL")


@dataclass(frozen=True)
class ImagingSection:
    gamma: str = opt("auto", "gamma-correct under/over-exposed frames", choices=("auto", "off"))
    dark_below: float = opt(0.25, "mean luminance (0..1) under which a frame is brightened", lo=0.0, hi=1.0)
    bright_above: float = opt(0.75, "mean luminance (0..1) over which a frame is darkened", lo=0.0, hi=1.0)
    target_mean: float = opt(0.45, "mean luminance gamma aims for", lo=0.05, hi=0.95)
    max_megapixels: float = opt(100.0, "larger frames are refused (decompression-bomb guard)", lo=1, hi=1000)


@dataclass(frozen=True)
class DecisionSection:
    burst_gap_s: float = opt(10.0, "frames closer than this in capture time form one burst", lo=0.0, hi=3600)


@dataclass(frozen=True)
class StoreSection:
    root: Path = opt(Path("/var/lib/blankfilter"), "kept/, quarantine/, audit/, blank/ and ledger.db live here")
    discard: str = opt("delete", "what happens to blanks", choices=("delete", "quarantine", "keep"))
    audit_rate: float = opt(0.02, "share of blank bursts kept in audit/ to measure misses", lo=0.0, hi=1.0)
    audit_thumbnail_px: int = opt(640, "long side of an audit message's thumbnail (people look for small animals)",
                                  lo=64, hi=2048)  # fmt: skip
    quarantine_max_mb: float = opt(1024.0, "quarantine size cap; oldest go first", lo=0, hi=10_000_000)
    quarantine_max_days: float = opt(30.0, "quarantine age cap", lo=0, hi=3650)
    # hi: 1e9 MB (1 PB) is over any card or disk, so "always short of space" can still be said
    min_free_mb: float = opt(200.0, "free-space floor: quarantine is pruned, then blanks deleted, to keep it",
                             lo=0, hi=1e9)  # fmt: skip


@dataclass(frozen=True)
class ContextSection:
    enabled: bool = opt(True, "compare frames with the camera's reference frames (inert until it has some)")
    extractor: str = opt("", "feature model .tflite; empty: the shipped one in models/context/")
    cutoff: float | None = opt(None, "context score at or over which a frame is kept; unset: the card's", lo=0, hi=2)
    veto: float = opt(
        0.5, "classifier p at or over which a frame is kept whatever its context (with context.veto_margin)",
        lo=0, hi=1,
    )  # fmt: skip
    veto_margin: float = opt(
        2.0, "logit units the classifier must score over its highest score of the camera's references to veto",
        lo=0, hi=20,
    )  # fmt: skip
    drift_limit: float = opt(
        0.4, "25th-percentile cell distance over which references no longer fit the scene (then the classifier "
        "must agree before a frame is called blank)", lo=0, hi=2,
    )  # fmt: skip
    max_references: int = opt(12, "references kept per camera and lighting mode", lo=1, hi=200)
    topup_spacing_s: float = opt(1800.0, "at most one automatic reference per camera and mode this often",
                                 lo=0, hi=MONTH_S)  # fmt: skip
    quiet_reference_s: float = opt(
        3600.0, "camera sources: take a reference after this long without a trigger, and at most this often "
        "(covers the light through the day and night); 0: never", lo=0, hi=MONTH_S,
    )  # fmt: skip
    quiet_after_trigger_s: float = opt(
        600.0, "camera sources: never take a quiet-time reference this soon after a trigger", lo=0, hi=MONTH_S
    )
    reference_max_p: float = opt(
        0.2, "classifier p under which a frame may become an automatic reference (quiet-time, time-lapse, "
        "top-up), with the context's own check; not model.cutoff, which is tuned to keep almost every frame "
        "(held out, 5 % of animal and 22 % of blank frames score under 0.2)", lo=0, hi=1,
    )  # fmt: skip
    reference_pattern: str = opt(
        "",
        "folder source: file names (glob, e.g. '*TL*') of the camera's time-lapse or field-scan frames, "
        "which also become references when found empty; empty: none",
    )


@dataclass(frozen=True)
class MqttSection:
    host: str = opt("", "broker host; empty: no broker (events wait in the ledger's outbox)")
    port: int = opt(1883, "broker port (usually 8883 with TLS)", lo=1, hi=65535)
    client_id: str = opt(
        "", "MQTT client id; empty: blankfilter-<trap.id>. Up to 256 characters: MQTT allows 65535 bytes but "
        "brokers cap it (every broker must take 23), and a longer id is a mistake", max_len=256,
    )  # fmt: skip
    topic_prefix: str = opt("blankfilter", "topics are <prefix>/<trap.id>/event, status, availability, config")
    username: str = opt("", "user name; empty: anonymous")
    password_file: str = opt("", "file with the password; empty: $CREDENTIALS_DIRECTORY/mqtt_password if set")
    tls: bool = opt(False, "connect with TLS")
    ca_file: str = opt("", "CA certificate(s) to trust; empty: the system's")
    cert_file: str = opt("", "client certificate (mutual TLS)")
    key_file: str = opt("", "client certificate's key")
    tls_insecure: bool = opt(False, "skip the broker host name check (testing only)")
    keepalive_s: int = opt(60, "MQTT keepalive", lo=5, hi=3600)
    status_interval_s: float = opt(300.0, "heartbeat period of the retained status topic", lo=5, hi=86400)
    status_min_interval_s: float = opt(
        10.0, "the status is also published after decided bursts, at most once per this many seconds", lo=1, hi=86400
    )
    backlog_rate: float = opt(50.0, "events per second at most when sending a backlog", lo=0.1, hi=10000)
    thumbnail_px: int = opt(160, "long side of the event's JPEG thumbnail; 0: no thumbnail", lo=0, hi=1024)
    thumbnail_max_kb: float = opt(12.0, "thumbnail size cap (quality, then size, go down to fit)", lo=1, hi=256)
    animal_off_delay_s: float = opt(
        60.0, "<prefix>/<trap.id>/animal goes OFF this long after the last kept burst's event", lo=1, hi=86400
    )
    late_after_s: float = opt(
        300.0, 'an event published this long or longer after it was decided carries "late": true', lo=1, hi=31536000
    )
    drain_s: float = opt(10.0, "run --once: how long to wait for the broker to take the events", lo=0, hi=3600)
    remote_cutoff: bool = opt(False, "accept a new cutoff on <prefix>/<trap.id>/set/cutoff (0.001..0.99)")
    ha_discovery: bool = opt(False, "publish Home Assistant MQTT discovery configs")
    ha_prefix: str = opt("homeassistant", "Home Assistant discovery prefix")


@dataclass(frozen=True)
class LogSection:
    level: str = opt("info", "log level", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class Config:
    trap: TrapSection = field(default_factory=TrapSection)
    source: SourceSection = field(default_factory=SourceSection)
    camera: CameraSection = field(default_factory=CameraSection)
    model: ModelSection = field(default_factory=ModelSection)
    imaging: ImagingSection = field(default_factory=ImagingSection)
    decision: DecisionSection = field(default_factory=DecisionSection)
    store: StoreSection = field(default_factory=StoreSection)
    context: ContextSection = field(default_factory=ContextSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    log: LogSection = field(default_factory=LogSection)
    origin: str = "defaults"

    @property
    def ledger_path(self) -> Path:
        return self.store.root / "ledger.db"

    @property
    def bank_path(self) -> Path:
        return self.store.root / "references.db"


SECTIONS: dict[str, type] = {name: hint for name, hint in get_type_hints(Config).items() if name != "origin"}


def load_config(
    path: Path | None = None, overrides: list[str] | None = None, flags: list[tuple[str, str]] | None = None
) -> Config:
    """Defaults, then the file (if given), then each `--set section.key=value`, then `flags`: pairs of
    (section.key=value, the option as the user typed it, e.g. "--cutoff 2.0"), so an error names that
    option, not a --set nobody typed. Every error is reported at once, one line each."""
    tree: dict[str, dict[str, tuple[Any, str]]] = {}
    errors: list[tuple[str, str]] = []  # (section.key, message): a field visit should not find them one by one
    origin = "defaults"
    if path is not None:
        origin = str(path)
        _read_file(path, tree, errors)
    named = [(item, f"--set {_shown(item)}") for item in overrides or []] + list(flags or [])
    for item, where in named:
        try:
            section, key, value = _parse_override(item)
        except ConfigError as exc:
            errors.append(("", str(exc) if where.startswith("--set") else f"{where}: {exc}"))
            continue
        tree.setdefault(section, {})[key] = (value, where)
    origins = {f"{section}.{key}": where for section, keys in tree.items() for key, (_, where) in keys.items()}
    built = {name: _build_section(name, tree.pop(name, {}), errors) for name in SECTIONS}
    for section, keys in tree.items():
        where = next(iter(keys.values()))[1]
        errors.append((section, f"{where}: unknown section [{section}]; known: {', '.join(SECTIONS)}"))
    config = Config(**built, origin=origin)
    failed = {key for key, _ in errors}
    # A check across keys is only meaningful when each of its keys has a good value (a bad one kept its default).
    errors += [(keys[0], message) for keys, message in _cross_checks(config, origins) if failed.isdisjoint(keys)]
    if errors:
        raise ConfigError("\n".join(message for _, message in errors))
    return config


def _shown(item: str) -> str:
    return item if len(item) <= 120 else f"{item[:80]}... ({len(item)} characters)"


def _read_file(path: Path, tree: dict[str, dict[str, tuple[Any, str]]], errors: list[tuple[str, str]]) -> None:
    for section, keys in _read_toml(path).items():
        if not isinstance(keys, dict):
            errors.append((section, f"{path}: '{section}' must be a [section] table, got {keys!r}"))
            continue
        for key, value in keys.items():
            # A NUL cannot be in a path (the OS refuses it): left as it is, validation names the key.
            if isinstance(value, str) and _is_path_field(section, key) and value and "\x00" not in value:
                value = str((path.parent / value).resolve()) if not Path(value).is_absolute() else value
            tree.setdefault(section, {})[key] = (value, str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _parse_override(item: str) -> tuple[str, str, Any]:
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. store.discard=quarantine")
    try:
        value = tomllib.loads(f"v = {text}")["v"]  # numbers, booleans, lists, quoted strings
    except tomllib.TOMLDecodeError:
        value = text  # a bare word or path
    return section, key, value


def _is_path_field(section: str, key: str) -> bool:
    cls = SECTIONS.get(section)
    hints = get_type_hints(cls) if cls else {}
    return hints.get(key) is Path or (section, key) in FILE_KEYS


# String keys that name a file (empty allowed): relative paths in a config file are relative to it.
FILE_KEYS = {("model", "path"), ("context", "extractor"), ("mqtt", "password_file"), ("mqtt", "ca_file"),
             ("mqtt", "cert_file"), ("mqtt", "key_file"), ("camera", "motion_mask")}  # fmt: skip


def _build_section(name: str, given: dict[str, tuple[Any, str]], errors: list[tuple[str, str]]) -> Any:
    """The section from its given keys; what is wrong goes to `errors` (and that key keeps its default)."""
    cls = SECTIONS[name]
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, (value, where) in given.items():
        if key not in known:
            message = f"{where}: unknown key {name}.{key}; known in [{name}]: {', '.join(known)}"
            errors.append((f"{name}.{key}", message))
            continue
        try:
            values[key] = _check_value(f"{name}.{key}", value, hints[key], known[key].metadata, where)
        except ConfigError as exc:
            errors.append((f"{name}.{key}", str(exc)))
    return cls(**values)


def _check_value(dotted: str, value: Any, hint: Any, info: Any, where: str) -> Any:
    def bad(why: str) -> ConfigError:
        shown = repr(value)
        if len(shown) > 60:  # a 10 kB string must not become a 10 kB log line
            shown = f"{shown[:40]}... ({len(value) if isinstance(value, (str, list)) else len(shown)} long)"
        return ConfigError(f"{where}: {dotted} = {shown}: {why}")

    if hint is bool:
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if hint in (int, float, float | None):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("must be a number")
        allowed = f" (allowed: {info['lo']} to {info['hi']})"
        if not math.isfinite(value):  # a nan cutoff keeps every frame: filtering silently off
            raise bad("must be a finite number, not nan or inf" + allowed)
        if hint is int and not isinstance(value, int):
            raise bad("must be a whole number" + allowed)
        if info["lo"] is not None and value < info["lo"]:
            raise bad(f"must be at least {info['lo']}" + allowed)
        if info["hi"] is not None and value > info["hi"]:
            raise bad(f"must be at most {info['hi']}" + allowed)
        return value if hint is int else float(value)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise bad("must be a non-empty path")
        if len(value) > info["max_len"]:
            raise bad(f"must be at most {info['max_len']} characters")
        if "\x00" in value:
            raise bad("must not contain a NUL character (no file name can)")
        return Path(value)
    if hint == list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad('must be a list of strings, e.g. [".jpg", ".jpeg"]')
        if not value or not all(EXTENSION_PATTERN.fullmatch(v) for v in value):
            raise bad('must be a non-empty list of file endings, each a dot and 1-15 letters or digits, '
                      'e.g. [".jpg", ".jpeg"]')  # fmt: skip
        return [v.lower() for v in value]
    if hint == list[int]:
        if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int and 16 <= v <= 8192 for v in value)):
            raise bad("must be [width, height] in pixels, each 16..8192")
        return list(value)
    if not isinstance(value, str):
        raise bad("must be a string")
    if len(value) > info["max_len"]:
        raise bad(f"must be at most {info['max_len']} characters")
    if "\x00" in value:  # paths kept as strings (context.extractor, camera.motion_mask), ids, topics
        raise bad("must not contain a NUL character")
    if info["choices"] and value not in info["choices"]:
        raise bad(f"must be one of {', '.join(info['choices'])}")
    return value


Problems = list[tuple[tuple[str, ...], str]]  # (the keys involved, the message naming them and their origin)


def _cross_checks(config: Config, origins: dict[str, str]) -> Problems:
    """Checks across keys; each message names where its values came from (file, --set or defaults)."""

    def where(key: str) -> str:
        return origins.get(key, "defaults")

    problems: Problems = []
    if not TRAP_ID_PATTERN.match(config.trap.id):
        problems.append((("trap.id",), f"{where('trap.id')}: trap.id = {config.trap.id!r}: use letters, digits, "
                         "'-' and '_' (it becomes an MQTT topic segment)"))  # fmt: skip
    problems += _check_mqtt(config, origins)
    folders = [("store.root", config.store.root)]
    if config.source.kind == "folder":
        folders.insert(0, ("source.inbox", config.source.inbox))
    problems += [((key,), f"{where(key)}: {key} = {str(path)!r}: {why}")
                 for key, path in folders if (why := _folder_problem(path))]  # fmt: skip
    if config.imaging.dark_below >= config.imaging.bright_above:
        keys = ("imaging.dark_below", "imaging.bright_above")
        problems.append((keys, f"{', '.join(dict.fromkeys(map(where, keys)))}: imaging.dark_below "
                         f"({config.imaging.dark_below}) must be under imaging.bright_above "
                         f"({config.imaging.bright_above})"))  # fmt: skip
    return problems


def _folder_problem(path: Path) -> str:
    """Why `path` can be neither used nor made as a folder ("" when it can): a regular file there, or
    above it, would otherwise pass the config check and fail `run` with a traceback. Read-only: checking
    a config makes nothing; permissions are left to the start-up (the service may run as another user)."""
    probe = path
    try:
        while not (probe.exists() or probe.is_symlink()):
            if probe.parent == probe:
                return ""
            probe = probe.parent
        if probe.is_dir():
            return ""
        if probe.is_symlink() and not probe.exists():
            kind = f"a link to {os.readlink(probe)}, which does not exist"
        elif probe.is_file():
            kind = "a regular file"
        else:
            kind = "not a folder (a device, pipe or socket)"
    except OSError:  # cannot look (permissions): the start-up will say what is wrong
        return ""
    where = "" if probe == path else f"{probe}, above it, is {kind}, so it cannot be made"
    return "must be a folder (or one that can be made); " + (where or f"{probe} is {kind}")


def describe() -> list[tuple[str, Any, str]]:
    """(section.key, default, help) for every key: what `blankfilter config --defaults` prints."""
    rows = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            rows.append((f"{name}.{f.name}", default, f.metadata["help"]))
    return rows


def _check_mqtt(config: Config, origins: dict[str, str]) -> Problems:
    """Files the broker connection needs must exist now, not at the first reconnect in a month."""
    m = config.mqtt
    problems: Problems = []
    for key in ("password_file", "ca_file", "cert_file", "key_file"):
        value = getattr(m, key)
        if value and not Path(value).is_file():
            problems.append(((f"mqtt.{key}",), f"{origins.get(f'mqtt.{key}', 'defaults')}: mqtt.{key} = {value!r}: "
                             "no such file"))  # fmt: skip
    if bool(m.cert_file) != bool(m.key_file):
        where = origins.get("mqtt.cert_file") or origins.get("mqtt.key_file", "defaults")
        problems.append((("mqtt.cert_file", "mqtt.key_file"), f"{where}: mqtt.cert_file and mqtt.key_file go "
                         "together (a client certificate and its key)"))  # fmt: skip
    if (m.ca_file or m.cert_file or m.tls_insecure) and not m.tls:
        problems.append((("mqtt.tls", "mqtt.ca_file", "mqtt.cert_file", "mqtt.tls_insecure"),
                         f"{origins.get('mqtt.tls', 'defaults')}: mqtt.ca_file/cert_file/tls_insecure need "
                         "mqtt.tls = true"))  # fmt: skip
    for key in ("topic_prefix", "ha_prefix"):
        value = getattr(m, key)
        if not value or any(ch in value for ch in "#+") or value.startswith("/") or value.endswith("/"):
            problems.append(((f"mqtt.{key}",), f"{origins.get(f'mqtt.{key}', 'defaults')}: mqtt.{key} = {value!r}: "
                             "a topic without wildcards (# +) or leading/trailing '/'"))  # fmt: skip
    return problems
