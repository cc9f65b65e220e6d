#!/usr/bin/env python3
"""Whole-song SDR on the held-out renders, in Python: oracle masks, and models through reference.py.

`make eval` is the project's measure. This script puts two things next to it:

- oracle masks: each stem's estimate is the mixture's STFT times a mask made from the true stems
  (|S_j|^p / sum_k |S_k|^p), at the shipped HT-Demucs configuration's STFT (n_fft 4096, hop 1024;
  `--n-fft` for others). It needs the true stems, so it is a yardstick, not a target: what a
  spectrogram mask at that resolution can reach on this corpus.
- `--model`: a model run through reference.py's numpy + onnxruntime pipeline, an independent check of
  the Rust engine's figures on whole songs.
- `--remask P`: each model's estimates also post-filtered, the mixture's STFT masked by
  |Ŝ_j|^P / sum_k |Ŝ_k|^P of the model's own stems (a single-channel Wiener-style filter, as open-unmix
  applies). It measures whether such a step is worth adding to the engine.

Every system also gets a "vocals+other" column: those two stems scored as one, the 3-stem view of the
same estimates. Same SDR as `make eval` (MDX definition, whole song, mean over songs).

    python3 model/score.py --corpus ~/.cache/stemsep/corpus [--model model/default/htdemucs.onnx]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402
from corpus import STEMS, read_wav  # noqa: E402

# The shipped configuration's STFT (HTDemucs nfft, hop nfft // 4).
N_FFT = 4096
# Same epsilon as worker/cli/src/quality.rs, so the two tables agree to the printed digit.
SDR_EPSILON = 1e-7

MERGED = "vocals+other"

# mixture [C, L], true stems {stem: [C, L]} -> estimates {stem: [C, L]}
System = Callable[[np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]]


def sdr(reference_audio: np.ndarray, estimate: np.ndarray) -> float:
    reference_audio = reference_audio.astype(np.float64)
    signal = np.sum(reference_audio**2)
    error = np.sum((reference_audio - estimate.astype(np.float64)) ** 2)
    return float(10 * np.log10((signal + SDR_EPSILON) / (error + SDR_EPSILON)))


def masked(mixture: np.ndarray, guides: dict[str, np.ndarray], power: float, n_fft: int) -> dict[str, np.ndarray]:
    """The mixture's STFT split by the guides' magnitudes, |G_j|^power / sum_k |G_k|^power."""
    window = torch.hann_window(n_fft)

    def stft(audio: np.ndarray) -> torch.Tensor:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        return torch.stft(torch.from_numpy(audio), n_fft, n_fft // 4, window=window, return_complex=True)

    mix_spec = stft(mixture)
    weights = {stem: stft(audio).abs().pow(power) for stem, audio in guides.items()}
    total = sum(weights.values()) + 1e-12
    length = mixture.shape[-1]
    return {
        stem: torch.istft(mix_spec * weight / total, n_fft, n_fft // 4, window=window, length=length).numpy()
        for stem, weight in weights.items()
    }


def oracle_mask(power: float, n_fft: int) -> System:
    return lambda mixture, stems: masked(mixture, stems, power, n_fft)


def remasked(system: System, power: float, n_fft: int) -> System:
    return lambda mixture, stems: masked(mixture, system(mixture, stems), power, n_fft)


def onnx_model(path: Path) -> System:
    core = reference.Core(path, threads=2)
    contract = reference.Contract(core.meta)

    def estimate(mixture: np.ndarray, stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = reference.separate(contract, core, mixture)
        return {stem: out[contract.sources.index(stem)] for stem in stems}

    return estimate


def cached(system: System) -> System:
    """Remembers the last song's estimates, so --remask does not run the model twice."""
    last: list = [None, None]

    def estimate(mixture: np.ndarray, stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if last[0] is not mixture:
            last[:] = [mixture, system(mixture, stems)]
        return last[1]

    return estimate


def mixture_as_estimate(mixture: np.ndarray, stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # The merged stem's baseline is the mixture too, not the sum of two copies of it.
    return {stem: mixture for stem in stems} | {MERGED: mixture}


def scores(stems: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> list[float]:
    """Per stem in STEMS order, then the 4-stem average, then vocals+other as one stem."""
    per_stem = [sdr(stems[stem], estimates[stem]) for stem in STEMS]
    merged_estimate = estimates[MERGED] if MERGED in estimates else estimates["vocals"] + estimates["other"]
    merged = sdr(stems["vocals"] + stems["other"], merged_estimate)
    return per_stem + [float(np.mean(per_stem)), merged]


def row(song: str, system: str, values: list[float]) -> str:
    return f"{song:<27}{system:<37}" + "".join(f"{value:8.2f}" for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="make corpus's output directory")
    parser.add_argument("--split", default="test", help="the corpus split to score (default: test)")
    parser.add_argument("--n-fft", type=int, default=N_FFT, help=f"mask STFT size, hop a quarter (default: {N_FFT})")
    parser.add_argument("--model", type=Path, action="append", default=[], help="an ONNX export to score too")
    parser.add_argument("--remask", type=float, help="also score each model's estimates re-masked with this power")
    args = parser.parse_args()

    songs = sorted(p for p in (args.corpus / args.split).iterdir() if (p / "mixture.wav").exists())
    if not songs:
        sys.exit(f"no songs under {args.corpus / args.split}")
    systems: dict[str, System] = {}
    for path in args.model:
        model = cached(onnx_model(path))
        systems[f"model ({path.name}, reference.py)"] = model
        if args.remask is not None:
            systems[f"  re-masked, p={args.remask:g}"] = remasked(model, args.remask, args.n_fft)
    systems["oracle magnitude ratio (p=1)"] = oracle_mask(1.0, args.n_fft)
    systems["oracle Wiener-like (p=2)"] = oracle_mask(2.0, args.n_fft)
    systems["mixture as estimate"] = mixture_as_estimate

    header = f"{'song':<27}{'system':<37}" + "".join(f"{name:>8}" for name in [*STEMS, "avg", "voc+oth"])
    print(f"SDR in dB (MDX definition, whole song) on {args.corpus / args.split}; oracle n_fft {args.n_fft}")
    print(header, flush=True)
    totals: dict[str, list[list[float]]] = {name: [] for name in systems}
    for song in songs:
        mixture = np.array(read_wav(song / "mixture.wav")).T.copy()
        stems = {stem: np.array(read_wav(song / f"{stem}.wav")).T.copy() for stem in STEMS}
        for name, system in systems.items():
            totals[name].append(scores(stems, system(mixture, stems)))
            print(row(song.name, name, totals[name][-1]), flush=True)
    print(f"\naverage over {len(songs)} songs")
    print(header)
    for name, values in totals.items():
        print(row("", name, list(np.mean(values, axis=0))))


if __name__ == "__main__":
    main()
