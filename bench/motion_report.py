"""How often the lores motion detector fires, on real frame sequences and on synthetic lighting changes.

    .venv/bin/python bench/motion_report.py [--data ../shared/data] [--noise 4]

Prints markdown tables (docs/motion.md holds a copy):

1. Real sequences: the fixture frames and, when the shared data folder exists, the Missouri bursts
   (as shot, and reversed so that the animal walks *into* a blank scene), the Wellington bursts and
   the Norway tunnel cameras in time order. These are stills one second to hours apart, not video:
   each frame is compared with a background made of the frames before it in its sequence (the
   first frame only seeds it), so the detector runs with warmup_frames=1, cooldown_s=0 and
   confirm_frames=1, the other parameters at their defaults. The camera's info bars (top and
   bottom `--bars` of the rows) are masked: a Pi camera's lores stream has none.
2. Synthetic lighting changes on static fixture scenes, with sensor noise (`--noise`, grey levels)
   added to every frame and the detector's defaults as on a 10 fps lores stream; plus a moving dark
   blob (a positive control) and a real day-to-night-IR pair of one Peru camera.
"""

from __future__ import annotations

import argparse
import csv
import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_app.triggers.motion import MotionDetector  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "frames"
LORES = (320, 240)  # width, height
FPS = 10.0
STILLS: dict[str, Any] = {"warmup_frames": 1, "cooldown_s": 0.0, "confirm_frames": 1}

Sequence = list[tuple[Path, str]]  # (frame, label) in capture order


@dataclass
class Tally:
    sequences: int = 0
    frames: int = 0
    blank: int = 0
    blank_hits: int = 0
    animal: int = 0
    animal_hits: int = 0
    lighting: int = 0
    arrivals: int = 0  # sequences where an animal frame follows a blank one
    arrivals_hit: int = 0


@functools.lru_cache(maxsize=4096)  # ~77 KB a frame: the sensitivity runs decode each frame once
def lores(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.draft("L", (LORES[0] * 2, LORES[1] * 2))  # JPEG DCT scaling: a fast reduced decode
        return np.asarray(img.convert("L").resize(LORES, Image.Resampling.BILINEAR))


def bar_mask(bars: float) -> np.ndarray:
    mask = np.ones((LORES[1], LORES[0]), dtype=bool)
    rows = round(bars * LORES[1])
    if rows:
        mask[:rows] = False
        mask[-rows:] = False
    return mask


def run_sequence(seq: Sequence, mask: np.ndarray, tally: Tally, **settings: float) -> None:
    detector = MotionDetector(mask=mask, **{**STILLS, **settings})
    tally.sequences += 1
    previous = None
    for i, (path, label) in enumerate(seq):
        hit = detector.update(lores(path), float(i))
        tally.frames += 1
        if i == 0:
            previous = label
            continue  # the first frame only seeds the background
        tally.lighting += detector.last.lighting
        if label == "blank":
            tally.blank += 1
            tally.blank_hits += hit
        else:
            tally.animal += 1
            tally.animal_hits += hit
            if previous == "blank":
                tally.arrivals += 1
                tally.arrivals_hit += hit
        previous = label


def read_labels(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["label"] in ("blank", "animal", "human", "vehicle")]


def grouped(rows: Iterable[dict[str, str]], key: Callable[[dict[str, str]], str]) -> dict[str, list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def fixture_sequences() -> Iterator[tuple[str, Sequence]]:
    labels = {row["path"]: row["label"] for row in read_labels(FIXTURES)}
    fox = [f"missouri/SEQ75192_IMG_000{i}.JPG" for i in range(1, 6)]
    for name, paths in (
        ("fixtures: Missouri fox burst, as shot (fox leaves)", fox),
        ("fixtures: Missouri fox burst, reversed (fox arrives)", fox[::-1]),
        ("fixtures: Wellington, 2 bursts of 3", [f"wellington/11374_{i}-1.JPG" for i in (1, 2, 3)]),
        ("fixtures: Wellington, 2 bursts of 3", [f"wellington/1200_{i}-0.JPG" for i in (1, 2, 3)]),
    ):
        yield name, [(FIXTURES / p, labels[p]) for p in paths]


def shared_sequences(data: Path) -> Iterator[tuple[str, Sequence]]:
    missouri = data / "missouri"
    if (missouri / "labels.csv").exists():
        for _, rows in sorted(grouped(read_labels(missouri), lambda r: r["sequence"]).items()):
            seq = [(missouri / r["path"], r["label"]) for r in sorted(rows, key=lambda r: r["path"])]
            yield "Missouri bursts, as shot (1 s apart)", seq
            yield "Missouri bursts, reversed (animal arrives)", seq[::-1]
    wellington = data / "wellington_sequences"
    if (wellington / "labels.csv").exists():
        for _, rows in sorted(grouped(read_labels(wellington), lambda r: r["sequence"]).items()):
            yield "Wellington bursts of 3", [(wellington / r["path"], r["label"]) for r in sorted(rows, key=_path)]
    norway = data / "norway_tunnels"
    if (norway / "labels.csv").exists():
        for _, rows in sorted(grouped(read_labels(norway), lambda r: r["location"]).items()):
            # `sequence` ends in the capture date and time; the path's counter orders one trigger's frames.
            ordered = sorted(rows, key=lambda r: (*r["sequence"].rsplit("_", 2)[1:], r["path"]))
            yield (
                "Norway tunnels, one camera in time order (minutes to hours apart)",
                [(norway / r["path"], r["label"]) for r in ordered],
            )


def _path(row: dict[str, str]) -> str:
    return row["path"]


def tally(sequences: Iterable[tuple[str, Sequence]], mask: np.ndarray, **settings: float) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for name, seq in sequences:
        run_sequence(seq, mask, tallies.setdefault(name, Tally()), **settings)
    return tallies


def real_table(sequences: Iterable[tuple[str, Sequence]], mask: np.ndarray) -> list[str]:
    tallies = tally(sequences, mask)
    lines = [
        "| sequences | seqs | frames | blank frames triggered | animal frames triggered "
        "| animal arrivals triggered | lighting restarts |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in tallies.items():
        lines.append(
            f"| {name} | {t.sequences} | {t.frames} | {_ratio(t.blank_hits, t.blank)} "
            f"| {_ratio(t.animal_hits, t.animal)} | {_ratio(t.arrivals_hit, t.arrivals)} | {t.lighting} |"
        )
    return lines


def _ratio(hits: int, total: int) -> str:
    return f"{hits} / {total} ({100 * hits / total:.0f} %)" if total else "–"


def _percent(hits: int, total: int) -> str:
    return f"{100 * hits / total:.0f} %" if total else "–"


def sensitivity_table(sequences: list[tuple[str, Sequence]], mask: np.ndarray) -> list[str]:
    """Blank frames triggered vs animal arrivals (or animal frames) triggered, per threshold and min_area."""
    names = list(dict.fromkeys(name for name, _ in sequences))
    lines = [
        "| threshold | min_area | " + " | ".join(f"{n.split(' (')[0]}: blank / animal" for n in names) + " |",
        "| ---: | ---: |" + " ---: |" * len(names),
    ]
    for threshold in (15.0, 25.0, 40.0):
        for min_area in (0.001, 0.002, 0.005):
            tallies = tally(sequences, mask, threshold=threshold, min_area=min_area)
            cells = []
            for n in names:
                t = tallies[n]
                hits, total = (t.arrivals_hit, t.arrivals) if "arrive" in n else (t.animal_hits, t.animal)
                cells.append(f"{_percent(t.blank_hits, t.blank)} / {_percent(hits, total)}")
            lines.append(f"| {threshold:g} | {min_area:g} | " + " | ".join(cells) + " |")
    return lines


# -- synthetic lighting cases -------------------------------------------------------------------
def synthetic_cases(scene: np.ndarray, rgb: np.ndarray) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """name -> (warm-up frames, test frames), all float (noise is added, then clipped, later)."""
    base = scene.astype(np.float64)
    dawn = base * 0.3
    ir_mean = 255 * (rgb.mean(axis=-1) / 255) ** 0.6 + 10  # IR light: channels alike, flatter gamma
    ir_red = 255 * (rgb[..., 0] / 255) ** 0.6  # IR makes foliage bright: not a global tone curve
    return {
        "static scene, 100 frames": ([base] * 15, [base] * 100),
        "brightness step ×0.5": ([base] * 15, [base * 0.5] * 30),
        "brightness step ×1.5 (highlights clip)": ([base] * 15, [base * 1.5] * 30),
        "sunrise: ×0.3 → ×1.0 over 30 frames": ([dawn] * 15, [base * (0.3 + 0.7 * k / 29) for k in range(30)]),
        "sunset: ×1.0 → ×0.3 over 30 frames": ([base] * 15, [base * (1.0 - 0.7 * k / 29) for k in range(30)]),
        "IR switch: grey of equal channels, γ 0.6": ([base] * 15, [ir_mean] * 30),
        "IR-like channel change: red channel, γ 0.6": ([base] * 15, [ir_red] * 30),
        "control: dark blob r=10 px crossing": ([base] * 15, blob_frames(base, value=10)),
        "control: saturated blob r=10 px (IR-lit animal)": ([base] * 15, blob_frames(base, value=255)),
    }


def blob_frames(base: np.ndarray, value: float, radius: int = 10, step: int = 8) -> list[np.ndarray]:
    yy, xx = np.mgrid[: base.shape[0], : base.shape[1]]
    frames = []
    for k in range(30):
        frame = base.copy()
        frame[(xx - (20 + step * k)) ** 2 + (yy - base.shape[0] * 0.6) ** 2 <= radius**2] = value
        frames.append(frame)
    return frames


def run_synthetic(warm: list[np.ndarray], test: list[np.ndarray], noise: float, mask: np.ndarray) -> tuple[int, float]:
    rng = np.random.default_rng(0)
    detector = MotionDetector(mask=mask)
    frames = [*warm, *test]
    hits, top = 0, 0.0
    for i, frame in enumerate(frames):
        grey = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
        hit = detector.update(grey, i / FPS)
        if i >= len(warm):
            hits += hit
            top = max(top, detector.last.share)
    return hits, top


def synthetic_table(noise: float, mask: np.ndarray) -> list[str]:
    scenes = {
        "Missouri night IR": "missouri/SEQ75192_IMG_0003.JPG",
        "Wellington day": "wellington/1200_1-0.JPG",
        "NACTI dusk": "speciesnet/blank.jpg",
        "Peru day colour": "peru/cam1_EK000001.JPG",
    }
    loaded = {}
    for name, rel in scenes.items():
        with Image.open(FIXTURES / rel) as img:
            rgb = np.asarray(img.convert("RGB").resize(LORES, Image.Resampling.BILINEAR)).astype(np.float64)
        loaded[name] = (rgb @ np.array([0.299, 0.587, 0.114]), rgb)
    cases = {scene: synthetic_cases(grey, rgb) for scene, (grey, rgb) in loaded.items()}
    lines = [
        "| case | " + " | ".join(scenes) + " |",
        "| --- |" + " ---: |" * len(scenes),
    ]
    for case in next(iter(cases.values())):
        cells = []
        for scene in scenes:
            hits, top = run_synthetic(*cases[scene][case], noise, mask)
            cells.append(f"{hits} ({100 * top:.2f} %)")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def day_to_ir(mask: np.ndarray) -> str:
    day, night = (lores(FIXTURES / f"peru/cam1_EK00000{i}.JPG") for i in (1, 4))
    detector = MotionDetector(mask=mask, **STILLS)
    detector.update(day, 0.0)
    hit = detector.update(night, 1.0)
    what = "lighting restart" if detector.last.lighting else ("trigger" if hit else "no trigger")
    return f"real day colour → night IR, one Peru camera: {100 * detector.last.share:.0f} % changed → {what}"


def update_ms(mask: np.ndarray) -> float:
    frame = lores(FIXTURES / "missouri/SEQ75192_IMG_0003.JPG")
    detector = MotionDetector(mask=mask)
    times = []
    for i in range(200):
        start = time.perf_counter()
        detector.update(frame, i / FPS)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[20:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise in synthetic frames (σ, grey levels)")
    parser.add_argument("--bars", type=float, default=0.06, help="share of rows masked at the top and the bottom")
    args = parser.parse_args()
    mask = bar_mask(args.bars)

    sequences: list[tuple[str, Sequence]] = list(fixture_sequences())
    if args.data.is_dir():
        sequences += list(shared_sequences(args.data))
    else:
        print(f"({args.data} not found: fixture frames only)\n")
    print("Real sequences (stills, each compared with the frames before it in its sequence):\n")
    print("\n".join(real_table(sequences, mask)))
    chosen = [(n, s) for n, s in sequences if ("arrive" in n or "Norway" in n) and "fixtures" not in n]
    chosen = chosen or [(n, s) for n, s in sequences if "arrive" in n]
    print("\nSensitivity (animal = arrivals where the set's name says so, else all animal frames):\n")
    print("\n".join(sensitivity_table(chosen, mask)))
    print(f"\nSynthetic lighting changes on static scenes (triggers; largest changed share; noise σ={args.noise:g}):\n")
    print("\n".join(synthetic_table(args.noise, mask)))
    print(f"\n{day_to_ir(mask)}")
    print(f"\nupdate(): {update_ms(mask):.2f} ms a 320x240 frame (median, this machine, one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
