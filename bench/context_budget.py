"""What camera context adds to a frame, beside the classifier's own path (the baseline).

    .venv/bin/python bench/context_budget.py --images ../shared/data/peru_unlabelled/images [--threads 1]

Per frame, medians over --repeat passes (pass 0 warms up and is not counted):
- baseline: decode, preprocess and classify (the trap's path at a camera without references);
- with context: both model inputs from one decode (the pipeline's path at a camera with references),
  the feature pass, and the comparison with k references (k = 1, 3, 12; the bank holds up to 12
  per camera and lighting mode).
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
from firmware_app.context.score import baseline as bank_baseline  # noqa: E402
from firmware_app.context.score import compare  # noqa: E402
from firmware_app.imaging import ImagingSettings, prepare_jpeg, prepare_jpeg_views  # noqa: E402

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
    laps: dict[str, list[float]] = {
        name: []
        for name in (
            "baseline: decode+preprocess",
            "baseline: classify",
            "context: both views from one decode",
            "feature pass",
        )
    }
    laps |= {f"compare, {k} reference(s)": [] for k in REFERENCE_COUNTS}
    bases = {k: bank_baseline(refs[1 : k + 1]) for k in REFERENCE_COUNTS}
    clf_spec, ext_spec = classifier.card.input, extractor.card.input
    for rep in range(args.repeat + 1):
        for data in datas:
            t0 = time.perf_counter()
            prepared = prepare_jpeg(data, clf_spec, settings)
            t1 = time.perf_counter()
            classifier.score(prepared.pixels)
            t2 = time.perf_counter()
            # what the pipeline does at a camera with references: one decode, both views
            _, view = prepare_jpeg_views(data, [clf_spec, ext_spec], settings)
            t3 = time.perf_counter()
            features = extractor.features(view.pixels)
            t4 = time.perf_counter()
            compared = []
            for k in REFERENCE_COUNTS:
                t5 = time.perf_counter()
                compare(features, refs[1 : k + 1], bases[k])
                compared.append(time.perf_counter() - t5)
            if rep == 0:
                continue
            for name, seconds in zip(laps, [t1 - t0, t2 - t1, t3 - t2, t4 - t3, *compared], strict=True):
                laps[name].append(seconds)
    medians = {name: statistics.median(values) * 1000 for name, values in laps.items()}
    base = medians["baseline: decode+preprocess"] + medians["baseline: classify"]
    extra_view = medians["context: both views from one decode"] - medians["baseline: decode+preprocess"]
    print(f"{len(files)} frames from {args.images} ({args.repeat} passes), {args.threads} thread(s), "
          f"{classifier.card.label} + {extractor.card.label} on {extractor.runtime}\n")  # fmt: skip
    print("| stage | median ms | vs baseline frame |\n| --- | --- | --- |")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {ms / base:.2f}× |")
    print(f"| **baseline frame (no references)** | {base:.2f} | 1.00× |")
    for k in REFERENCE_COUNTS:
        added = extra_view + medians["feature pass"] + medians[f"compare, {k} reference(s)"]
        print(f"| **frame with context, {k} reference(s)** | {base + added:.2f} | {(base + added) / base:.2f}× |")
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
