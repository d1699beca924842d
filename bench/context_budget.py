"""What camera context adds to a frame, beside the classifier's own path (the baseline).

    .venv/bin/python bench/context_budget.py --images ../shared/data/peru_unlabelled/images [--threads 1]

Per frame, medians over --repeat passes (pass 0 warms up and is not counted):
- baseline: read, decode, preprocess and classify (the trap's path without context);
- + context: the extractor's own decode and preprocess, the feature pass, and the comparison with
  k references (k = 1, 3, 12; the default bank holds up to 12 per camera and lighting mode).
Also the bank's size on disk per reference. Not a Raspberry Pi figure: run it on the Pi for that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_app.classifiers import load_classifier  # noqa: E402
from firmware_app.context.bank import ReferenceBank  # noqa: E402
from firmware_app.context.extractor import load_extractor  # noqa: E402
from firmware_app.context.score import compare  # noqa: E402
from firmware_app.imaging import ImagingSettings, prepare_jpeg  # noqa: E402

REFERENCE_COUNTS = (1, 3, 12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        print(f"--images {args.images}: no JPEG frames", file=sys.stderr)
        return 2
    classifier = load_classifier(None, threads=args.threads)
    extractor = load_extractor(None, threads=args.threads)
    settings = ImagingSettings()
    datas = [p.read_bytes() for p in files]
    refs = np.stack([extractor.features(prepare_jpeg(d, extractor.card.input, settings).pixels) for d in datas])
    refs = np.concatenate([refs] * (max(REFERENCE_COUNTS) // len(refs) + 1))
    laps: dict[str, list[float]] = {"baseline": [], "context decode+preprocess": [], "feature pass": []}
    laps |= {f"compare, {k} reference(s)": [] for k in REFERENCE_COUNTS}
    from firmware_app.context.score import baseline as bank_baseline

    bases = {k: bank_baseline(refs[1 : k + 1]) for k in REFERENCE_COUNTS}
    for rep in range(args.repeat + 1):
        for data in datas:
            t0 = time.perf_counter()
            classifier.score(prepare_jpeg(data, classifier.card.input, settings).pixels)
            t1 = time.perf_counter()
            pixels = prepare_jpeg(data, extractor.card.input, settings).pixels
            t2 = time.perf_counter()
            features = extractor.features(pixels)
            t3 = time.perf_counter()
            if rep == 0:
                continue
            laps["baseline"].append(t1 - t0)
            laps["context decode+preprocess"].append(t2 - t1)
            laps["feature pass"].append(t3 - t2)
            for k in REFERENCE_COUNTS:
                t4 = time.perf_counter()
                compare(features, refs[1 : k + 1], bases[k])
                laps[f"compare, {k} reference(s)"].append(time.perf_counter() - t4)
    medians = {name: statistics.median(values) * 1000 for name, values in laps.items()}
    base = medians["baseline"]
    added_12 = medians["context decode+preprocess"] + medians["feature pass"] + medians["compare, 12 reference(s)"]
    print(f"{len(files)} frames from {args.images} ({args.repeat} passes), {args.threads} thread(s), "
          f"{classifier.card.label} + {extractor.card.label} on {extractor.runtime}\n")  # fmt: skip
    print("| stage | median ms | vs baseline |\n| --- | --- | --- |")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {ms / base:.2f}× |")
    print(f"| **frame with context (12 references)** | {base + added_12:.2f} | {(base + added_12) / base:.2f}× |")
    with tempfile.TemporaryDirectory() as tmp:
        bank = ReferenceBank(Path(tmp, "references.db"), extractor.card.label, max_references=12)
        for i in range(12):
            bank.add("cam", "day", refs[i], origin="manual", source=f"f{i}.jpg", sha256=f"{i}")
        bank.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    print(f"\nbank on disk: {size / 1024:.0f} KiB for 12 references ({size / 12 / 1024:.0f} KiB each, "
          f"features {refs[0].size * 2 / 1024:.0f} KiB at fp16)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
