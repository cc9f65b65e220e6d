"""How far demucs' own `apply_model` is from itself in float32: the floor under any fidelity figure.

Separates the same mix with a model twice through `demucs.apply.apply_model` (shifts 0, split,
overlap 0.25, as the golden stems are made): once in float32, once in float64, and prints each
stem's SNR of the float32 result against the float64 one. An engine that computes in float32 can
match the float32 reference no more closely than float32 matches exact arithmetic, give or take:
when this floor is under 80 dB, an engine's figure near it is the arithmetic's, not a defect.

    HF_HUB_CACHE=~/.cache/stemsep/model-check/hub HF_HUB_OFFLINE=1 \\
      python model/precision.py --model hdemucs_mmi --golden ~/.cache/stemsep/model-check/hdemucs_mmi-golden

`--golden` takes the mix of a golden directory (`make model-check` writes them); `--seconds`
shortens it. Needs torch (model/requirements.txt); not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from demucs.apply import apply_model
from demucs.pretrained import get_model


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = float(np.sum((reference - estimate) ** 2))
    return 10.0 * np.log10(float(np.sum(reference**2)) / max(noise, 1e-300))


def separate(model: torch.nn.Module, mix: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    model = model.to(dtype)
    with torch.no_grad():
        out = apply_model(model, mix.to(dtype)[None], shifts=0, split=True, overlap=0.25, progress=False)
    return out[0].double().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a name demucs.pretrained.get_model resolves")
    ap.add_argument("--golden", type=Path, required=True, help="a golden directory: its mix.f32 and meta.json")
    ap.add_argument("--seconds", type=float, default=None, help="use only the first SECONDS of the mix")
    args = ap.parse_args()

    meta = json.loads((args.golden / "meta.json").read_text())
    length = meta["length"]
    mix = np.fromfile(args.golden / "mix.f32", dtype="<f4").reshape(meta["channels"], length)
    if args.seconds is not None:
        mix = mix[:, : int(args.seconds * meta["sample_rate"])]
    mix = torch.from_numpy(np.ascontiguousarray(mix))

    model = get_model(args.model)
    model.eval()
    single = separate(model, mix, torch.float32)
    double = separate(model, mix, torch.float64)
    report = {name: round(snr_db(double[i], single[i]), 1) for i, name in enumerate(model.sources)}
    print(json.dumps({"model": args.model, "samples": mix.shape[-1],
                      "float32_vs_float64_snr_db": report}))


if __name__ == "__main__":
    main()
