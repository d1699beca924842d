"""`blankfilter bench`: per-stage medians on real frames, the trap's path against a naive baseline.

Each variant runs in its own process, so its peak RSS is its own:
- reduced: what the trap does (JPEG DCT-scaled decode straight to about the model's size);
- naive:   full-resolution decode, then resize (what most scripts do).
Everything after decoding (resize, exposure, gamma, inference, ledger + file move) is the same
code in both, so the ratio isolates the decode strategy.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from firmware_app.classifiers import Classifier
from firmware_app.config import Config, load_config
from firmware_app.errors import BlankfilterError, ConfigError
from firmware_app.hashing import sha256_bytes
from firmware_app.imaging import ImagingSettings, decode_jpeg, finish
from firmware_app.modelcard import InputSpec

STAGES = ("read+hash", "decode", "preprocess", "inference", "decide+store")
NON_MODEL = ("read+hash", "decode", "preprocess", "decide+store")


def decode_naive(data: bytes, want: tuple[int, int], settings: ImagingSettings) -> Image.Image:
    """The baseline: decode every pixel of the full-resolution frame."""
    image = Image.open(io.BytesIO(data))
    image.load()
    upright = ImageOps.exif_transpose(image) or image
    return upright.convert("RGB")


def run_variant(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    from firmware_app.actions import Action, Verdict
    from firmware_app.app import load_model
    from firmware_app.ledger import Decision, Ledger, NewFrame
    from firmware_app.store import Store

    classifier = load_model(config)
    settings = ImagingSettings.from_config(config.imaging)
    spec: InputSpec = classifier.card.input
    files = frame_files(args.images)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with tempfile.TemporaryDirectory(prefix="blankfilter-bench-") as tmp:
        inbox, root = Path(tmp, "inbox"), Path(tmp, "store")
        inbox.mkdir()
        root.mkdir()
        ledger, store = Ledger(root / "ledger.db"), Store(root, inbox)
        for rep in range(args.repeat + 1):  # pass 0 warms caches and is not counted
            for n, path in enumerate(files):
                rel = f"r{rep}-{n}-{path.name}"
                shutil.copyfile(path, inbox / rel)
                lap = _Lap()
                data = (inbox / rel).read_bytes()
                sha = sha256_bytes(data)
                lap("read+hash")
                if args.variant == "naive":
                    image = decode_naive(data, (spec.width, spec.height), settings)
                    size, captured = image.size, None
                else:
                    image, size, captured = decode_jpeg(data, (spec.width, spec.height), settings)
                lap("decode")
                prepared = finish(image, spec, settings, size, image.size, captured)
                lap("preprocess")
                score = classifier.score(prepared.pixels)
                lap("inference")
                frame_id = ledger.add(
                    NewFrame(rel, sha, len(data), None, 0.0, "mtime", None, score, prepared.gamma, None, None, "b", "1")
                )
                keep = score >= classifier.card.cutoff
                action = Action.KEPT if keep else Action.DELETED
                dest = store.destination(action, rel, sha)
                verdict = Verdict.NONBLANK if keep else Verdict.BLANK
                ledger.decide([Decision(frame_id, rel, verdict, action, dest, classifier.card.cutoff)])
                if dest:
                    store.move(rel, dest, sha)
                else:
                    store.delete(rel)
                ledger.done(frame_id)
                lap("decide+store")
                if rep > 0:
                    for stage, seconds in lap.laps.items():
                        times[stage].append(seconds)
        ledger.close()
    medians = {stage: statistics.median(values) * 1000 for stage, values in times.items()}
    per_frame = [sum(times[s][i] for s in STAGES) for i in range(len(times["decode"]))]
    end_to_end = run_once_throughput(config, classifier, files, args.repeat) if args.variant == "reduced" else None
    return {
        "variant": args.variant,
        "frames": len(per_frame),
        "files": len(files),
        "source_size": list(size),
        "model": classifier.card.label,
        "runtime": classifier.runtime,
        "threads": config.model.threads,
        "median_ms": medians,
        "frame_ms": statistics.median(per_frame) * 1000,
        "frames_per_s": len(per_frame) / sum(per_frame),
        "peak_rss_mb": peak_rss_mb(),
        "run_once_frames_per_s": end_to_end,
    }


def run_once_throughput(config: Config, classifier: Classifier, files: list[Path], repeat: int) -> float:
    """Frames/s of the real `run --once` loop (prefetch overlaps decoding with inference)."""
    from firmware_app.app import build_trap

    with tempfile.TemporaryDirectory(prefix="blankfilter-bench-run-") as tmp:
        inbox, root = Path(tmp, "inbox"), Path(tmp, "store")
        for rep in range(repeat):
            for n, path in enumerate(files):
                dest = inbox / f"r{rep}" / f"{n}-{path.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        settings = [f"source.inbox={inbox}", f"store.root={root}", "source.settle_s=0", "store.min_free_mb=0"]
        run_config = load_config(None, settings)
        run_config = replace(run_config, model=config.model, imaging=config.imaging)
        run_config = replace(run_config, context=replace(run_config.context, enabled=False))
        trap = build_trap(run_config, once=True, classifier=classifier)
        start = time.perf_counter()
        trap.loop.run()
        elapsed = time.perf_counter() - start
        trap.close()
    return len(files) * repeat / elapsed


def peak_rss_mb() -> float:
    """This process's own peak RSS. VmHWM rather than ru_maxrss: Linux carries ru_maxrss across
    exec, so a child of a big process would report its parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Lap:
    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self.last
        self.last = now


def frame_files(images: Path) -> list[Path]:
    """The JPEG frames under --images; none (or no such folder) is a usage error naming the folder."""
    if not images.is_dir():
        raise ConfigError(f"--images {images}: {'not a folder' if images.exists() else 'no such folder'}")
    files = sorted(p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise ConfigError(f"--images {images}: no JPEG frames found (.jpg, .jpeg)")
    return files


def spawn(variant: str, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "firmware_app", "bench", *argv, "--variant", variant, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BlankfilterError(f"bench variant {variant} failed (exit {done.returncode}): {failure(done.stderr)}")
    return dict(json.loads(done.stdout))


def failure(stderr: str) -> str:
    """What a child said went wrong: its error message, else its last line (a traceback's exception)."""
    marker = "blankfilter: error: "
    if marker in stderr:
        return stderr.split(marker, 1)[1].strip()
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "it printed nothing on stderr"


def render(reduced: dict[str, Any], naive: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """A Markdown table (it goes into the README as is)."""

    def row(name: str, a: float, b: float, unit: str = "ms", digits: int = 1) -> None:
        ratio = f"{b / a:.2f}x" if a else "-"
        out(f"| {name} | {a:.{digits}f} {unit} | {b:.{digits}f} {unit} | {ratio} |")

    def share(r: dict[str, Any]) -> float:
        non_model = sum(r["median_ms"][s] for s in NON_MODEL)
        return 100 * non_model / (non_model + r["median_ms"]["inference"])

    out(
        f"{reduced['files']} frames ({reduced['source_size'][0]}x{reduced['source_size'][1]}), "
        f"{reduced['frames']} timed per variant; model {reduced['model']} on {reduced['runtime']}, "
        f"{reduced['threads']} thread(s)\n"
    )
    out("| stage (median per frame) | trap (reduced decode) | naive baseline (full decode) | naive / trap |")
    out("| --- | --- | --- | --- |")
    for stage in STAGES:
        row(stage, reduced["median_ms"][stage], naive["median_ms"][stage])
    dp = [r["median_ms"]["decode"] + r["median_ms"]["preprocess"] for r in (reduced, naive)]
    row("**decode+preprocess**", dp[0], dp[1])
    row("whole frame", reduced["frame_ms"], naive["frame_ms"])
    out(
        f"| non-model share of a frame | {share(reduced):.0f} % | {share(naive):.0f} % | "
        f"{share(naive) / share(reduced):.2f}x |"
    )
    row("frames/s", reduced["frames_per_s"], naive["frames_per_s"], unit="", digits=2)
    row("peak RSS", reduced["peak_rss_mb"], naive["peak_rss_mb"], unit="MB", digits=0)
    out(
        f"| `run --once` end to end (decode of the next frame overlaps inference) | "
        f"{reduced['run_once_frames_per_s']:.2f} frames/s | | |"
    )


def main(args: argparse.Namespace, config: Config) -> int:
    """`config`: the parsed `--config` / `--set` / model flags (each variant's child parses its own)."""
    if args.variant:
        print(json.dumps(run_variant(args, config)))
        return 0
    frame_files(args.images)  # before two processes start to find the same
    results = {variant: spawn(variant, _child_args(args)) for variant in ("reduced", "naive")}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        render(results["reduced"], results["naive"])
    return 0


def _child_args(args: argparse.Namespace) -> list[str]:
    """The bench arguments again, for the child processes."""
    argv = ["--images", str(args.images), "--repeat", str(args.repeat)]
    if args.config:
        argv += ["--config", str(args.config)]
    for item in args.set or []:
        argv += ["--set", item]
    for flag in ("model", "cutoff", "threads"):
        if getattr(args, flag, None) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    if args.edgetpu:
        argv.append("--edgetpu")
    return argv
