"""Camera context's held-out failures as a picture (models/README.md), from `eval --context --lolo --json`.

    python models/context_report.py models/build/context-lolo.json --plot failures.jpg
    python models/context_report.py models/context/blankfilter-context-lolo.json --data ../shared/data --plot f.jpg

(the committed JSON names its frames inside the data folder: pass it as --data).

Each row is a frame the held-out fold got wrong beside the first reference it was judged against:
blank frames with references that were kept (worst first, one per camera), then animal frames that
context alone would have discarded (lowest first; the veto may have kept them). The frames are
the shared data's; only CDLA-Permissive or MIT folders may be drawn into a picture that ships.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SHIPPABLE = {"missouri", "wellington_sequences", "owl_burrows", "jaguar_film", "lila_samples"}  # the data's folders


def picks(lolo: dict[str, Any], kind: str, count: int, highest_first: bool) -> list[tuple[str, dict[str, Any]]]:
    """Up to `count` failures of one kind, worst first over every fold (a kept blank: the highest
    context score; a missed animal: the lowest), one per camera: each fold lists its own worst first."""
    seen: set[str] = set()
    out = []
    for fold in lolo["folds"]:
        for f in fold["failures"][kind]:
            if f["camera"] in seen or not f["references"] or not SHIPPABLE & set(Path(f["path"]).parts):
                continue
            seen.add(f["camera"])
            out.append((fold["held_out"], f))
    return sorted(out, key=lambda x: x[1]["context"], reverse=highest_first)[:count]


def caption(group: str, f: dict[str, Any], what: str) -> str:
    return (f"{what} · held out: {group} · camera {f['camera']}\n"
            f"{Path(f['path']).name} · context {f['context']:.2f} · classifier p {f['classifier']:.3f}")  # fmt: skip


def plot(lolo: dict[str, Any], out: Path, count: int, data: Path = Path("/")) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    blanks = picks(lolo, "blank_frames_with_references_kept", count, highest_first=True)
    animals = picks(lolo, "animal_frames_missed_on_context_alone", count, highest_first=False)
    rows = [(g, f, "blank kept") for g, f in blanks] + [(g, f, "animal, context alone missed") for g, f in animals]
    if not rows:
        return 0
    missing = [data / p for _, f, _ in rows for p in (f["path"], f["references"][0]) if not (data / p).is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: no such frame ({len(missing)} missing); is --data the folder the JSON names?")
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 5.4 * len(rows)), squeeze=False)
    for (group, f, what), (left, right) in zip(rows, axes, strict=True):
        left.imshow(Image.open(data / f["path"]).convert("RGB"))
        left.set_title(caption(group, f, what), fontsize=9)
        right.imshow(Image.open(data / f["references"][0]).convert("RGB"))
        right.set_title(f"its first reference (of {len(f['references'])})\n{Path(f['references'][0]).name}", fontsize=9)
        for ax in (left, right):
            ax.axis("off")
    fig.suptitle("Camera context held out: what it got wrong, beside what it was compared with", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.12 / len(rows)))
    fig.savefig(out, dpi=60, pil_kwargs={"quality": 75})
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lolo", type=Path, help="the JSON of `eval --context --lolo --json`")
    parser.add_argument("--plot", type=Path, required=True)
    parser.add_argument("--count", type=int, default=3, help="examples of each kind")
    parser.add_argument("--data", type=Path, default=Path("/"), help="the folder relative paths are inside")
    args = parser.parse_args()
    result = json.loads(args.lolo.read_text())
    drawn = plot(result.get("lolo", result), args.plot, args.count, args.data)
    print(f"wrote {args.plot}: {drawn} failures")


if __name__ == "__main__":
    main()
