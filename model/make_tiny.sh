#!/usr/bin/env bash
# Regenerates model/tiny/: the tiny test models (ONNX cores, sidecars, manifests) and their golden vectors,
# then checks that the numpy/onnxruntime host reference reproduces the 4-source model's golden stems.
# Deterministic (seeded, single-threaded torch).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY="${PY:-python3}"  # needs requirements.txt installed (torch, demucs, onnx, onnxruntime)
"$PY" "$here/export.py" --tiny --seed 0 --threads 1 -o "$here/tiny/tiny.onnx" --golden "$here/tiny/golden"
"$PY" "$here/reference.py" "$here/tiny/tiny.onnx" "$here/tiny/golden"
# The family: a 6-source model, two-member bags (one-hot and mixed weights), an HDemucs. Short segments and
# clips keep them small; each clip spans three chunks and ends on a short one.
# (The HDemucs clip ends on a chunk of 2001 samples: shorter than the STFT's reflect padding, which demucs
# then extends with zeros first.)
for variant in 6s bag-onehot bag-mixed hdemucs; do
  length=26001
  [ "$variant" = hdemucs ] && length=51612
  rm -rf "$here/tiny/$variant" "$here/tiny/golden-$variant"
  "$PY" "$here/export.py" --tiny --tiny-variant "$variant" --seed 0 --threads 1 \
    -o "$here/tiny/$variant" --golden "$here/tiny/golden-$variant" --golden-length "$length"
done
# Both bags are the same two members (same seed; only the bag weights differ, and the cores' names):
# bag-mixed links to bag-onehot's cores instead of holding copies.
for f in member0.onnx member0.onnx.json member1.onnx member1.onnx.json; do
  ln -sf "../bag-onehot/$f" "$here/tiny/bag-mixed/$f"
done
