"""The composition root: the one place that builds the trap from a config.

Models, camera context, ledger, store, disk guard, judge, source or camera, triggers, the loop and
the MQTT publisher are made here and nowhere else; the commands only parse arguments and call this.
Hardware and third-party runtimes are imported inside the adapters these functions pick.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_app.classifiers import Classifier
from firmware_app.config import Config
from firmware_app.context import CameraContext, ContextSettings
from firmware_app.context.bank import ReferenceBank
from firmware_app.context.extractor import FeatureExtractor, default_extractor_path, load_extractor
from firmware_app.errors import BlankfilterError, ConfigError, LedgerUnavailable, ModelError
from firmware_app.judge import Judge
from firmware_app.ledger import Ledger
from firmware_app.loops import Loop
from firmware_app.retention import DiskGuard
from firmware_app.sources.camera import Camera
from firmware_app.store import Store
from firmware_app.triggers import Motion, Trigger

if TYPE_CHECKING:
    from firmware_app.events.mqtt import Publisher

log = logging.getLogger(__name__)

STORE_FOLDERS = ("kept", "audit", "quarantine", "blank")


# -- models ---------------------------------------------------------------------------------------
def load_model(config: Config) -> Classifier:
    from firmware_app.classifiers import load_classifier

    m = config.model
    return load_classifier(Path(m.path) if m.path else None, m.threads, m.edgetpu, m.runtime)


def open_extractor(config: Config, required: bool) -> FeatureExtractor | None:
    """The configured extractor; without one configured, the shipped one, if it is there."""
    c, m = config.context, config.model
    if c.extractor:
        return load_extractor(Path(c.extractor), m.threads, m.edgetpu, m.runtime)
    try:
        path = default_extractor_path()
    except ModelError as exc:
        if required:
            raise
        log.warning("camera context off: %s", exc)
        return None
    return load_extractor(path, m.threads, m.edgetpu, m.runtime)


def open_bank(config: Config, extractor: FeatureExtractor) -> ReferenceBank:
    config.store.root.mkdir(parents=True, exist_ok=True)
    return ReferenceBank(config.bank_path, extractor.card.label, config.context.max_references)


def context_settings(config: Config, extractor: FeatureExtractor) -> ContextSettings:
    c = config.context
    return ContextSettings(
        cutoff=c.cutoff if c.cutoff is not None else extractor.card.cutoff,
        veto=c.veto,
        veto_margin=c.veto_margin,
        drift_limit=c.drift_limit,
        topup_spacing_s=c.topup_spacing_s,
        noise_floor=extractor.card.noise_floor,
    )


def load_context(config: Config) -> CameraContext | None:
    """Camera context for `run`: None when switched off (context.enabled = false) or not installed."""
    if not config.context.enabled:
        return None
    extractor = open_extractor(config, required=False)
    if extractor is None:
        return None
    return CameraContext(extractor, open_bank(config, extractor), context_settings(config, extractor))


# -- the card -------------------------------------------------------------------------------------
def check_layout(config: Config) -> None:
    """The inbox must not contain the store's folders: kept frames would be picked up again."""
    inbox, root = config.source.inbox.resolve(), config.store.root.resolve()
    if root.is_relative_to(inbox) and root != inbox:
        raise BlankfilterError(f"store.root {root} is inside source.inbox {inbox}: put them side by side")
    if inbox == root:
        raise BlankfilterError(f"source.inbox and store.root are the same folder ({inbox}): use {root}/inbox")


def disk_note(folder: Path) -> str:
    """'; the disk is full (0.0 MB free)' when it is: SQLite may only say 'disk I/O error'."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return ""
    free_mb = st.f_bavail * st.f_frsize / 1e6
    return f"; the disk is full ({free_mb:.1f} MB free)" if free_mb < 1 else ""


def open_ledger(config: Config, dry_run: bool = False) -> Ledger:
    """The ledger (in memory for a dry run). A full or read-only card: LedgerUnavailable, and
    nothing may move, since nothing could be recorded."""
    try:
        return Ledger(":memory:" if dry_run else config.ledger_path)
    except sqlite3.Error as exc:
        raise LedgerUnavailable(
            f"cannot open the ledger {config.ledger_path} ({exc}{disk_note(config.store.root)}); nothing was "
            f"moved or deleted: every frame in {config.source.inbox} is left untouched. Free space on the card "
            "(store.min_free_mb) or fix its permissions."
        ) from None


# -- cameras --------------------------------------------------------------------------------------
def make_camera(config: Config) -> Camera:
    if config.source.kind == "picamera2":
        from firmware_app.sources.picamera2_camera import Picamera2Camera

        return Picamera2Camera(config.camera)
    from firmware_app.sources.opencv_camera import OpenCVCamera

    return OpenCVCamera(config.camera)


def make_triggers(config: Config) -> tuple[Trigger | None, Motion | None]:
    """camera.trigger: the PIR on its pin, motion on the lores stream, or both."""
    c = config.camera
    pir: Trigger | None = None
    motion: Motion | None = None
    if c.trigger in ("pir", "both"):
        from firmware_app.triggers.pir import PirTrigger

        pir = PirTrigger(c.pir_pin, debounce_s=c.pir_debounce_s)
    if c.trigger in ("motion", "both"):
        from firmware_app.triggers.motion import MotionDetector, load_mask

        width, height = c.lores_size
        mask = load_mask(c.motion_mask, (height, width)) if c.motion_mask else None
        motion = MotionDetector(threshold=c.motion_threshold, min_area=c.motion_min_area,
                                warmup_frames=c.motion_warmup_frames, cooldown_s=0.0, mask=mask)  # fmt: skip
    return pir, motion


# -- the trap -------------------------------------------------------------------------------------
@dataclass
class Trap:
    config: Config
    judge: Judge
    ledger: Ledger
    loop: Loop
    dry_run: bool

    def close(self) -> None:
        self.ledger.close()
        if self.judge.context is not None:
            self.judge.context.bank.close()


def build_loop(
    config: Config,
    judge: Judge,
    ledger: Ledger,
    *,
    once: bool = False,
    dry_run: bool = False,
    max_bursts: int | None = None,
    camera: Camera | None = None,
    triggers: tuple[Trigger | None, Motion | None] | None = None,
) -> Loop:
    """The loop `source.kind` asks for, with its store and disk guard. `camera` and `triggers`
    replace the hardware ones (tests, and a field check with a fake camera)."""
    store = Store(config.store.root, config.source.inbox)
    guard = DiskGuard(store, ledger, config.store, enabled=not dry_run)
    if config.source.kind == "folder":
        from firmware_app.loops.folder import FolderLoop
        from firmware_app.sources.folder import FolderSource

        src, root = config.source, config.store.root
        exclude = tuple(root / d for d in STORE_FOLDERS)
        source = FolderSource(src.inbox, src.extensions, src.recursive, src.watch, src.poll_s, src.settle_s, exclude)
        return FolderLoop(judge, ledger, store, source, guard, config.decision.burst_gap_s, src.settle_s,
                          once=once, dry_run=dry_run)  # fmt: skip
    if dry_run:
        raise ConfigError("--dry-run works with source.kind = folder only (a camera has nothing to leave untouched)")
    from firmware_app.loops.camera import CameraLoop

    pir, motion = triggers if triggers is not None else make_triggers(config)
    return CameraLoop(judge, ledger, store, camera or make_camera(config), guard, config.camera, pir, motion,
                      max_bursts=max_bursts)  # fmt: skip


def build_trap(
    config: Config,
    *,
    once: bool = False,
    dry_run: bool = False,
    max_bursts: int | None = None,
    classifier: Classifier | None = None,
    camera: Camera | None = None,
    triggers: tuple[Trigger | None, Motion | None] | None = None,
) -> Trap:
    """Everything `blankfilter run` needs, checked and opened in the order that fails early and clearly:
    layout, model, store root, ledger, camera context (a dry run changes nothing, the bank included)."""
    if config.source.kind == "folder":
        check_layout(config)
    elif dry_run:
        raise ConfigError("--dry-run works with source.kind = folder only (a camera has nothing to leave untouched)")
    classifier = classifier or load_model(config)
    if not dry_run:
        config.store.root.mkdir(parents=True, exist_ok=True)
    ledger = open_ledger(config, dry_run)
    context = None if dry_run else load_context(config)
    judge = Judge(config, classifier, context)
    loop = build_loop(config, judge, ledger, once=once, dry_run=dry_run, max_bursts=max_bursts, camera=camera,
                      triggers=triggers)  # fmt: skip
    return Trap(config, judge, ledger, loop, dry_run)


def start_publisher(config: Config, trap: Trap) -> Publisher | None:
    """The MQTT publisher, when a broker is configured; events wait in the outbox either way."""
    if not config.mqtt.host:
        depth = trap.ledger.outbox_state()[0]
        log.info("no broker (mqtt.host is empty): events are kept in the outbox (%d waiting)", depth)
        return None
    from firmware_app.events.mqtt import REMOTE_CUTOFF_KEY, Hooks, Publisher

    judge = trap.judge
    card = judge.classifier.card
    if config.mqtt.remote_cutoff:
        saved = trap.ledger.get_meta(REMOTE_CUTOFF_KEY)
        if saved is not None:
            judge.set_cutoff(float(saved))
            log.warning("cutoff %.4g: set remotely earlier (mqtt.remote_cutoff = true), not %s", float(saved),
                        "model.cutoff" if config.model.cutoff is not None else "the model card's")  # fmt: skip
        restore_camera_cutoffs(trap)
    hooks = Hooks(
        model=(card.name, card.version),
        cutoff=lambda: float(judge.cutoff),
        set_cutoff=judge.set_cutoff if config.mqtt.remote_cutoff else None,
        set_camera_cutoff=judge.set_camera_cutoff if config.mqtt.remote_cutoff else None,
        camera_cutoffs=lambda: dict(judge.camera_cutoffs),
    )
    publisher = Publisher(config, hooks, ledger_checked=not trap.dry_run)  # a dry run's ledger is in memory
    publisher.on_failure = trap.loop.stop  # a publisher that gave up ends the run: `run` exits 1, systemd restarts
    publisher.start()
    trap.loop.on_event = publisher.wake
    trap.loop.on_decided = publisher.decided
    return publisher


def restore_camera_cutoffs(trap: Trap) -> None:
    """The cameras' own cutoffs set remotely earlier (`<base>/set/cutoff/<camera>`), from the ledger."""
    import json

    from firmware_app.events.mqtt import CAMERA_CUTOFFS_KEY
    from firmware_app.events.payloads import CUTOFF_RANGE

    saved = trap.ledger.get_meta(CAMERA_CUTOFFS_KEY)
    try:
        cameras = json.loads(saved) if saved else {}
    except ValueError:
        cameras = {}
    lo, hi = CUTOFF_RANGE
    for camera, value in cameras.items() if isinstance(cameras, dict) else ():
        if isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi:
            trap.judge.set_camera_cutoff(str(camera), float(value))
            log.warning("camera %r: cutoff %.4g, set remotely earlier (mqtt.remote_cutoff = true)", camera, value)
