#!/usr/bin/env python3
"""Train a small HT-Demucs on the stemsep corpus (model/corpus.py) with PyTorch on CPU.

The architecture is the pretrained htdemucs' (export.HTDEMUCS_KWARGS: hybrid time/frequency U-Nets, nfft 4096,
depth 4, cross-domain transformer), shrunk by DEMO_KWARGS below to 16 channels, 2 transformer layers and a
1 s segment (1.9 M parameters, an 8.6 MB ONNX file), so a 2-core machine trains it in about 1.6 hours (3200
steps of 8 x 1 s at ~1.8 s each).

Training follows demucs' recipe (demucs/solver.py, demucs/augment.py): random excerpts, per-source random
gain, left/right swap and sign flip, remixing sources across the batch, Adam. The learning rate warms up,
then follows a cosine to zero over --steps. --speed adds a cheap form of demucs' pitch/tempo augmentation
(a tape-speed change by resampling; off by default).

One departure: the loss. Demucs uses L1 on the waveform (--loss l1, still here, as is mse). In this corpus
the drums and leads sit 10-20 dB below the accompaniment, so they carry little of a waveform loss, and
every L1 run that fits the budget settled on putting the whole mixture into "other" (model/README.md,
section 7). The default, --loss sdr, is minus each source's SDR with energies pooled over the batch,
averaged over sources: every source weighs the same whatever its loudness, as in the average `make eval`
reports.

The run checkpoints every --checkpoint-every steps (model, optimizer, step, RNG state) and resumes from the
checkpoint when started again with the same --workdir; batch k is drawn from an RNG seeded with (seed, k),
so a resumed run sees the same data as an uninterrupted one. --monitor prints the SDR on a fixed set of
held-out excerpts now and then; it is only watched, never used to choose a checkpoint. At the end the run
exports the model through model/export.py (--checkpoint mode).

  python3 model/corpus.py -o ~/.cache/stemsep/corpus
  python3 model/train.py --corpus ~/.cache/stemsep/corpus --workdir ~/.cache/stemsep/train \\
      --steps 3200 --monitor 250 -o model/default/htdemucs.onnx
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import julius
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import STEMS, read_wav  # noqa: E402
from export import HTDEMUCS_KWARGS, SOURCES  # noqa: E402

from demucs.htdemucs import HTDemucs  # noqa: E402

assert STEMS == SOURCES
DEMO_KWARGS = dict(HTDEMUCS_KWARGS, channels=16, bottom_channels=0, t_layers=2, t_heads=4, segment=1)


class Corpus:
    """One split's songs' stems, sampled as random excerpts."""

    def __init__(self, root: Path, length: int, split: str = "train"):
        self.length = length
        self.songs = []
        for song_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            stems = [read_wav(song_dir / f"{s}.wav") for s in STEMS]
            if stems[0].shape[0] > 2 * length:  # room for the slowest of SPEEDS
                self.songs.append((song_dir.name, stems))
        if not self.songs:
            sys.exit(f"no songs under {root / split}: run model/corpus.py first")
        frames = np.array([s[1][0].shape[0] - length for s in self.songs], dtype=np.float64)
        self.weights = frames / frames.sum()  # every excerpt start equally likely

    def excerpts(self, rng: np.random.Generator, batch: int, speed: float = 0.0) -> torch.Tensor:
        """[batch, sources, channels, length]; with probability `speed` an excerpt is played faster or
        slower by one of SPEEDS (all its sources alike)."""
        out = torch.empty((batch, len(STEMS), 2, self.length))
        for b in range(batch):
            _, stems = self.songs[rng.choice(len(self.songs), p=self.weights)]
            # Drawn only when asked for, so runs without --speed see the data they always did.
            ratio = SPEEDS[rng.integers(len(SPEEDS))] if speed and rng.random() < speed else (1, 1)
            read = -(-self.length * ratio[0] // ratio[1])  # ceil: enough input for `length` outputs
            start = int(rng.integers(0, stems[0].shape[0] - read))
            excerpt = torch.from_numpy(np.stack([stem[start:start + read].T for stem in stems]))
            if ratio != (1, 1):
                excerpt = resampler(*ratio)(excerpt, output_length=self.length)
            out[b] = excerpt[..., :self.length]
        return out


# Tape-speed changes, pitch and tempo together by the same ratio (about +-1 and +-2 semitones, +-6 and
# +-12 % tempo): demucs' repitch moves them apart with soundstretch, which no wheel ships; a resampler
# does this much. (a, b) reads a samples for every b it gives, so it plays a/b times as fast.
SPEEDS = [(9, 8), (17, 16), (16, 17), (8, 9)]


@functools.cache
def resampler(a: int, b: int) -> julius.ResampleFrac:
    return julius.ResampleFrac(a, b)


def augment(stems: torch.Tensor, rng: np.random.Generator, together: Sequence[int] = (),
            whole: float = 0.0) -> torch.Tensor:
    """demucs.augment's FlipChannels, FlipSign, Scale(0.25, 1.25) and Remix(group_size=batch), per source.

    The sources in `together` are remixed as one: they stay from the same excerpt. Each excerpt is kept
    whole, all its sources from itself, with probability `whole`; the others are remixed among themselves."""
    batch, sources = stems.shape[:2]
    swap = torch.from_numpy(rng.random((batch, sources)) < 0.5)
    stems = torch.where(swap[..., None, None], stems.flip(2), stems)
    sign = torch.from_numpy(rng.choice([-1.0, 1.0], size=(batch, sources, 1, 1)).astype(np.float32))
    gain = torch.from_numpy(rng.uniform(0.25, 1.25, size=(batch, sources, 1, 1)).astype(np.float32))
    stems = stems * sign * gain
    # Each source comes from an independently shuffled batch item: new mixtures from the same stems.
    perm = np.stack([rng.permutation(batch) for _ in range(sources)], axis=1)
    # With `whole`, the permutations above are overwritten but still drawn: dropping that draw would change
    # the random stream of every --whole run, and run 7 (model/README.md section 7) would no longer repeat.
    if whole:  # drawn only when asked for, so runs without it see the data they always did
        kept = rng.random(batch) < whole
        rest = np.flatnonzero(~kept)
        perm[kept] = np.flatnonzero(kept)[:, None]
        perm[rest] = np.stack([rest[rng.permutation(len(rest))] for _ in range(sources)], axis=1)
    perm[:, list(together)] = perm[:, together[:1]]
    perm = torch.from_numpy(perm)
    return stems[perm, torch.arange(sources)[None, :]]


def source_sdr(estimate: torch.Tensor, stems: torch.Tensor) -> torch.Tensor:
    """The MDX SDR of each source, [sources], with the energies pooled over the batch as they are over a
    song, so an excerpt where a source is silent does not make the ratio explode."""
    dims = (0, 2, 3)
    eps = 1e-8
    return 10 * torch.log10((stems.pow(2).sum(dims) + eps) / ((stems - estimate).pow(2).sum(dims) + eps))


def sdr_loss(estimate: torch.Tensor, stems: torch.Tensor) -> torch.Tensor:
    """Minus the SDR averaged over sources. Unlike a waveform L1 or MSE, every source weighs the same
    whatever its loudness, as in the average `make eval` reports (see the module docstring for why)."""
    return -source_sdr(estimate, stems).mean()


def onnx_checkpoint(path: Path) -> dict:
    """The kwargs and weights of an export of a DEMO_KWARGS-shaped model (any width and segment), e.g. the
    committed model/default/htdemucs.onnx, as a checkpoint's --init would give them (onnx_weights.py)."""
    import onnx_weights

    channels = int(onnx_weights.initializers(path)["m.encoder.0.conv.weight"].shape[0])
    kwargs = dict(DEMO_KWARGS, channels=channels, segment=onnx_weights.segment_seconds(path))
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx_weights.load(path, kwargs, SOURCES, Path(tmp))
        error = onnx_weights.round_trip_error(model, path, Path(tmp))
    print(f"{path}: weights read back from the export (round trip {error:.1e})", flush=True)
    return {"kwargs": kwargs, "state": model.state_dict()}


def learning_rate(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save(path: Path, model, kwargs: dict, opt, step: int, losses: list[float]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"kwargs": kwargs, "sources": SOURCES,
                "state": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "losses": losses, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)  # a run killed mid-save keeps the previous checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="model/corpus.py output directory")
    ap.add_argument("--workdir", type=Path, required=True, help="checkpoint directory (resumed if present)")
    ap.add_argument("-o", "--output", type=Path, help="export the trained model to this .onnx at the end")
    ap.add_argument("--steps", type=int, default=3200, help="optimizer steps")
    ap.add_argument("--stop-after", type=int,
                    help="end the run (checkpointed) after this many steps; the schedule still spans --steps")
    ap.add_argument("--batch", type=int, default=8, help="excerpts per step")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    ap.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    ap.add_argument("--init", type=Path,
                    help="start from this checkpoint's weights (fresh optimizer and schedule), e.g. to "
                         "continue a run with another segment length or learning rate; an .onnx export "
                         "of this script's architecture, e.g. model/default/htdemucs.onnx, also works")
    ap.add_argument("--loss", choices=["l1", "mse", "sdr"], default="sdr",
                    help="sdr: minus the per-source SDR (default); l1, mse: demucs' waveform losses "
                         "(see the docstring for why the default departs from them)")
    ap.add_argument("--clip", type=float, default=5.0, help="gradient norm clip (guards against spikes)")
    ap.add_argument("--monitor", type=int, default=0,
                    help="every this many steps, print the SDR on 32 fixed held-out excerpts (0: never)")
    ap.add_argument("--segment", type=float,
                    help="seconds per excerpt, and the exported model's segment (a new or --init run; "
                         "default: the --init checkpoint's, else 1)")
    ap.add_argument("--channels", type=int, default=DEMO_KWARGS["channels"],
                    help="width of the first layer (doubles at each of the 4 levels)")
    ap.add_argument("--coherent-lead", action="store_true",
                    help="remix drums and bass across the batch but keep each excerpt's vocals and other "
                         "together: the lead is the part above the others in the same song (corpus.py), "
                         "which a lead from one song over another song's parts would not teach; "
                         "measured worse for vocals and other, model/README.md section 7")
    ap.add_argument("--whole", type=float, default=0.0,
                    help="probability that a training excerpt keeps all four sources from its own song "
                         "instead of being remixed across the batch: held-out songs are scored whole, "
                         "where the parts share tempo and harmony; no gain measured at 0.5, "
                         "model/README.md section 7")
    ap.add_argument("--f16-weights", action="store_true",
                    help="export with export.py --f16-weights (half the file: a model wider than 16 "
                         "channels stays under 10 MB)")
    ap.add_argument("--speed", type=float, default=0.0,
                    help="probability that a training excerpt is played faster or slower (SPEEDS, pitch "
                         "and tempo together), as demucs' repitch augmentation does with probability 0.2; "
                         "no gain measured at 0.5, model/README.md section 7")
    ap.add_argument("--bf16", action="store_true",
                    help="products in bfloat16 (torch.autocast), on CPUs with AVX512-BF16 or AMX; the "
                         "weights, norms and the loss stay float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.workdir / "checkpoint.pt"
    # A resumed or initialised run keeps its checkpoint's architecture, whatever --channels says.
    start_from = ckpt_path if ckpt_path.exists() else args.init
    if start_from is None:
        ckpt = None
    elif start_from.suffix == ".onnx":
        ckpt = onnx_checkpoint(start_from)
    else:
        ckpt = torch.load(start_from, weights_only=False)
    kwargs = dict(ckpt["kwargs"]) if ckpt else dict(DEMO_KWARGS, channels=args.channels)
    if args.segment is not None:
        # No weight depends on the segment (sinusoidal position embeddings), so an --init run may
        # change it; a resumed one would change the run under its own schedule.
        if ckpt_path.exists() and float(kwargs["segment"]) != args.segment:
            sys.exit(f"{ckpt_path} was trained on {float(kwargs['segment'])} s segments: "
                     "resume without --segment, or start another --workdir with --init")
        kwargs["segment"] = args.segment
    model = HTDemucs(sources=SOURCES, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, losses = 0, []
    if ckpt_path.exists():
        model.load_state_dict(ckpt["state"])
        opt.load_state_dict(ckpt["optimizer"])
        step, losses = ckpt["step"], ckpt["losses"]
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    elif args.init:
        model.load_state_dict(ckpt["state"])
        print(f"weights from {args.init}", flush=True)
    corpus = Corpus(args.corpus, int(model.segment * model.samplerate))
    params = sum(p.numel() for p in model.parameters())
    print(f"{len(corpus.songs)} training songs, {params:,} parameters, "
          f"{args.batch} x {float(model.segment)} s per step", flush=True)

    if args.monitor:
        # A fixed set of held-out excerpts, only watched (never used to pick a checkpoint or tune the run).
        monitor = Corpus(args.corpus, corpus.length, "test").excerpts(np.random.default_rng(1234), 32)
    together = [SOURCES.index("other"), SOURCES.index("vocals")] if args.coherent_lead else []
    model.train()
    started = time.time()
    last = min(args.steps, args.stop_after or args.steps)
    while step < last:
        rng = np.random.default_rng([args.seed, step])
        stems = augment(corpus.excerpts(rng, args.batch, args.speed), rng, together, args.whole)
        mix = stems.sum(1)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            estimate = model(mix).float()
        loss = {"l1": F.l1_loss, "mse": F.mse_loss, "sdr": sdr_loss}[args.loss](estimate, stems)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 10 == 0:
            rate = (time.time() - started) / 10
            started = time.time()
            print(f"step {step}/{args.steps} loss {np.mean(losses[-50:]):.5f} lr {learning_rate(step, args):.2e} "
                  f"{rate:.2f} s/step", flush=True)
        if args.monitor and (step % args.monitor == 0 or step == last):
            model.eval()
            with torch.no_grad():
                sdrs = source_sdr(model(monitor.sum(1)), monitor).tolist()
            model.train()
            print(f"step {step} monitor SDR " + " ".join(f"{s} {v:.2f}" for s, v in zip(SOURCES, sdrs))
                  + f" avg {np.mean(sdrs):.2f}", flush=True)
        if step % args.checkpoint_every == 0 or step == last:
            save(ckpt_path, model, kwargs, opt, step, losses)

    if args.output:
        export = Path(__file__).resolve().parent / "export.py"
        subprocess.run([sys.executable, str(export), "--checkpoint", str(ckpt_path), "-o", str(args.output),
                        "--threads", str(args.threads)] + ["--f16-weights"] * args.f16_weights, check=True)


if __name__ == "__main__":
    main()
