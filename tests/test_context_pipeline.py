"""Camera context end to end: the real tiny feature model, real JPEGs, the CLI as a subprocess, the
ledger and the reference bank in SQLite.

The scenes are made from one real blank frame: a re-shot of it (light a little brighter, another
JPEG quality), the same scene with a textured patch in one spot (a local change: an "animal"), a
different real scene (the camera was moved), and the frame in greyscale (night IR).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import FRAMES, MODELS
from PIL import Image, ImageEnhance

from firmware_app.context.extractor import TFLiteFeatureExtractor
from firmware_app.context.score import baseline, compare
from firmware_app.imaging import ImagingSettings, prepare_jpeg

EXTRACTOR = MODELS / "tiny_features.tflite"
BLANK = FRAMES / "speciesnet" / "blank.jpg"  # a day-colour empty scene
OTHER_SCENE = FRAMES / "speciesnet" / "ocelot.jpg"  # another day-colour place


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def scenes() -> dict[str, bytes]:
    base = Image.open(BLANK).convert("RGB")
    rng = np.random.default_rng(3)
    animal = base.copy()
    w, h = base.size
    patch = rng.integers(0, 255, size=(h // 4, w // 5, 3), dtype=np.uint8)
    animal.paste(Image.fromarray(patch), (w // 2, h // 2))
    return {
        "reshot": jpeg(ImageEnhance.Brightness(base).enhance(1.06), quality=80),
        "reshot2": jpeg(ImageEnhance.Brightness(base).enhance(0.95), quality=85),
        "animal": jpeg(animal),
        "moved": jpeg(Image.open(OTHER_SCENE).convert("RGB").resize(base.size)),
        "ir": jpeg(base.convert("L").convert("RGB")),
    }


def context_score(extractor: TFLiteFeatureExtractor, reference: bytes, frame: bytes) -> tuple[float, float]:
    spec, settings = extractor.card.input, ImagingSettings()
    ref = extractor.features(prepare_jpeg(reference, spec, settings).pixels)[None]
    result = compare(extractor.features(prepare_jpeg(frame, spec, settings).pixels), ref, baseline(ref))
    return result.score, result.mismatch


@pytest.fixture(scope="module")
def cutoffs() -> dict[str, float]:
    """The real model's scores on these scenes decide the cutoffs the run uses (asserting the order)."""
    extractor = TFLiteFeatureExtractor(EXTRACTOR, threads=1)
    ref, s = BLANK.read_bytes(), scenes()
    reshot, reshot_mismatch = context_score(extractor, ref, s["reshot"])
    animal, animal_mismatch = context_score(extractor, ref, s["animal"])
    _, moved_mismatch = context_score(extractor, ref, s["moved"])
    assert reshot < animal, "a local change must score over a re-shot of the empty scene"
    assert max(reshot_mismatch, animal_mismatch) < moved_mismatch, "a moved camera must look like drift"
    return {
        "context": (reshot + animal) / 2,
        "drift": (max(reshot_mismatch, animal_mismatch) + moved_mismatch) / 2,
    }


def write(inbox: Path, rel: str, data: bytes, stamp: float) -> Path:
    path = inbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (stamp, stamp))
    return path


def ledger_rows(store: Path) -> dict[str, tuple[str, str | None, str]]:
    db = sqlite3.connect(store / "ledger.db")
    rows = db.execute("SELECT path, context_state, action FROM frames").fetchall()
    db.close()
    return {path: (state, action, path) for path, state, action in rows}


def bank_rows(store: Path) -> list[tuple[str, str, str, str]]:
    db = sqlite3.connect(store / "references.db")
    rows = db.execute("SELECT camera, mode, origin, source FROM refs ORDER BY id").fetchall()
    db.close()
    return rows


@pytest.fixture
def context_args(store_args: Callable[..., list[str]], cutoffs: dict[str, float]) -> Callable[..., list[str]]:
    def args(**sets: object) -> list[str]:
        base = {
            "model__cutoff": 1.0,  # the classifier alone would discard everything: context must keep the animal
            "context__extractor": str(EXTRACTOR),
            "context__cutoff": round(cutoffs["context"], 6),
            "context__drift_limit": round(cutoffs["drift"], 6),
            "context__veto": 1.0,  # the tiny classifier is untrained: its confidence must not veto here
            "context__reference_max_p": 1.0,  # nor is its score a test of "empty": the context's check decides
            "context__topup_spacing_s": 0,
            "decision__burst_gap_s": 5,
        }
        return store_args(**(base | sets))

    return args


def test_context_keeps_the_local_change_discards_the_empty_scene_and_learns(
    tmp_path: Path, run_cli: Callable[..., object], context_args: Callable[..., list[str]]
) -> None:
    inbox, store, s = tmp_path / "inbox", tmp_path / "store", scenes()
    done = run_cli("reference", "add", BLANK, "--camera", "cam1", *context_args(), check_rc=0)
    assert "added as a day reference of camera cam1" in done.stdout  # type: ignore[attr-defined]
    t = 1_700_000_000.0
    write(inbox, "cam1/a1.jpg", s["reshot"], t)
    write(inbox, "cam1/a2.jpg", s["reshot2"], t + 1)
    write(inbox, "cam1/b1.jpg", s["animal"], t + 600)
    write(inbox, "cam1/c1.jpg", s["moved"], t + 1200)
    write(inbox, "cam1/d1.jpg", s["ir"], t + 1800)
    write(inbox, "cam2/e1.jpg", s["reshot"], t + 2400)
    done = run_cli("run", "--once", *context_args(), check_rc=0)
    assert "camera cam1 (day): the whole scene differs from its references" in done.stderr  # type: ignore[attr-defined]
    assert "reference reset --camera cam1" in done.stderr  # type: ignore[attr-defined]

    rows = ledger_rows(store)
    assert rows["cam1/a1.jpg"][:2] == ("matched", "deleted")
    assert rows["cam1/a2.jpg"][:2] == ("matched", "deleted")
    assert rows["cam1/b1.jpg"][:2] == ("matched", "kept")  # the classifier alone would have deleted it
    # references no longer fit the scene: it fails open (the classifier alone would delete it here)
    assert rows["cam1/c1.jpg"][:2] == ("drift", "kept")
    assert rows["cam1/d1.jpg"][0] == "no_references"  # no night references yet
    assert rows["cam2/e1.jpg"][0] is None  # a camera without references costs no feature pass
    assert (store / "kept" / "cam1" / "b1.jpg").is_file()
    # the discarded empty burst taught the bank one more reference; the kept burst never does
    refs = bank_rows(store)
    assert [(r[0], r[1], r[2]) for r in refs] == [("cam1", "day", "manual"), ("cam1", "day", "auto")]
    assert refs[1][3] in ("cam1/a1.jpg", "cam1/a2.jpg")

    # a restart keeps the bank; a reset forgets it and the classifier decides again
    write(inbox, "cam1/f1.jpg", s["reshot"], t + 3000)
    run_cli("run", "--once", *context_args(), check_rc=0)
    assert ledger_rows(store)["cam1/f1.jpg"][0] == "matched"
    done = run_cli("reference", "reset", "--camera", "cam1", *context_args(), check_rc=0)
    assert "removed 3 reference(s)" in done.stdout  # the manual one and two learnt ones  # type: ignore[attr-defined]
    write(inbox, "cam1/g1.jpg", s["reshot"], t + 3600)
    run_cli("run", "--once", *context_args(), check_rc=0)
    assert ledger_rows(store)["cam1/g1.jpg"][0] is None


def test_a_classifier_that_calls_the_references_animals_has_no_veto(
    tmp_path: Path, run_cli: Callable[..., object], context_args: Callable[..., list[str]]
) -> None:
    """A scene unlike the classifier's training (a tunnel floor): it scores even the known-empty
    references as animals. Its confidence means nothing there, so the context decides (cutoff 0: the
    classifier keeps everything; veto 0: it would veto everything where trusted)."""
    inbox, store, s = tmp_path / "inbox", tmp_path / "store", scenes()
    run_cli("reference", "add", BLANK, "--camera", "cam1", *context_args(model__cutoff=0.0), check_rc=0)
    write(inbox, "cam1/a1.jpg", s["reshot"], 1_700_000_000.0)
    run_cli("run", "--once", *context_args(model__cutoff=0.0, context__veto=0.0), check_rc=0)
    assert ledger_rows(store)["cam1/a1.jpg"][:2] == ("matched", "deleted")


def test_capture_step_takes_the_next_frames_as_references(
    tmp_path: Path, run_cli: Callable[..., object], context_args: Callable[..., list[str]]
) -> None:
    inbox, store, s = tmp_path / "inbox", tmp_path / "store", scenes()
    done = run_cli("reference", "capture", "--camera", "cam1", "--count", "2", *context_args(), check_rc=0)
    assert "step away" in done.stdout  # type: ignore[attr-defined]
    t = 1_700_000_000.0
    for i in range(3):
        write(inbox, f"cam1/x{i}.jpg", s["reshot"] if i != 1 else s["reshot2"], t + 600 * i)
    run_cli("run", "--once", *context_args(), check_rc=0)
    rows = ledger_rows(store)
    assert [rows[f"cam1/x{i}.jpg"][0] for i in range(3)] == ["captured", "captured", "matched"]
    assert [r[2] for r in bank_rows(store)][:2] == ["capture", "capture"]
    listing = run_cli("reference", "list", *context_args(), check_rc=0).stdout  # type: ignore[attr-defined]
    assert "cam1/day: 2" in listing or "cam1/day: 3" in listing


def test_inconsistent_references_fall_back_to_the_classifier(
    tmp_path: Path, run_cli: Callable[..., object], context_args: Callable[..., list[str]]
) -> None:
    inbox, store, s = tmp_path / "inbox", tmp_path / "store", scenes()
    other = tmp_path / "other.jpg"
    other.write_bytes(s["moved"])
    run_cli("reference", "add", BLANK, other, "--camera", "cam1", *context_args(), check_rc=0)
    write(inbox, "cam1/a1.jpg", s["reshot"], 1_700_000_000.0)
    run_cli("run", "--once", *context_args(), check_rc=0)
    assert ledger_rows(store)["cam1/a1.jpg"][0] == "inconsistent"
    args = context_args()
    without_model = args[2:] if args[0] == "--model" else args  # stats takes no model flags
    stats = run_cli("stats", *without_model, check_rc=0).stdout  # type: ignore[attr-defined]
    assert "inconsistent 1" in stats
    assert "references cam1/day: 2 (2 added, 0 captured, 0 automatic), newest added just now" in stats
    listed = run_cli("stats", "--json", *without_model, check_rc=0).stdout  # type: ignore[attr-defined]
    (ref,) = json.loads(listed)["references"]
    assert (ref["camera"], ref["mode"], ref["references"], ref["manual"]) == ("cam1", "day", 2, 2)


def test_bad_reference_input_is_named_and_the_rest_still_added(
    tmp_path: Path, run_cli: Callable[..., object], context_args: Callable[..., list[str]]
) -> None:
    empty, broken = tmp_path / "empty.jpg", tmp_path / "broken.jpg"
    empty.write_bytes(b"")
    data = BLANK.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    done = run_cli("reference", "add", empty, broken, tmp_path / "missing.jpg", BLANK, "--camera", "cam1",
                   *context_args())  # fmt: skip
    assert done.returncode == 1  # type: ignore[attr-defined]
    out = done.stdout  # type: ignore[attr-defined]
    assert f"{empty}: empty file (0 bytes): not added" in out
    assert f"{broken}: corrupt or truncated JPEG" in out and "truncated" in out
    assert "missing.jpg: cannot read" in out
    assert "added as a day reference of camera cam1" in out
    assert len(bank_rows(tmp_path / "store")) == 1


def test_a_classifier_model_is_refused_as_extractor(
    tmp_path: Path, run_cli: Callable[..., object], context_args: Callable[..., list[str]]
) -> None:
    done = run_cli("reference", "list", *context_args(context__extractor=str(MODELS / "tiny_u8.tflite")))
    assert done.returncode == 2  # type: ignore[attr-defined]
    assert "not a camera-context feature extractor" in done.stderr  # type: ignore[attr-defined]


def test_eval_context_replays_each_camera_against_the_classifier(
    tmp_path: Path, run_cli: Callable[..., object], cutoffs: dict[str, float]
) -> None:
    """`eval --context`: seeded with one known blank, the replay discards the later empty bursts and
    keeps the animal that the classifier alone (cutoff 1: it keeps nothing) would lose."""
    s, rows = scenes(), ["path,label,location,sequence,camera,datetime"]
    plan = [("seed", BLANK.read_bytes(), "blank"), ("e1", s["reshot"], "blank"), ("e2", s["reshot2"], "blank"),
            ("a1", s["animal"], "animal"), ("e3", s["reshot"], "blank")]  # fmt: skip
    for i, (name, data, label) in enumerate(plan):
        (tmp_path / f"{name}.jpg").write_bytes(data)
        rows.append(f"{name}.jpg,{label},site,burst{i},cam1,2024:05:01 10:0{i}:00")
    rows.append("e4.jpg,blank,site,,,")  # no camera: the classifier decides
    (tmp_path / "e4.jpg").write_bytes(s["reshot"])
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    out, scores = tmp_path / "replay.json", tmp_path / "context_scores.csv"
    run_cli("eval", "--context", "--labels", labels, "--model", MODELS / "tiny_u8.tflite", "--cutoff", "1.0",
            "--extractor", EXTRACTOR, "--context-cutoff", str(cutoffs["context"]), "--veto", "1.0",
            "--drift-limit", str(cutoffs["drift"]), "--seed-blanks", "1", "--json", out, "--save-scores", scores,
            "--quiet", check_rc=0)  # fmt: skip
    import json

    result = json.loads(out.read_text())
    every = next(c for c in result["cameras"] if c["camera"] == "(all)")
    cam1 = next(c for c in result["cameras"] if c["camera"] == "cam1")
    assert cam1["frames"] == 5 and cam1["context_decided"] == 4
    assert cam1["states"]["no_references"] == 1  # the seed's own burst is never compared with itself
    assert every["classifier"]["kept_animal_bursts"] == 0  # cutoff 1: the classifier keeps nothing
    assert every["fused"]["kept_animal_bursts"] == 1 and every["fused"]["burst_recall"] == 1.0
    assert cam1["fused"]["discarded_blank_bursts"] == 4
    assert next(c for c in result["cameras"] if c["camera"] == "(no camera)")["context_decided"] == 0
    assert len(scores.read_text().splitlines()) == 1 + 4
    done = run_cli("tune", "--scores", scores, "--level", "frame", "--no-write", "--json", check_rc=0)
    assert json.loads(done.stdout)["at"]["kept_nonblank"] == 1  # type: ignore[attr-defined]
