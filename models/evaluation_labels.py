"""Write the Labels CSV that the shipped model is evaluated on: every frame it never trained on.

    python models/evaluation_labels.py --data ../shared/data --split models/build/split.json \
        --out models/build/evaluation_labels.csv
    blankfilter eval --model models/blankfilter-cellnet-320.tflite --labels models/build/evaluation_labels.csv

`location` is the dataset (so `eval` reports each unseen place apart): the held-out Missouri bursts,
and the small sets from other places (LILA samples, SpeciesNet samples, Snapshot Serengeti,
Wellington, burrowing owls, jaguar film scans). Norway tunnels are left out: the model trained on
them. Rows in each folder's uncertain.csv are left out, as the data README asks.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

UNSEEN = [
    "lila_samples",
    "speciesnet_samples",
    "serengeti_samples",
    "wellington_sequences",
    "owl_burrows",
    "jaguar_film",
]


def rows(folder: Path) -> list[dict[str, str]]:
    skip = set()
    if (folder / "uncertain.csv").exists():
        with (folder / "uncertain.csv").open() as fh:
            skip = {r["path"] for r in csv.DictReader(fh)}
    with (folder / "labels.csv").open() as fh:
        return [r for r in csv.DictReader(fh) if r["path"] not in skip]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True, help="split.json written by models/train.py")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    held = set(json.loads(args.split.read_text())["heldout_missouri_bursts"])
    with args.out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "location", "sequence"])
        for r in rows(args.data / "missouri"):
            if r["sequence"] in held:
                writer.writerow(
                    [(args.data / "missouri" / r["path"]).resolve(), r["label"], "missouri_heldout", r["sequence"]]
                )
        for name in UNSEEN:
            for r in rows(args.data / name):
                writer.writerow([(args.data / name / r["path"]).resolve(), r["label"], name, r.get("sequence", "")])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
