"""`blankfilter reference ...`: the cameras' known-empty reference frames (camera context).

blankfilter reference add FILES... [--camera CAM] [--mode day|ir]   known-empty frames of a camera
blankfilter reference capture [--camera CAM] [--count 3]            the next frames become references
blankfilter reference list [--camera CAM]                           read-only: makes nothing
blankfilter reference reset (--camera CAM | --all) [--mode day|ir]  after moving or servicing a camera
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from firmware_app.commands.common import add_common, config_from_args
from firmware_app.config import Config
from firmware_app.context.bank import ANY_CAMERA, MODES, ReferenceBank
from firmware_app.context.extractor import FeatureExtractor
from firmware_app.decision import camera_of
from firmware_app.errors import ConfigError, ImageError

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    ref = sub.add_parser("reference", help="the cameras' known-empty reference frames (camera context)")
    verbs = ref.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add known-empty frames of one camera as references")
    add_common(add)
    add.add_argument("files", nargs="+", type=Path, metavar="FILE", help="JPEG frames with no animal in them")
    add.add_argument(
        "--camera",
        help="camera name: its inbox sub-folder (default: from the file's place in the inbox; required for "
        "files outside the inbox)",
    )
    add.add_argument("--mode", choices=MODES, help="lighting mode (default: day, or ir for greyscale frames)")
    add.set_defaults(func=cmd_add)
    capture = verbs.add_parser("capture", help="the next frames the camera takes become references (deployment)")
    add_common(capture)
    capture.add_argument("--camera", default=ANY_CAMERA, help="camera name (default: whichever camera fires next)")
    capture.add_argument("--count", type=int, default=3, help="how many frames (default 3)")
    capture.set_defaults(func=cmd_capture)
    show = verbs.add_parser("list", help="list the references")
    add_common(show)
    show.add_argument("--camera")
    show.set_defaults(func=cmd_list)
    reset = verbs.add_parser("reset", help="forget references after a camera was moved or serviced")
    add_common(reset)
    who = reset.add_mutually_exclusive_group(required=True)
    who.add_argument("--camera")
    who.add_argument("--all", action="store_true", help="every camera")
    reset.add_argument("--mode", choices=MODES)
    reset.set_defaults(func=cmd_reset)


def _setup(args: argparse.Namespace, config: Config | None = None) -> tuple[Config, FeatureExtractor, ReferenceBank]:
    from firmware_app.app import open_bank, open_extractor

    config = config or config_from_args(args)
    extractor = open_extractor(config, required=True)
    assert extractor is not None
    return config, extractor, open_bank(config, extractor)


def camera_for(path: Path, inbox: Path) -> str | None:
    """A file inside the inbox belongs to the camera of its sub-folder, as the folder loop sees it (a
    file in the inbox itself: camera '.', as the loop names it too); a file outside it: None, unknown."""
    try:
        return camera_of(path.resolve().relative_to(inbox.resolve()).as_posix())
    except ValueError:
        return None


def check_cameras(files: list[Path], inbox: Path) -> None:
    """Without --camera every file must be in the inbox, where its sub-folder names its camera."""
    outside = [str(p) for p in files if camera_for(p, inbox) is None]
    if outside:
        raise ConfigError(
            f"reference add: {', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not in the inbox "
            f"(source.inbox = {inbox}), so the camera is unknown: give --camera NAME, the inbox sub-folder "
            "that camera's frames arrive in"
        )


def cmd_add(args: argparse.Namespace) -> int:
    from firmware_app.app import context_settings, load_model
    from firmware_app.context import CameraContext, a_reference
    from firmware_app.judge import Judge

    config = config_from_args(args)
    if not args.camera:
        check_cameras(args.files, config.source.inbox)
    config, extractor, bank = _setup(args, config)
    context = CameraContext(extractor, bank, context_settings(config, extractor))
    judge, failed = Judge(config, load_model(config), context), 0
    by_camera: dict[str, list[tuple[bytes, str]]] = {}
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read ({exc.strerror or exc}): not added")
            failed += 1
            continue
        camera = args.camera or camera_for(path, config.source.inbox)
        assert camera is not None  # check_cameras
        by_camera.setdefault(camera, []).append((data, str(path)))
    for camera, frames in by_camera.items():
        for (_, source), outcome in zip(frames, judge.add_references(camera, frames, args.mode), strict=True):
            if isinstance(outcome, ImageError):
                print(f"{source}: {outcome}: not added")
                failed += 1
            else:
                mode, added = outcome
                print(f"{source}: {'added' if added else 'already there'} as {a_reference(mode)} of camera {camera}")
    bank.close()
    return 1 if failed else 0


def cmd_capture(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= 50:
        raise ConfigError(f"--count {args.count}: take 1 to 50 frames")
    _, _, bank = _setup(args)
    bank.request_capture(args.camera, args.count)
    who = "whichever camera fires next" if args.camera == ANY_CAMERA else f"camera {args.camera}"
    print(f"the next {args.count} frame(s) of {who} become references: step away from the trap now")
    bank.close()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Read-only: opens the bank for reading and makes no folder or bank where there is none."""
    from firmware_app.app import open_extractor

    config = config_from_args(args)
    extractor = open_extractor(config, required=True)
    assert extractor is not None
    bank = ReferenceBank.read_only(config.bank_path, extractor.card.label)
    if bank is None:
        print(f"0 reference(s) (no references) for {extractor.card.label}: no reference bank at {config.bank_path} yet")
        return 0
    refs = bank.list(args.camera)
    for r in refs:
        print(f"{r.id:5d}  {r.camera:20s} {r.mode:4s} {r.origin:8s} {r.added_at}  {r.source}")
    counts: dict[tuple[str, str], int] = {}
    for r in refs:
        counts[(r.camera, r.mode)] = counts.get((r.camera, r.mode), 0) + 1
    summary = ", ".join(f"{cam}/{mode}: {n}" for (cam, mode), n in sorted(counts.items())) or "no references"
    print(f"{len(refs)} reference(s) ({summary}) for {extractor.card.label}")
    stale = bank.stale()
    if stale:
        print(
            f"{stale} reference(s) from another extractor are ignored: `blankfilter reference reset --all` clears them"
        )
    for camera, remaining in bank.captures().items():
        print(f"capture pending: {remaining} frame(s) of {'any camera' if camera == ANY_CAMERA else camera}")
    bank.close()
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    _, _, bank = _setup(args)
    removed = bank.reset(None if args.all else args.camera, args.mode)
    print(f"removed {removed} reference(s)")
    bank.close()
    return 0
