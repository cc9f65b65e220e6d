#!/usr/bin/env bash
# Regenerates model/tiny/: the tiny ONNX core, its sidecar JSON and the golden vectors, then checks that the
# numpy/onnxruntime host reference reproduces the golden stems. Deterministic (seeded, single-threaded torch).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY="${PY:-python3}"  # needs requirements.txt installed (torch, demucs, onnx, onnxruntime)
"$PY" "$here/export.py" --tiny --seed 0 --threads 1 -o "$here/tiny/tiny.onnx" --golden "$here/tiny/golden"
"$PY" "$here/reference.py" "$here/tiny/tiny.onnx" "$here/tiny/golden"
