"""Write the Labels CSV that the shipped model is evaluated on: every frame it never trained on.

    python models/evaluation_labels.py --data ../shared/data --split models/build/split.json \
        --out models/build/evaluation_labels.csv
    blankfilter eval --model models/blankfilter-cellnet-320.tflite --labels models/build/evaluation_labels.csv

`location` is the dataset (so `eval` reports each unseen place apart): the held-out Missouri bursts,
and the small sets from other places (LILA samples, SpeciesNet samples, Snapshot Serengeti,
Wellington, burrowing owls, jaguar film scans), and the Norway tunnels unless the model trained on
them (split.json says). The `camera` and `datetime` columns are kept for `eval --context`.
Rows in each folder's uncertain.csv are left out, as the data README asks.
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
    parser.add_argument(
        "--context",
        action="store_true",
        help="instead: every Missouri burst and the Norway tunnels, the places with cameras, for `eval --context`",
    )
    parser.add_argument(
        "--context-lolo",
        action="store_true",
        help="instead: the places with cameras as leave-one-location-out groups, for `eval --context --lolo`",
    )
    args = parser.parse_args()
    if args.context_lolo:
        write_lolo_labels(args.data, args.out)
        return
    if args.context:
        write_context_labels(args.data, args.out, json.loads(args.split.read_text()))
        return
    split = json.loads(args.split.read_text())
    held = set(split["heldout_missouri_bursts"])
    unseen = UNSEEN if split.get("trained_on_norway", True) else [*UNSEEN, "norway_tunnels"]
    with args.out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "location", "sequence", "camera", "datetime"])
        for r in rows(args.data / "missouri"):
            if r["sequence"] in held:
                path = (args.data / "missouri" / r["path"]).resolve()
                writer.writerow([path, r["label"], "missouri_heldout", r["sequence"], r["camera"], ""])
        for name in unseen:
            for r in rows(args.data / name):
                # a tunnel is a camera: its `location` names it, and camera context groups by it
                camera = r.get("camera") or (r["location"] if name == "norway_tunnels" else "")
                writer.writerow([(args.data / name / r["path"]).resolve(), r["label"], name, r.get("sequence", ""),
                                 camera, r.get("datetime", "")])  # fmt: skip
    print(f"wrote {args.out}")


def write_context_labels(data: Path, out: Path, split: dict[str, object]) -> None:
    """The camera-context replay needs a camera's other bursts for references, so all Missouri bursts
    go in (`location` says which the classifier trained on: its numbers there flatter it, which makes
    the comparison harder for camera context, not easier) with the Norway tunnels (one camera each)."""
    held = set(split["heldout_missouri_bursts"])  # type: ignore[call-overload]
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "location", "sequence", "camera", "datetime"])
        for r in rows(data / "missouri"):
            where = "missouri_heldout" if r["sequence"] in held else "missouri_trained"
            writer.writerow(
                [(data / "missouri" / r["path"]).resolve(), r["label"], where, r["sequence"], r["camera"], ""]
            )
        for r in rows(data / "norway_tunnels"):
            path = (data / "norway_tunnels" / r["path"]).resolve()
            writer.writerow([path, r["label"], r["location"], r["sequence"], r["location"], r.get("datetime", "")])
    print(f"wrote {out}")


def write_lolo_labels(data: Path, out: Path) -> None:
    """The groups camera context is chosen and reported on, one held out at a time (`location`):
    Missouri's Panama and Netherlands cameras (stamped camera ids), each Norway tunnel (one camera, its
    capture time from the burst name, for the deployment replay's time gap), and Wellington, whose
    bursts are each a different station (so no frame has references there: the classifier decides)."""
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "location", "sequence", "camera", "datetime"])
        for r in rows(data / "missouri"):
            place = "missouri_" + ("panama" if r["location"] == "Panama" else "netherlands")
            writer.writerow(
                [(data / "missouri" / r["path"]).resolve(), r["label"], place, r["sequence"], r["camera"], ""]
            )
        for r in rows(data / "norway_tunnels"):
            taken = r.get("datetime") or _time_in(r["sequence"])
            path = (data / "norway_tunnels" / r["path"]).resolve()
            writer.writerow([path, r["label"], "norway_" + r["location"].split("/")[-1], r["sequence"], r["location"],
                             taken])  # fmt: skip
        for r in rows(data / "wellington_sequences"):
            path = (data / "wellington_sequences" / r["path"]).resolve()
            writer.writerow([path, r["label"], "wellington", r["sequence"], f"wellington_{r['sequence']}", ""])
    print(f"wrote {out}")


def _time_in(sequence: str) -> str:
    """'vj_ga_hu_1_2019-07-08_08:00:00' -> '2019-07-08 08:00:00' (the tunnels' burst names hold it)."""
    parts = sequence.rsplit("_", 2)
    return f"{parts[1]} {parts[2]}" if len(parts) == 3 and ":" in parts[2] else ""


if __name__ == "__main__":
    main()
