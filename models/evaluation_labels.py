"""Write the Labels CSV that camera context is measured on, leave one location out.

    python models/evaluation_labels.py --data ../shared/data --out models/build/lolo_labels.csv
    blankfilter eval --context --deployment --lolo --labels models/build/lolo_labels.csv

The places with cameras, one group per `location`: Missouri's Panama and Netherlands cameras, each
Norway tunnel, Wellington. The `camera` and `datetime` columns are what `eval --context` groups
references by. Rows in each folder's uncertain.csv are left out, as the data README asks. (The
classifier's own leave-one-location-out measurement is models/train.py's.)
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


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
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--context-lolo", action="store_true", help="(the only mode; kept for older scripts)")
    args = parser.parse_args()
    write_lolo_labels(args.data, args.out)


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
