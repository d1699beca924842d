"""The classifier's training frames, their leave-one-location-out groups, and the variants made of
them (see models/README.md for what each was measured to do).

A *group* is a place the model is held out from in turn: Missouri's Panama and Netherlands cameras,
each Norway tunnel, Wellington, the burrowing-owl cameras, the jaguar film scans, and the LILA and
SpeciesNet samples together. Snapshot Serengeti has no licence for training: it is scored, never
learned from. Bursts are never split; a frame without a burst is its own burst.

The variants aim at the tail that forces the cutoff down (small animals, animals at the frame edges
or half cut off, above a camera's info bar, in IR greyscale, half hidden in vegetation), and at
blanks that look busy (wind-blurred vegetation, noise, info bars of other camera makes):
- `augment`: random crop, IR look, exposure, blur, sensor noise (label and boxes kept);
- `paste_animal`: a boxed Missouri animal pasted into another frame that is blank, small, at an
  edge, standing on an info bar, greyscale in IR, or behind grass blades; its box labels the cells;
- `blank_crop`: a part of an animal frame away from every box, as a blank frame.
Every variant remembers where its animal came from, so a fold never trains on its own animals.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

from evaluation_labels import rows as read_rows  # noqa: E402  (uncertain.csv rows left out)

from firmware_app.imaging import ImagingSettings, prepare_jpeg  # noqa: E402
from firmware_app.modelcard import InputSpec  # noqa: E402

Box = tuple[float, float, float, float]  # YOLO: centre x, centre y, width, height (fractions)
# folder -> how its frames are grouped; only these folders are used
FOLDERS = ("missouri", "norway_tunnels", "wellington_sequences", "owl_burrows", "jaguar_film", "lila_samples",
           "speciesnet_samples", "serengeti_samples")  # fmt: skip
EVALUATION_ONLY = {"serengeti_samples"}  # no licence stated: scored, never trained on


@dataclass(frozen=True)
class Frame:
    path: Path
    label: int  # 1: animal, human or vehicle; 0: blank
    group: str  # the leave-one-location-out group
    burst: str  # unique over the whole data
    boxes: tuple[Box, ...] | None  # None: the frame has no box file (frame-level label only)
    trainable: bool
    weight: float = 1.0  # Wellington's labels are per burst: a frame marked animal may be empty


def group_of(folder: str, row: dict[str, str]) -> str:
    if folder == "missouri":
        return "missouri_panama" if row["location"] == "Panama" else "missouri_netherlands"
    if folder == "norway_tunnels":
        return "norway_" + row["location"].split("/")[-1]
    if folder in ("lila_samples", "speciesnet_samples"):
        return "samples"
    return {"wellington_sequences": "wellington", "owl_burrows": "owl", "jaguar_film": "jaguar",
            "serengeti_samples": "serengeti"}[folder]  # fmt: skip


def boxes_of(path: Path) -> tuple[Box, ...] | None:
    """YOLO boxes from the .txt beside a frame; None when there is no file."""
    txt = path.with_suffix(".txt")
    if not txt.exists():
        return None
    boxes = [tuple(float(v) for v in parts[1:]) for parts in map(str.split, txt.read_text().split("\n"))
             if len(parts) == 5]  # fmt: skip
    return tuple(boxes)  # type: ignore[arg-type]


def frames(data: Path) -> list[Frame]:
    out = []
    for folder in FOLDERS:
        for r in read_rows(data / folder):
            path = (data / folder / r["path"]).resolve()
            label = int(r["label"] != "blank")
            out.append(Frame(
                path, label, group_of(folder, r), f"{folder}:{r.get('sequence') or r['path']}",
                boxes_of(path) if folder == "missouri" else None, folder not in EVALUATION_ONLY,
                0.5 if folder == "wellington_sequences" and label else 1.0,
            ))  # fmt: skip
    return out


def decode(path: Path, size: int) -> np.ndarray:
    """The trap's own preprocessing (reduced decode, gamma for bad exposure, stretch) at size x size."""
    spec = InputSpec(size, size, "RGB", "stretch", (127.5,) * 3, (127.5,) * 3)
    return prepare_jpeg(path.read_bytes(), spec, ImagingSettings()).pixels


def as_input(image: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() - 127.5) / 127.5


# Optional variants aimed at the failures seen held out (models/README.md), set by train.py --tail:
# "lowres": a fifth of the augmented variants (blank and animal alike, so softness says nothing)
# come from a frame 40-75 % of the model's size, as Wellington's 224-pixel frames do;
# "shadow": a third of the pasted animals are darkened to 35-70 % of the scene's light.
TAIL: frozenset[str] = frozenset()
TAILS = ("lowres", "shadow")


def photometric(x: torch.Tensor, rng: np.random.Generator, grey: bool) -> torch.Tensor:
    """[3, H, W] pixels 0..255 -> model input: IR look, exposure, blur, sensor noise."""
    if "lowres" in TAIL and rng.random() < 0.2:
        h, w = x.shape[1:]
        f = rng.uniform(0.4, 0.75)
        small = F.interpolate(x[None], size=(round(h * f), round(w * f)), mode="bilinear", antialias=True)
        x = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    if grey:
        x = x.mean(0, keepdim=True).expand(3, -1, -1).clone()
    x = x * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)
    if rng.random() < 0.2:
        x = F.avg_pool2d(x[None], 3, 1, 1)[0]  # motion/focus blur, vegetation in wind
    if rng.random() < 0.3:
        x = x + torch.randn_like(x) * rng.uniform(2, 10)
    return (x.clamp(0, 255) - 127.5) / 127.5


def augment(image: np.ndarray, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Random crop (scale 0.82-1) of a cached frame resized to size, then `photometric`."""
    n = image.shape[0]
    side = int(rng.uniform(0.82, 1.0) * n)
    x0, y0 = int(rng.integers(0, n - side + 1)), int(rng.integers(0, n - side + 1))
    crop = torch.from_numpy(np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])).permute(2, 0, 1).float()
    x = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return photometric(x, rng, bool(rng.random() < 0.25)), (x0 / n, y0 / n, side / n)


def is_grey(image: np.ndarray) -> bool:
    return float(np.abs(image.astype(np.int16) - image.mean(axis=2, keepdims=True)).mean()) < 3.0


def draw_info_bar(canvas: Image.Image, rng: np.random.Generator, bottom: bool) -> float:
    """A camera maker's info bar (solid strip, light text and glyphs) at the top or bottom; returns its
    height as a fraction of the frame."""
    w, h = canvas.size
    bar = int(h * rng.uniform(0.03, 0.08))
    draw = ImageDraw.Draw(canvas)
    y0 = h - bar if bottom else 0
    shade = int(rng.integers(0, 60))
    draw.rectangle([0, y0, w, y0 + bar], fill=(shade, shade, shade))
    x = int(rng.integers(2, 12))
    month, day, hour, minute = (int(rng.integers(1, n)) for n in (12, 28, 23, 59))
    text = f"{rng.integers(10, 99)}F {month:02d}/{day:02d}/2024 {hour:02d}:{minute:02d}"
    draw.text((x, y0 + max(0, bar // 2 - 5)), text, fill=(230, 230, 230))
    for _ in range(int(rng.integers(0, 3))):  # moon phase, logo
        cx = int(rng.uniform(0.4, 0.95) * w)
        draw.ellipse([cx, y0 + 2, cx + bar - 4, y0 + bar - 2], outline=(230, 230, 230))
    return bar / h


def grass_blades(canvas: Image.Image, box_px: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Foreground vegetation over part of a pasted animal: thin blades rising from below the box."""
    x0, y0, x1, y1 = box_px
    draw = ImageDraw.Draw(canvas)
    tone = np.asarray(canvas.crop((max(0, x0 - 8), y1 - 2, x1 + 8, min(canvas.height, y1 + 8)))).reshape(-1, 3)
    base = tone.mean(0) if len(tone) else np.array([60, 70, 50])
    for _ in range(int(rng.integers(6, 18))):
        bx = float(rng.uniform(x0, x1))
        top = float(rng.uniform(y0, y0 + 0.6 * (y1 - y0)))
        lean = float(rng.uniform(-0.3, 0.3)) * (y1 - top)
        colour = tuple(int(c) for c in np.clip(base * rng.uniform(0.5, 1.3), 0, 255))
        draw.line([(bx, y1 + 4), (bx + lean, top)], fill=colour, width=int(rng.integers(1, 4)))  # type: ignore[arg-type]


def soft_ellipse(w: int, h: int) -> np.ndarray:
    """An alpha mask: 1 inside an ellipse filling the box, fading at its rim (boxes, not masks)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = ((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2
    return np.clip((1.15 - r) / 0.35, 0, 1).astype(np.float32)


def paste_animal(
    background: np.ndarray, donor: np.ndarray, box: Box, rng: np.random.Generator
) -> tuple[torch.Tensor, Box] | None:
    """Paste the donor's boxed animal into a background frame (both size x size pixels): small
    (4-35 % of the width), anywhere, half cut off at a side edge, or standing on an info bar; grey in
    IR, sometimes behind grass. Returns the model input and the visible box, or None if too little shows."""
    size = background.shape[0]
    cx, cy, bw, bh = box
    dx0, dy0 = int((cx - bw / 2) * size), int((cy - bh / 2) * size)
    dx1, dy1 = math.ceil((cx + bw / 2) * size), math.ceil((cy + bh / 2) * size)
    patch = Image.fromarray(donor[max(0, dy0) : dy1, max(0, dx0) : dx1])
    if patch.width < 6 or patch.height < 6:
        return None
    scale = math.exp(rng.uniform(math.log(0.04), math.log(0.35))) * size / patch.width
    pw, ph = max(3, round(patch.width * scale)), max(3, round(patch.height * scale))
    if ph > 0.8 * size:
        return None
    patch = patch.resize((pw, ph), Image.BILINEAR)
    canvas = Image.fromarray(background.copy())
    grey = is_grey(background)
    mode = rng.choice(["any", "edge", "bar"], p=[0.4, 0.3, 0.3])
    floor = size
    if mode == "bar":
        floor = size - round(draw_info_bar(canvas, rng, bottom=True) * size)
    x = int(rng.integers(0, size - pw + 1)) if pw < size else 0
    y = int(rng.integers(0, floor - ph + 1)) if ph < floor else 0
    if mode == "edge":
        cut = rng.uniform(0.3, 0.6) * pw
        x = int(-cut) if rng.random() < 0.5 else int(size - pw + cut)
    if mode == "bar":
        y = floor - ph
    alpha = soft_ellipse(pw, ph)
    pixels = np.asarray(patch).astype(np.float32)
    if grey:
        pixels = pixels.mean(2, keepdims=True).repeat(3, 2)
    region = np.asarray(canvas).astype(np.float32)
    vx0, vy0, vx1, vy1 = max(0, x), max(0, y), min(size, x + pw), min(size, y + ph)
    if (vx1 - vx0) * (vy1 - vy0) < 0.3 * pw * ph or vx1 - vx0 < 3:
        return None
    target = region[vy0:vy1, vx0:vx1]
    src = pixels[vy0 - y : vy1 - y, vx0 - x : vx1 - x]
    src = src * (max(target.mean(), 8.0) / max(src.mean(), 8.0)) ** 0.5  # halfway to the scene's light
    if "shadow" in TAIL and rng.random() < 0.33:
        src = src * rng.uniform(0.35, 0.7)  # a dark animal in shadow
    a = alpha[vy0 - y : vy1 - y, vx0 - x : vx1 - x, None]
    region[vy0:vy1, vx0:vx1] = a * src + (1 - a) * target
    canvas = Image.fromarray(region.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        grass_blades(canvas, (vx0, vy0, vx1, vy1), rng)
    x_out = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float()
    visible = ((vx0 + vx1) / 2 / size, (vy0 + vy1) / 2 / size, (vx1 - vx0) / size, (vy1 - vy0) / size)
    return photometric(x_out, rng, grey or bool(rng.random() < 0.2)), visible


def blank_crop(image: np.ndarray, boxes: tuple[Box, ...], size: int, rng: np.random.Generator) -> torch.Tensor | None:
    """A square part (45-70 % of the side) of an animal frame that no box touches, resized to size,
    as a blank frame of the same scene; None if no such part was found."""
    n = image.shape[0]
    for _ in range(25):
        side = rng.uniform(0.45, 0.7)
        x0, y0 = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
        clear = all(
            x0 + side < cx - w / 2 - 0.02 or x0 > cx + w / 2 + 0.02 or y0 + side < cy - h / 2 - 0.02
            or y0 > cy + h / 2 + 0.02
            for cx, cy, w, h in boxes
        )  # fmt: skip
        if clear:
            a, b, s = int(x0 * n), int(y0 * n), int(side * n)
            crop = torch.from_numpy(np.ascontiguousarray(image[b : b + s, a : a + s])).permute(2, 0, 1).float()
            x = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
            return photometric(x, rng, bool(rng.random() < 0.25))
    return None


def cell_targets(boxes: tuple[Box, ...], grid: int, flip: bool, crop: tuple[float, float, float]) -> np.ndarray:
    """+1 positive, 0 negative, -1 ignore, per cell. A cell is positive when its centre lies in a box
    or it holds the box centre; cells touching a box otherwise are ignored; the rest are blank."""
    ox, oy, scale = crop  # crop origin and size, as fractions of the cached frame
    target = np.zeros((grid, grid), np.float32)
    centres = (np.arange(grid) + 0.5) / grid
    for cx, cy, w, h in boxes:
        cx, cy, w, h = (cx - ox) / scale, (cy - oy) / scale, w / scale, h / scale
        if flip:
            cx = 1 - cx
        x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
        if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
            continue
        touch_x = (centres + 0.5 / grid > x0) & (centres - 0.5 / grid < x1)
        touch_y = (centres + 0.5 / grid > y0) & (centres - 0.5 / grid < y1)
        inside = np.outer((centres > y0) & (centres < y1), (centres > x0) & (centres < x1))
        target[np.outer(touch_y, touch_x) & (target == 0)] = -1
        target[inside] = 1
        ci = min(max(int(cy * grid), 0), grid - 1)
        cj = min(max(int(cx * grid), 0), grid - 1)
        target[ci, cj] = 1
    return target
