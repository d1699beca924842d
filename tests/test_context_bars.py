"""Camera context sees the whole frame except exactly the camera's info bar: the bars found from a
camera's own references (real frames of four makes), kept with its references, an animal
standing just above a thin bar kept by context where the old fixed 7 % crop discarded it, and a
small animal anywhere on the ground kept by context. The shipped classifier and extractor, real
JPEGs, real SQLite."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import FRAMES
from PIL import Image

from firmware_app.actions import DISCARD_ACTIONS, Action, ContextState, Verdict
from firmware_app.app import load_context, load_model
from firmware_app.config import load_config
from firmware_app.context import FrameFacts
from firmware_app.context.bars import detect_info_bars
from firmware_app.decision import Candidate
from firmware_app.imaging import ImagingSettings, decode_jpeg
from firmware_app.judge import Judge

MISSOURI_BLANKS = [FRAMES / "missouri" / f"SEQ75192_IMG_000{i}.JPG" for i in (3, 5)]  # labelled blank
MISSOURI_EMPTY = FRAMES / "missouri" / "SEQ75192_IMG_0004.JPG"  # the same burst's third empty frame
# The red fox of the same burst: its body as it walks out of frame 2 (the box read off the frame;
# no head, so no eye-shine, which makes the classifier sure and its veto, not the context, decide).
FOX = (FRAMES / "missouri" / "SEQ75192_IMG_0002.JPG", (558, 340, 640, 455))


def greys(paths: list[Path]) -> list[np.ndarray]:
    """The frames as the trap decodes them (the classifier's reduced size), in grey."""
    return [np.asarray(decode_jpeg(p.read_bytes(), (320, 320), ImagingSettings())[0].convert("L")) for p in paths]


@pytest.mark.parametrize(
    ("frames", "top", "bottom"),
    [
        (sorted((FRAMES / "missouri").glob("*.JPG"))[:3], (0.015, 0.035), (0.015, 0.035)),  # black bars, both edges
        (sorted((FRAMES / "wellington").glob("1200_*.JPG")), (0.0, 0.0), (0.035, 0.055)),  # a white bottom bar
        ([FRAMES / "owl" / "RCNX1419.JPG"], (0.015, 0.035), (0.015, 0.035)),  # Reconyx
        (sorted((FRAMES / "peru").glob("*.JPG")), (0.0, 0.0), (0.03, 0.05)),  # a bottom bar only
        ([FRAMES / "speciesnet" / "ocelot.jpg"], (0.0, 0.0), (0.0, 0.0)),  # no bar: nothing is cut
    ],
    ids=["missouri", "wellington", "reconyx-owl", "peru", "no-bar"],
)
def test_info_bars_are_found_per_camera_on_real_frames(
    frames: list[Path], top: tuple[float, float], bottom: tuple[float, float]
) -> None:
    found_top, found_bottom = detect_info_bars(greys(frames))
    assert top[0] <= found_top <= top[1] and bottom[0] <= found_bottom <= bottom[1], (found_top, found_bottom)
    assert found_bottom < 0.07  # the first version cut 7 % off every frame, whatever its bar


@pytest.fixture
def judge(tmp_path: Path) -> Judge:
    # A classifier cutoff at which the classifier alone would discard these frames (the shipped one,
    # tuned leave one location out, keeps almost every frame): what is kept here, context kept.
    config = load_config(None, [f"store.root={tmp_path}", "model.cutoff=0.2"])
    return Judge(config, load_model(config), load_context(config))


def with_animal_above_the_bar(path: Path, top: float = 0.935, bottom: float = 0.975) -> bytes:
    """The frame with a piece of a real ocelot standing on the bottom edge, just above a 2 % bar."""
    scene = Image.open(path).convert("RGB")
    ocelot = Image.open(FRAMES / "speciesnet" / "ocelot.jpg").convert("RGB")
    w, h = scene.size
    body = ocelot.crop((int(ocelot.width * 0.3), int(ocelot.height * 0.4), int(ocelot.width * 0.8),
                        int(ocelot.height * 0.7)))  # fmt: skip
    scene.paste(body.resize((int(w * 0.3), int(h * bottom) - int(h * top))), (int(w * 0.3), int(h * top)))
    out = io.BytesIO()
    scene.save(out, "JPEG", quality=92)
    return out.getvalue()


def context_of(judge: Judge, data: bytes, camera: str) -> tuple[float | None, ContextState | None, float | None]:
    judge.refresh()
    seen = judge.see(judge.prepare_jpeg(data, camera), camera, FrameFacts(f"{camera}/f.jpg", "f", 0.0, None, None, 0.1))
    return seen.score, seen.context_state, seen.context_score


def test_an_animal_standing_just_above_the_bar_is_kept_by_context(judge: Judge) -> None:
    assert judge.context is not None
    refs = [(p.read_bytes(), p.name) for p in MISSOURI_BLANKS]
    judge.add_references("cam1", refs)
    top, bottom = judge.context.bank.crops()["cam1"]
    assert 0.015 <= top <= 0.035 and 0.015 <= bottom <= 0.035  # found from the references themselves
    # The same camera set up the old way: the extractor card's fixed 7 % crop.
    judge.context.bank.set_crop("old", 0.07, 0.07)
    judge.add_references("old", refs)

    frame = with_animal_above_the_bar(FRAMES / "missouri" / "SEQ75192_IMG_0004.JPG")
    cutoffs = judge.cutoffs
    p, state, score = context_of(judge, frame, "cam1")
    assert p is not None and p < cutoffs.classifier  # the classifier alone would discard it
    assert state == ContextState.MATCHED and score is not None and score >= cutoffs.context  # context keeps it
    _, old_state, old_score = context_of(judge, frame, "old")
    assert old_state == ContextState.MATCHED and old_score is not None and old_score < cutoffs.context  # lost
    # and the empty scene itself still matches its references
    _, _, empty = context_of(judge, (FRAMES / "missouri" / "SEQ75192_IMG_0004.JPG").read_bytes(), "cam1")
    assert empty is not None and empty < cutoffs.context


def test_a_cameras_crop_is_fixed_by_its_first_references_and_forgotten_with_them(judge: Judge) -> None:
    assert judge.context is not None
    bank = judge.context.bank
    judge.add_references("cam1", [(MISSOURI_BLANKS[0].read_bytes(), "a.jpg")])
    first = bank.crops()["cam1"]
    # more references later (another make's frames, even) do not move it: the bank's features depend on it
    judge.add_references("cam1", [((FRAMES / "wellington" / "1200_1-0.JPG").read_bytes(), "b.jpg")])
    assert bank.crops()["cam1"] == first
    bank.reset(camera="cam1")
    assert "cam1" not in bank.crops()
    judge.add_references("cam1", [((FRAMES / "wellington" / "1200_1-0.JPG").read_bytes(), "b.jpg")])
    assert bank.crops()["cam1"] != first  # a re-aimed or replaced camera gets its bars found again


def test_a_camera_with_references_from_before_bars_were_found_keeps_the_cards_crop(judge: Judge) -> None:
    assert judge.context is not None
    bank, extractor = judge.context.bank, judge.context.extractor
    pixels = np.full((extractor.card.input.height, extractor.card.input.width, 3), 90, np.uint8)
    bank.add("cam1", "day", extractor.features(pixels), origin="manual", source="old.jpg", sha256="o")
    assert judge.find_bars("cam1", [MISSOURI_BLANKS[0].read_bytes()]) is None
    assert "cam1" not in bank.crops()  # the judge uses the extractor card's crop for it, as its references did
    judge.refresh()
    assert judge.specs("cam1")[1] == extractor.card.input


def with_small_animal(path: Path, share: float, x: float, y: float) -> bytes:
    """The frame with the camera's own fox pasted at `share` of the frame area, its corner at (x, y)."""
    scene = Image.open(path).convert("RGB")
    source, box = FOX
    fox = Image.open(source).convert("RGB").crop(box)
    k = math.sqrt(share * scene.width * scene.height / (fox.width * fox.height))
    small = fox.resize((round(fox.width * k), round(fox.height * k)))
    scene.paste(small, (int(scene.width * x), int(scene.height * y)))
    out = io.BytesIO()
    scene.save(out, "JPEG", quality=92)
    return out.getvalue()


def verdict_of(judge: Judge, seen: tuple[float | None, ContextState | None, float | None]) -> tuple[Verdict, Action]:
    p, state, score = seen
    decided = judge.decide([Candidate(1, "cam1/f.jpg", "f" * 64, 0.0, None, p, score, 1.0, state)], False, True)
    return decided.verdicts[0], decided.actions[0]


GROUND = [(x, y) for y in (0.5, 0.65, 0.8) for x in (0.15, 0.35, 0.55, 0.75)]  # the lit ground, far to near


@pytest.mark.parametrize("share", [0.03, 0.01, 0.003], ids=["3pct", "1pct", "0.3pct"])
def test_a_small_animal_anywhere_on_the_ground_is_kept_by_context(tmp_path: Path, share: float) -> None:
    """The camera's own fox at 3 %, 1 % and 0.3 % of a 640x640 night frame (0.3 %: 30x42 px, under
    half of one stride-32 cell), at twelve spots: the context score calls it non-blank at every
    spot and keeps it there by itself (the classifier's veto is switched off here: the shipped
    classifier, trained with pasted small animals, is sure of this fox at every spot, so with its veto
    on, the veto would decide); the unchanged empty frame of the camera matches its references and
    is discarded.

    Smallest seen, measured with this fox on this scene (not asserted): at 0.2 % of the frame
    (24x34 px) the context score still clears its cutoff at all twelve spots, barely (0.277 against
    0.269 at the far left); at 0.15 % (21x29 px) it falls under at some spots. Where the classifier
    is sure (p near 1, its veto), it keeps the frame whatever the context says."""
    config = load_config(None, [f"store.root={tmp_path}", "model.cutoff=0.2", "context.veto_margin=20"])
    judge = Judge(config, load_model(config), load_context(config))
    assert judge.context is not None
    judge.add_references("cam1", [(p.read_bytes(), p.name) for p in MISSOURI_BLANKS])
    cutoffs = judge.cutoffs

    empty = context_of(judge, MISSOURI_EMPTY.read_bytes(), "cam1")
    p, state, score = empty
    assert state == ContextState.MATCHED and score is not None and score < cutoffs.context
    assert p is not None and p < cutoffs.classifier
    verdict, action = verdict_of(judge, empty)
    assert verdict == Verdict.BLANK and action in DISCARD_ACTIONS

    for x, y in GROUND:
        seen = context_of(judge, with_small_animal(MISSOURI_EMPTY, share, x, y), "cam1")
        _, state, score = seen
        assert state == ContextState.MATCHED, (x, y, seen)  # the context decides
        assert score is not None and score >= cutoffs.context, (x, y, seen)  # and sees it
        assert verdict_of(judge, seen) == (Verdict.NONBLANK, Action.KEPT), (x, y, seen)
