#!/usr/bin/env python3
"""Host side of the split HT-Demucs in numpy + onnxruntime: the executable spec for the Rust engine.

Reproduces `demucs.api.Separator.separate_tensor` (shifts 0, split, overlap 0.25) from the ONNX core alone:
normalise → segments (TensorChunk.padded) → STFT → core → iSTFT + time branch → centre trim → triangular
overlap-add → de-normalise. Section numbers (§) refer to model/README.md.

    python model/reference.py model/tiny/tiny.onnx model/tiny/golden

prints the SNR of every stem against the golden stems (produced by demucs itself) and exits non-zero below
--min-snr. No torch needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np


class Contract:
    """The model facts from the ONNX metadata (§1), cross-checked against the derived values."""

    def __init__(self, meta: dict[str, str]):
        if meta.get("stemsep.format") != "1":
            raise ValueError(f"unsupported stemsep.format {meta.get('stemsep.format')!r}")
        self.sources = meta["stemsep.sources"].split(",")
        self.sample_rate = int(meta["stemsep.sample_rate"])
        self.channels = int(meta["stemsep.channels"])
        self.segment = int(meta["stemsep.segment_samples"])
        self.nfft = int(meta["stemsep.nfft"])
        self.hop = int(meta["stemsep.hop"])
        self.overlap = float(meta["stemsep.overlap"])
        self.frames = math.ceil(self.segment / self.hop)
        self.bins = self.nfft // 2
        self.pad_left = self.hop // 2 * 3
        self.pad_right = self.pad_left + self.frames * self.hop - self.segment
        self.stride = int((1 - self.overlap) * self.segment)
        derived = {"stemsep.frames": self.frames, "stemsep.bins": self.bins, "stemsep.pad_left": self.pad_left,
                   "stemsep.pad_right": self.pad_right, "stemsep.stride_samples": self.stride}
        for key, value in derived.items():
            if key in meta and int(meta[key]) != value:
                raise ValueError(f"{key} = {meta[key]} but the formulas give {value}")
        if self.hop * 4 != self.nfft:
            raise ValueError("hop must be nfft / 4")
        n = np.arange(self.nfft)
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * n / self.nfft)  # periodic Hann
        self.envelope = self._envelope()

    def _envelope(self) -> np.ndarray:
        """Σ w² over the frames + 4 frames torch.istft overlaps (zero frames included), segment coordinates."""
        env = np.zeros(self.segment)
        for j in range(-2, self.frames + 2):
            lo = j * self.hop - self.pad_left  # first segment sample this frame covers
            a, b = max(lo, 0), min(lo + self.nfft, self.segment)
            if a < b:
                env[a:b] += self.window[a - lo:b - lo] ** 2
        return env


def stft(c: Contract, u: np.ndarray, dtype) -> np.ndarray:
    """§2: u [C, T] → spec [1, 2C, bins, frames] float32 (CaC)."""
    p = np.pad(u.astype(dtype), ((0, 0), (c.pad_left, c.pad_right)), mode="reflect")
    idx = np.arange(c.frames)[:, None] * c.hop + np.arange(c.nfft)[None, :]
    frames = p[:, idx] * c.window.astype(dtype)                      # [C, frames, nfft]
    z = np.fft.rfft(frames, axis=-1)[..., :c.bins] / np.sqrt(c.nfft)  # [C, frames, bins]
    z = np.transpose(z, (0, 2, 1))                                    # [C, bins, frames]
    spec = np.stack([z.real, z.imag], axis=1).reshape(1, 2 * c.channels, c.bins, c.frames)
    return spec.astype(np.float32)


def istft(c: Contract, freq: np.ndarray, dtype) -> np.ndarray:
    """§3: freq [1, S, 2C, bins, frames] → waveform [S, C, T]."""
    S = freq.shape[1]
    f = freq[0].astype(dtype).reshape(S, c.channels, 2, c.bins, c.frames)
    z = f[:, :, 0] + 1j * f[:, :, 1]                                  # [S, C, bins, frames]
    z = np.concatenate([z, np.zeros_like(z[:, :, :1])], axis=2)      # zero Nyquist bin
    y = np.fft.irfft(np.swapaxes(z, -1, -2), n=c.nfft, axis=-1, norm="ortho")  # [S, C, frames, nfft]
    y = y * c.window.astype(dtype)
    out = np.zeros((S, c.channels, c.segment), dtype=dtype)
    for f_idx in range(c.frames):
        lo = f_idx * c.hop - c.pad_left
        a, b = max(lo, 0), min(lo + c.nfft, c.segment)
        out[..., a:b] += y[:, :, f_idx, a - lo:b - lo]
    return out / c.envelope.astype(dtype)


class Core:
    """The ONNX core on onnxruntime (§1)."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.meta = dict(self.sess.get_modelmeta().custom_metadata_map)

    def run(self, mix: np.ndarray, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        freq, time = self.sess.run(["freq", "time"], {"mix": mix, "spec": spec})
        return freq, time


def separate_segment(c: Contract, core: Core, u: np.ndarray, dtype) -> np.ndarray:
    """One full segment u [C, T] (normalised) → stems [S, C, T]."""
    u = u.astype(np.float32)
    freq, time = core.run(u[None], stft(c, u, dtype))
    return time[0].astype(dtype) + istft(c, freq, dtype)


def separate(c: Contract, core: Core, wav: np.ndarray, dtype=np.float64, acc=np.float32,
             progress=None, pool=None) -> np.ndarray:
    """§4: the whole of Separator.separate_tensor. wav [C, L] float32 → stems [S, C, L] float32.

    With `pool` (a concurrent.futures executor) the segments run through `pool.map`, several at once (the
    benchmark's side-by-side run); it holds every segment's output until the overlap-add reaches it."""
    C, L = wav.shape
    ref = wav.astype(np.float64).mean(axis=0)
    mean = ref.mean()
    std = ref.std(ddof=1) + 1e-8                      # torch .std() is unbiased
    mixn = ((wav - np.float32(mean)) / np.float32(std)).astype(np.float32)

    T = c.segment
    i = np.arange(T)
    weight = (np.minimum(i + 1, T - i).astype(np.float32) / np.float32(T - T // 2)).astype(acc)
    out = np.zeros((len(c.sources), C, L), dtype=acc)
    sum_weight = np.zeros(L, dtype=acc)
    offsets = range(0, L, c.stride)

    def segment_at(offset: int) -> np.ndarray:
        length = min(L - offset, T)
        delta = T - length
        start = offset - delta // 2                   # TensorChunk.padded: centred, real neighbours
        u = np.zeros((C, T), dtype=np.float32)
        a, b = max(start, 0), min(start + T, L)
        u[:, a - start:b - start] = mixn[:, a:b]
        y = separate_segment(c, core, u, dtype)
        return y[..., delta // 2: delta // 2 + length]  # center_trim

    chunks = pool.map(segment_at, offsets) if pool else map(segment_at, offsets)
    for k, (offset, chunk) in enumerate(zip(offsets, chunks)):
        length = chunk.shape[-1]
        out[..., offset:offset + length] += (weight[:length] * chunk).astype(acc)
        sum_weight[offset:offset + length] += weight[:length]
        if progress:
            progress(k + 1, len(offsets))
    out /= sum_weight
    return (out * std + mean).astype(np.float32)


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    noise = np.sum((ref.astype(np.float64) - est) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(noise, 1e-300)))


def vs_demucs(c: Contract, core: Core, lengths: list[int], min_snr: float) -> int:
    """Compare with demucs' Separator on synthetic clips of the given lengths (needs torch + demucs).

    Covers what one golden clip cannot: songs shorter than a segment, exactly one segment, a multiple of the
    stride. The torch model is rebuilt from `stemsep.version` (tiny / random-init seeds only).
    """
    import re

    import torch

    import export

    found = re.search(r":(random-init|tiny)-seed-(\d+)$", core.meta["stemsep.version"])
    if not found:
        raise SystemExit("--vs-demucs needs a tiny or random-init export")
    args = argparse.Namespace(model=None, tiny=found.group(1) == "tiny", random_init=found.group(1) != "tiny",
                              seed=int(found.group(2)))
    model, _, _ = export.build_model(args)
    sep = export.separator_for(model)
    worst = math.inf
    for length in lengths:
        wav = export.synth_clip(c.sample_rate, length, seed=length)
        with torch.no_grad():
            _, stems = sep.separate_tensor(torch.from_numpy(wav))
        want = np.stack([stems[s].numpy() for s in c.sources])
        got = separate(c, core, wav)
        snr = {name: round(snr_db(want[s], got[s]), 2) for s, name in enumerate(c.sources)}
        worst = min(worst, *snr.values())
        print(json.dumps({"length": length, "segments": len(range(0, length, c.stride)), "snr_db": snr}))
    return 0 if worst >= min_snr else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path)
    ap.add_argument("golden", type=Path, nargs="?", help="directory with mix.f32, stems.f32, meta.json")
    ap.add_argument("--vs-demucs", metavar="LENGTHS",
                    help="comma-separated clip lengths to compare against demucs' Separator (needs torch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dsp", choices=["float32", "float64"], default="float32",
                    help="precision of STFT/iSTFT (the Rust engine uses f32)")
    ap.add_argument("--min-snr", type=float, default=80.0, help="fail below this SNR, dB")
    args = ap.parse_args()

    core = Core(args.onnx, args.threads)
    sidecar = Path(str(args.onnx) + ".json")
    if sidecar.exists() and json.loads(sidecar.read_text()) != core.meta:
        print("sidecar JSON differs from the ONNX metadata_props", file=sys.stderr)
        return 1
    c = Contract(core.meta)
    if args.vs_demucs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        return vs_demucs(c, core, [int(v) for v in args.vs_demucs.split(",")], args.min_snr)
    if args.golden is None:
        ap.error("give a golden directory or --vs-demucs")
    meta = json.loads((args.golden / "meta.json").read_text())
    L, C, S = meta["length"], meta["channels"], len(meta["sources"])
    assert meta["sources"] == c.sources and meta["segment_samples"] == c.segment
    wav = np.fromfile(args.golden / "mix.f32", dtype="<f4").reshape(C, L)
    want = np.fromfile(args.golden / "stems.f32", dtype="<f4").reshape(S, C, L)

    got = separate(c, core, wav, dtype=np.dtype(args.dsp).type)
    result = {"segments": len(range(0, L, c.stride)), "length": L, "dsp": args.dsp}
    result["snr_db"] = {name: round(snr_db(want[s], got[s]), 2) for s, name in enumerate(c.sources)}
    result["max_abs_err"] = float(np.abs(want - got).max())
    print(json.dumps(result))
    return 0 if min(result["snr_db"].values()) >= args.min_snr else 1


if __name__ == "__main__":
    sys.exit(main())
