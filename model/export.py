#!/usr/bin/env python3
"""Export a Demucs model to the stemsep split form: host STFT/iSTFT + learned cores in ONNX.

The contract (tensor names, shapes, metadata keys, host DSP, model directories) is in model/README.md.

Modes:
  --model NAME        a pretrained bag by name (htdemucs, htdemucs_ft, htdemucs_6s, ...) through
                      demucs.pretrained.get_model (downloads: needs internet)
  --model NAME --random-init
                      the same bag's exact architecture (model/family.py) with seeded random weights
  --random-init       the htdemucs architecture alone (kwargs of checkpoint 955717e8), random weights
  --tiny              a small HTDemucs (same architecture, few channels) for tests; --tiny-variant
                      picks the 6-source one or a two-member bag (one-hot or mixed weights)
  --checkpoint FILE   a model trained by model/train.py (its kwargs and weights)
The output is a model directory (manifest.json + one core per member), or, with -o FILE.onnx, the single
core of a one-member model (+ its .onnx.json sidecar). With --golden DIR it also writes golden vectors
produced by demucs' own Separator/apply_model path on the whole bag.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import demucs
from demucs.htdemucs import HTDemucs
from demucs.transformer import LayerScale

SOURCES = ["drums", "bass", "other", "vocals"]
FORMAT_VERSION = 1
OPSET = 17
OVERLAP = 0.25
ATTN_BLOCK = 192  # query rows per BlockedAttention block (see its docstring for the measurements)

# Constructor kwargs stored in the official htdemucs checkpoint (hybrid_transformer/955717e8-8726e21a.th,
# pkg["kwargs"]); every key not listed equals HTDemucs' default. Used only for --random-init, which must
# reproduce the pretrained model's shapes and cost without downloading it.
HTDEMUCS_KWARGS = dict(
    audio_channels=2, channels=48, channels_time=None, growth=2, nfft=4096, wiener_iters=0, end_iters=0,
    wiener_residual=False, cac=True, depth=4, rewrite=True, multi_freqs=[], multi_freqs_depth=3,
    freq_emb=0.2, emb_scale=10, emb_smooth=True, kernel_size=8, time_stride=2, stride=4, context=1,
    context_enc=0, norm_starts=4, norm_groups=4, dconv_mode=3, dconv_depth=2, dconv_comp=8, dconv_init=1e-3,
    bottom_channels=512, t_layers=5, t_emb="sin", t_hidden_scale=4.0, t_heads=8, t_dropout=0.02,
    t_max_positions=10000, t_norm_in=True, t_norm_in_group=False, t_group_norm=False, t_norm_first=True,
    t_norm_out=True, t_max_period=10000.0, t_weight_decay=0.0, t_lr=None, t_layer_scale=True, t_gelu=True,
    t_weight_pos_embed=1.0, t_sin_random_shift=0, t_cape_mean_normalize=True, t_cape_augment=True,
    t_cape_glob_loc_scale=[5000.0, 1.0, 1.4], t_sparse_self_attn=False, t_sparse_cross_attn=False,
    t_mask_type="diag", t_mask_random_seed=42, t_sparse_attn_window=400, t_global_window=100,
    t_sparsity=0.95, t_auto_sparsity=False, t_cross_first=False, rescale=0.1, samplerate=44100,
    segment=Fraction(39, 5), use_train_segment=True,
)

# Same architecture as htdemucs (depth 4, nfft 4096 so the host DSP is the production one, dconv in
# encoder and decoder, bottom channels, self- and cross-attention layers), shrunk to a few hundred kB.
TINY_KWARGS = dict(
    HTDEMUCS_KWARGS, channels=8, bottom_channels=32, t_layers=2, t_heads=2, t_dropout=0.0, segment=1,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def wake_layer_scales(model: nn.Module, gen: torch.Generator) -> None:
    """Give every LayerScale a scale of order 0.1-1.

    At init demucs sets them to 1e-3 (DConv) and 1e-4 (transformer), so a random model's output would barely
    depend on those blocks and an ONNX/tract bug inside them would go unnoticed by the golden test.
    """
    from demucs.transformer import LayerScale

    for module in model.modules():
        if isinstance(module, LayerScale):
            with torch.no_grad():
                module.scale.copy_(0.1 + 0.9 * torch.rand(module.scale.shape, generator=gen))


# Tiny variants for the engine's tests: the 4-source model, a 6-source one, two-member bags with one-hot
# (htdemucs_ft's form) and mixed (mdx's form) weights, and an HDemucs. Four channels and short segments
# keep them, and their golden clips, small.
TINY_FAMILY_KWARGS = dict(TINY_KWARGS, channels=4, dconv_comp=4, bottom_channels=16, segment=Fraction(1, 4))
TINY_VARIANTS = {
    "4s": dict(sources=SOURCES, members=1, weights=None, kwargs=TINY_KWARGS),
    "6s": dict(sources=SOURCES + ["guitar", "piano"], members=1, weights=None, kwargs=TINY_FAMILY_KWARGS),
    "bag-onehot": dict(sources=SOURCES, members=2, weights=[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
                       kwargs=TINY_FAMILY_KWARGS),
    "bag-mixed": dict(sources=SOURCES, members=2, weights=[[1.0, 0.5, 0.25, 1.0], [0.5, 1.0, 1.0, 0.0]],
                      kwargs=TINY_FAMILY_KWARGS),
    "hdemucs": dict(sources=SOURCES, members=1, weights=None, kwargs=None),
}
# The DConv LSTMs of the tiny HDemucs cut their input into frames above 8 steps (200 in demucs), so that
# its full segments take the framed path and a short last chunk the whole-sequence one, as songs do with
# hdemucs_mmi's 44 s segments.
TINY_HDEMUCS_LSTM_STEPS = 8


def tiny_hdemucs() -> nn.Module:
    """hdemucs_mmi's architecture (family.HDEMUCS_MMI_KWARGS) with two channels (compression 2, so that
    the first DConv keeps one) and a 0.5 s segment."""
    from demucs.demucs import BLSTM
    from demucs.hdemucs import HDemucs

    import family

    model = HDemucs(sources=SOURCES,
                    **dict(family.HDEMUCS_MMI_KWARGS, channels=2, dconv_comp=2, segment=Fraction(1, 2)))
    for module in model.modules():
        if isinstance(module, BLSTM):
            module.max_steps = TINY_HDEMUCS_LSTM_STEPS
    return model


def build_bag(args):
    """Returns (demucs BagOfModels in eval mode, stemsep.name, stemsep.version, weights kind)."""
    from demucs.apply import BagOfModels

    import family

    if args.model and not args.random_init:
        from demucs.pretrained import get_model

        loaded = get_model(args.model)
        bag = loaded if isinstance(loaded, BagOfModels) else BagOfModels([loaded])
        return bag.eval(), args.model, f"demucs-{demucs.__version__}:{args.model}", "pretrained"
    seed_everything(args.seed)
    if args.model:
        bag = family.random_bag(family.bag_spec(args.model), args.seed)
        return bag, args.model, f"demucs-{demucs.__version__}:{args.model}:random-init-seed-{args.seed}", "random"
    if args.checkpoint:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        model = HTDemucs(sources=ckpt["sources"], **ckpt["kwargs"])
        model.load_state_dict(ckpt["state"])
        version = f"demucs-{demucs.__version__}:stemsep-train-step-{ckpt['step']}"
        return BagOfModels([model.eval()]).eval(), args.name or "demo", version, "demo"
    if args.tiny:
        variant = TINY_VARIANTS[args.tiny_variant]
        gen = torch.Generator().manual_seed(args.seed)
        models = []
        for _ in range(variant["members"]):
            if variant["kwargs"] is None:
                model = tiny_hdemucs()
            else:
                model = HTDemucs(sources=variant["sources"], **variant["kwargs"])
            wake_layer_scales(model, gen)
            models.append(model.eval())
        name = "tiny" if args.tiny_variant == "4s" else f"tiny-{args.tiny_variant}"
        version = f"demucs-{demucs.__version__}:{name}-seed-{args.seed}"
        return BagOfModels(models, variant["weights"]).eval(), name, version, "random"
    model = HTDemucs(sources=SOURCES, **HTDEMUCS_KWARGS)
    version = f"demucs-{demucs.__version__}:random-init-seed-{args.seed}"
    return BagOfModels([model.eval()]).eval(), "htdemucs-random", version, "random"


def mean_std(x: torch.Tensor, dims: tuple[int, ...], unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`x.mean(dims)` and the unbiased `x.std(dims)` (keepdim) over trailing axes `dims`, summed in short runs.

    Same value as demucs' `x.mean(...)`/`x.std(...)`. ONNX runtimes sum a multi-axis ReduceMean in one long
    f32 pass (tract also merges chained reduces back into one): over a spectrogram's 360 k (tiny) to 2.7 M
    (htdemucs) values that is ~3e-5 relative error against torch's pairwise sums, which alone caps the tiny
    model's stems near 90 dB SNR. Here every axis is split into runs of at most 64 and each run is summed by a
    MatMul with a constant vector, which no runtime rewrites into a long reduction.
    """
    assert list(dims) == list(range(x.dim() - len(dims), x.dim())), "dims must be the trailing axes"
    # Plain ints: under tracing, sizes taken from x.shape become graph values and the constant vectors below
    # would be exported as computations.
    lead = [int(v) for v in x.shape[: x.dim() - len(dims)]]
    # The reduced values are contiguous, so any factorisation of their count is a valid reshape: split it
    # into prime factors and regroup them greedily into runs of at most 64.
    count = math.prod(int(x.shape[d]) for d in dims)
    primes, n, p = [], count, 2
    while p * p <= n:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    if n > 1:
        primes.append(n)
    runs: list[int] = []
    for f in sorted(primes, reverse=True):
        for i, r in enumerate(runs):
            if r * f <= 64:
                runs[i] *= f
                break
        else:
            runs.append(f)

    def mean(v: torch.Tensor) -> torch.Tensor:
        v = v.reshape(lead + runs)
        for n in reversed(runs):
            v = torch.matmul(v, torch.full((n, 1), 1.0 / n, dtype=v.dtype))[..., 0]
        return v.reshape(lead + [1] * len(dims))

    m = mean(x)
    var = mean((x - m) * (x - m))
    if unbiased:
        var = var * (count / (count - 1))
    return m, var.sqrt()


class StableGroupNorm(nn.Module):
    """nn.GroupNorm with its statistics summed in short runs (see `mean_std`).

    demucs' DConv branches use GroupNorm(1, C) over whole segments (516 k values per norm in htdemucs' first
    time layer); exported as InstanceNormalization, tract sums those in one f32 pass.
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [int(v) for v in x.shape]
        v = x.reshape(shape[0], self.groups, -1)
        m, std = mean_std(v, (2,), unbiased=False)
        v = (v - m) / torch.sqrt(std * std + self.eps)
        affine = [1, shape[1]] + [1] * (len(shape) - 2)
        return v.reshape(shape) * self.weight.reshape(affine) + self.bias.reshape(affine)


class StableTokenGroupNorm(StableGroupNorm):
    """demucs.transformer.MyGroupNorm (GroupNorm over `(B, T, C)` tokens), e.g. each layer's `norm_out`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


# Runs of a length-generic sum, and how many levels of them: exact up to GRAPH_RUN ** GRAPH_LEVELS values
# (1e9; a 44 s HDemucs segment's spectrogram holds 15.5 M).
GRAPH_RUN = 64
GRAPH_LEVELS = 5


def graph_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of a `[rows, n]` tensor in runs of GRAPH_RUN, as `mean_std` sums, for an `n`
    the exported graph keeps symbolic: each level pads with zeros to a multiple of the run, written as
    graph arithmetic, and sums every run with a MatMul. Returns `[rows, 1]`."""
    ones = torch.ones(GRAPH_RUN, 1, dtype=v.dtype)
    for _ in range(GRAPH_LEVELS):
        v = F.pad(v, (0, (GRAPH_RUN - v.shape[-1] % GRAPH_RUN) % GRAPH_RUN))
        v = torch.matmul(v.reshape(v.shape[0], -1, GRAPH_RUN), ones)[..., 0]
    return v


def graph_mean_var(v: torch.Tensor, unbiased: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of each row of `[rows, n]` (shapes `[rows, 1]`), summed by `graph_sum`."""
    n = v.shape[-1]
    m = graph_sum(v) / n
    var = graph_sum((v - m) * (v - m)) / (n - 1 if unbiased else n)
    return m, var


def graph_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x.mean(dims)` and the unbiased `x.std(dims)` over every axis but the first (keepdim), for a length
    the graph keeps symbolic (`mean_std` needs it fixed)."""
    v = x.reshape(x.shape[0], -1)
    m, var = graph_mean_var(v, unbiased=True)
    keep = [x.shape[0]] + [1] * (x.dim() - 1)
    return m.reshape(keep), var.sqrt().reshape(keep)


class GraphGroupNorm(StableGroupNorm):
    """nn.GroupNorm with its statistics summed by `graph_sum`: the HDemucs cores' norms, whose lengths the
    exported graph keeps symbolic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.reshape(x.shape[0] * self.groups, -1)
        m, var = graph_mean_var(v, unbiased=False)
        v = (v - m) / torch.sqrt(var + self.eps)
        affine = [1, -1] + [1] * (x.dim() - 2)
        return v.reshape(x.shape) * self.weight.reshape(affine) + self.bias.reshape(affine)


def with_stable_norms(model: nn.Module) -> nn.Module:
    """A copy of `model` whose GroupNorms are Stable*GroupNorms (same parameters, same values)."""
    from demucs.transformer import MyGroupNorm

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm:
                setattr(parent, name, StableGroupNorm(child))
            elif type(child) is MyGroupNorm:
                setattr(parent, name, StableTokenGroupNorm(child))
    return model


class RowDConv(nn.Module):
    """demucs' DConv, written as matrix products tract runs without moving data.

    demucs folds a frequency layer's rows into the batch (`[Fr, C, T]`) around its DConv. tract lowers a
    convolution on that layout to one matrix product over Fr*T whose result it must then move back into
    place, with the bias added separately, plus an im2col copy for the 3-tap convolution, on tensors of up
    to 66 MB: the frequency DConvs took 2.0 s of a 6.2 s htdemucs segment, 1.1 s after this rewrite
    (`make bench-profile`). Here, for the same sums:
    - each convolution is a batched MatMul whose weight is repeated per row (so it cannot be merged into one
      product over Fr*T) with the bias added after it, which tract fuses;
    - the dilated 3-tap convolution is one product with the taps stacked (`[3h, C]`), then the three
      shifted tap outputs added on the small hidden tensor instead of an im2col of the wide input;
    - the second 1x1 convolution, its GroupNorm, the GLU and LayerScale are a FoldedGlu: two products whose
      per-row weights carry the normalisation.
    The first GroupNorm, on the narrow hidden tensor, stays as it is. The time layers' DConvs (batch 1, so
    one row) take the same form, for the FoldedGlu: 0.31 s -> 0.17 s of a segment, and the frequency
    layers' 1.0 s -> 0.68 s (`make bench-profile`, 2 threads, two paired runs each).
    """

    def __init__(self, dconv: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(seq[:3] for seq in dconv.layers)  # conv, GroupNorm, GELU
        self.glus = nn.ModuleList(FoldedGlu(seq[3], seq[4], seq[6]) for seq in dconv.layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        fr, c, t = (int(v) for v in y.shape)
        for (conv1, norm1, act, *_), glu in zip(self.layers, self.glus):
            (k,), (dil,), (pad,), h = conv1.kernel_size, conv1.dilation, conv1.padding, conv1.out_channels
            taps = conv1.weight.permute(2, 0, 1).reshape(k * h, c).expand(fr, k * h, c)
            taps = F.pad(torch.matmul(taps, y), (pad, pad))
            z = sum(taps[:, j * h:(j + 1) * h, j * dil:j * dil + t] for j in range(k)) + conv1.bias[:, None]
            y = y + glu(act(norm1(z)))
        return y


class FoldedGlu(nn.Module):
    """The end of a DConv branch, LayerScale(GLU(GroupNorm(1, 2c)(conv(h)))), as two products per row whose
    weights carry the normalisation, for `h` `[Fr, k, T]`.

    The statistics of z = W h + b over (2c, T) follow from h's, which is only k channels wide (2c/16 in
    htdemucs): the mean from h's mean m; the variance as (tr(WᵀW · Σ_t (h-m)(h-m)ᵀ) + T · Σ_c (W m + b -
    mean)²) / (2c T), a sum of two non-negative terms, so nothing cancels. The normalisation, its affine and
    LayerScale then fold into a per-row weight and bias. The 2c-wide tensor is written once, by the products,
    instead of being reduced, centred, scaled, multiplied by the affine weight (a broadcast tract runs on a
    slow generic path) and sliced in two: the GLUs of htdemucs' widest layers took ~125 ms each in tract.
    """

    def __init__(self, conv: nn.Conv1d, norm: nn.GroupNorm, scale: LayerScale):
        super().__init__()
        c = conv.out_channels // 2
        with torch.no_grad():
            weight = conv.weight[:, :, 0].clone()
            affine = torch.cat([norm.weight[:c] * scale.scale, norm.weight[c:]])[:, None]
            shift = torch.cat([norm.bias[:c] * scale.scale, norm.bias[c:]])[:, None]
        self.register_buffer("weight", weight)  # [2c, k]
        self.register_buffer("bias", conv.bias.detach()[:, None].clone())  # [2c, 1]
        self.register_buffer("gram", weight.t() @ weight)  # [k, k]
        self.register_buffer("affine", affine)  # [2c, 1], LayerScale folded into the value half
        self.register_buffer("shift", shift)
        self.eps = norm.eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        fr, k, t = (int(v) for v in h.shape)
        c2 = self.weight.shape[0]
        mean_h = h.mean(2, keepdim=True)
        centred = h - mean_h
        cov = torch.matmul(centred, centred.transpose(1, 2))  # [Fr, k, k]
        mean_z = torch.matmul(self.weight.expand(fr, c2, k), mean_h) + self.bias  # [Fr, 2c, 1]
        mean = mean_z.mean(1, keepdim=True)
        var = ((cov * self.gram).sum((1, 2), keepdim=True)
               + t * (mean_z - mean).pow(2).sum(1, keepdim=True)) / (c2 * t)
        scale = self.affine * torch.rsqrt(var + self.eps)  # [Fr, 2c, 1]
        weight, bias = scale * self.weight, scale * (self.bias - mean) + self.shift
        value = torch.matmul(weight[:, :c2 // 2], h) + bias[:, :c2 // 2]
        gate = torch.matmul(weight[:, c2 // 2:], h) + bias[:, c2 // 2:]
        return value * torch.sigmoid(gate)


def with_row_dconvs(model: HTDemucs) -> HTDemucs:
    """A copy of `model` whose DConvs are RowDConvs (same parameters, same values): the frequency layers'
    (rows folded into the batch) and the time layers' (batch 1).

    Only the DConv layout demucs' htdemucs configurations use (GroupNorm, GELU, no LSTM or local attention)
    is rewritten; any other is left as it is.
    """
    model = copy.deepcopy(model)
    for layer in list(model.encoder) + list(model.decoder) + list(model.tencoder) + list(model.tdecoder):
        dconv = getattr(layer, "dconv", None)
        if not dconv:
            continue
        expected = [nn.Conv1d, nn.GroupNorm, nn.GELU, nn.Conv1d, nn.GroupNorm, nn.GLU, LayerScale]
        if all([type(m) for m in seq] == expected and seq[4].num_groups == 1 for seq in dconv.layers):
            layer.dconv = RowDConv(dconv)
    return model


class BlockedAttention(nn.Module):
    """nn.MultiheadAttention as demucs' transformers call it (batch first, batch 1, no mask, eval), with
    the queries taken in blocks of `block` rows.

    Unblocked, each of htdemucs' frequency self-attentions writes an 8 x 2688 x 2688 score tensor (231 MB);
    the softmax reads and writes it, and tract copies it once more to pack it for the product with V: four
    passes over memory far larger than the cache. In blocks, one block's scores stay in the last-level
    cache between those passes. The ten attentions of a segment took 1.37 s in tract, 1.13 s in blocks of
    192 (`make bench-profile`, 2 threads; 336 rows: 1.16-1.19 s, 96 rows: 1.54-1.62 s, each node's
    overhead then dominating). Same sums; the 1/sqrt(head dim) scaling is folded into the query
    projection's weight and bias.
    """

    def __init__(self, mha: nn.MultiheadAttention, block: int):
        super().__init__()
        self.heads, self.block = mha.num_heads, block
        dim = mha.embed_dim
        scale = torch.ones(3 * dim, 1)
        scale[:dim] = (dim // self.heads) ** -0.5
        self.in_weight = nn.Parameter(mha.in_proj_weight.detach() * scale)
        self.in_bias = nn.Parameter(mha.in_proj_bias.detach() * scale[:, 0])
        self.out_proj = copy.deepcopy(mha.out_proj)

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None, **_):
        assert attn_mask is None and key_padding_mask is None and key is value
        (b, t, dim), (s, h) = query.shape, (key.shape[1], self.heads)
        assert b == 1, "exported with batch 1"
        if query is key:  # self-attention: one projection for q, k and v
            q, k, v = F.linear(query, self.in_weight, self.in_bias).chunk(3, dim=-1)
        else:
            q = F.linear(query, self.in_weight[:dim], self.in_bias[:dim])
            k, v = F.linear(key, self.in_weight[dim:], self.in_bias[dim:]).chunk(2, dim=-1)
        q = q.reshape(t, h, dim // h).transpose(0, 1)  # [h, t, d]
        kt = k.reshape(s, h, dim // h).permute(1, 2, 0)  # [h, d, s]
        v = v.reshape(s, h, dim // h).transpose(0, 1)  # [h, s, d]
        out = torch.cat([torch.softmax(torch.matmul(q[:, i:i + self.block], kt), dim=-1).matmul(v)
                         for i in range(0, t, self.block)], dim=1)
        return self.out_proj(out.transpose(0, 1).reshape(1, t, dim)), None


def with_blocked_attention(model: nn.Module, block: int) -> nn.Module:
    """`model`, changed in place: every transformer attention a BlockedAttention (same parameters, same
    values)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.MultiheadAttention and child.batch_first and child._qkv_same_embed_dim \
                    and child.in_proj_bias is not None and child.bias_k is None:
                setattr(parent, name, BlockedAttention(child, block))
    return model


class Core(nn.Module):
    """HTDemucs.forward (htdemucs.py:527-661) minus `_spec`, `_mask`/`_ispec` and the final sum.

    The body mirrors demucs' code statement by statement so the exported graph is the same computation;
    only the STFT on the way in and the iSTFT on the way out are left to the host.
    """

    def __init__(self, model: HTDemucs):
        super().__init__()
        self.m = model

    def forward(self, mix: torch.Tensor, spec: torch.Tensor):
        m = self.m
        length = mix.shape[-1]
        x = spec
        B, C, Fq, T = x.shape

        mean, std = mean_std(x, (1, 2, 3))
        x = (x - mean) / (1e-5 + std)

        xt = mix
        meant, stdt = mean_std(xt, (1, 2))
        xt = (xt - meant) / (1e-5 + stdt)

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(m.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(m.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = m.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and m.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                emb = m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                x = x + m.freq_emb_scale * emb
            saved.append(x)

        if m.crosstransformer:
            if m.bottom_channels:
                b, c, f, t = x.shape
                x = x.reshape(b, c, f * t)
                x = m.channel_upsampler(x)
                x = x.reshape(b, -1, f, t)
                xt = m.channel_upsampler_t(xt)
            x, xt = m.crosstransformer(x, xt)
            if m.bottom_channels:
                b, c, f, t = x.shape
                x = x.reshape(b, c, f * t)
                x = m.channel_downsampler(x)
                x = x.reshape(b, -1, f, t)
                xt = m.channel_downsampler_t(xt)

        for idx, decode in enumerate(m.decoder):
            skip = saved.pop(-1)
            x, pre = decode(x, skip, lengths.pop(-1))
            offset = m.depth - len(m.tdecoder)
            if idx >= offset:
                tdec = m.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    pre = pre[:, :, 0]
                    xt, _ = tdec(pre, None, length_t)
                else:
                    skip = saved_t.pop(-1)
                    xt, _ = tdec(xt, skip, length_t)
        assert not saved and not saved_t and not lengths_t

        S = len(m.sources)
        x = x.view(B, S, -1, Fq, T)
        x = x * std[:, None] + mean[:, None]
        xt = xt.view(B, S, -1, length)
        xt = xt * stdt[:, None] + meant[:, None]
        return x, xt


class GraphBLSTM(nn.Module):
    """demucs' BLSTM (demucs.py) for any sequence length in one exported graph.

    demucs runs the LSTM over the whole sequence when it has at most `max_steps` steps, and otherwise
    over overlapping frames of `max_steps` (stride half that) cut with `as_strided`, keeping each frame's
    middle. Both are Python branches on the length, which tracing would freeze. Here both are computed
    with shape arithmetic the graph carries, and `torch.where` on the length picks one: the frames are
    two shifted reshapes of the zero-padded input (frame k = blocks k and k+1 of half a frame), and the
    middles are slices, so the same file serves every chunk length. Same sums as demucs on each side.
    """

    def __init__(self, blstm: nn.Module):
        super().__init__()
        self.lstm, self.linear, self.skip = blstm.lstm, blstm.linear, blstm.skip
        self.width = blstm.max_steps
        self.half = self.width // 2

    def run(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lstm(x.permute(2, 0, 1))[0]
        return self.linear(x).permute(1, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T = x.shape
        plain = self.run(x)
        # demucs.utils.unfold: ceil(T / half) frames over the input padded to (frames + 1) halves.
        n = (T + self.half - 1) // self.half
        padded = F.pad(x, (0, (n + 1) * self.half - T))
        blocks = padded.reshape(B, C, n + 1, self.half)
        frames = torch.cat([blocks[:, :, :-1], blocks[:, :, 1:]], dim=3)  # [B, C, n, width]
        y = self.run(frames.permute(0, 2, 1, 3).reshape(-1, C, self.width))
        y = y.reshape(B, -1, C, self.width)  # [B, n, C, width]
        limit = self.half // 2
        first = y[:, 0, :, :-limit]
        middle = y[:, 1:-1, :, limit:-limit].permute(0, 2, 1, 3).reshape(B, C, -1)
        last = y[:, -1, :, limit:]
        framed = torch.cat([first, middle, last], dim=-1)[..., :T]
        out = torch.where(torch.as_tensor(T) > self.width, framed, plain)
        return out + x if self.skip else out


def _henc_forward(self, x, inject=None):
    """HEncLayer.forward (hdemucs.py) with the time branch's padding to a multiple of the stride written
    as graph arithmetic, `(stride - length % stride) % stride` always, instead of a branch on the length.
    (Non-negative operands only: runtimes disagree on the remainder of a negative number.)"""
    if not self.freq and x.dim() == 4:
        B, C, Fr, T = x.shape
        x = x.view(B, -1, T)
    if not self.freq:
        x = F.pad(x, (0, (self.stride - x.shape[-1] % self.stride) % self.stride))
    y = self.conv(x)
    if self.empty:
        return y
    if inject is not None:
        if inject.dim() == 3 and y.dim() == 4:
            inject = inject[:, :, None]
        y = y + inject
    y = F.gelu(self.norm1(y))
    if self.dconv:
        if self.freq:
            B, C, Fr, T = y.shape
            y = y.permute(0, 2, 1, 3).reshape(-1, C, T)
        y = self.dconv(y)
        if self.freq:
            y = y.view(B, Fr, C, T).permute(0, 2, 1, 3)
    if self.rewrite:
        z = self.norm2(self.rewrite(y))
        z = F.glu(z, dim=1)
    else:
        z = y
    return z


def _local_state_forward(self, x):
    """demucs' LocalState.forward with the diagonal mask taken from the key/query distance (`delta ==
    0`, the same positions as `torch.eye(T)`), which exports for any T."""
    B, C, T = x.shape
    heads = self.heads
    indexes = torch.arange(T, device=x.device, dtype=x.dtype)
    delta = indexes[:, None] - indexes[None, :]
    queries = self.query(x).view(B, heads, -1, T)
    keys = self.key(x).view(B, heads, -1, T)
    dots = torch.einsum("bhct,bhcs->bhts", keys, queries)
    dots /= keys.shape[2] ** 0.5
    assert not self.nfreqs, "LocalState with frequency kernels is not used by the Demucs family"
    if self.ndecay:
        decays = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)
        decay_q = self.query_decay(x).view(B, heads, -1, T)
        decay_q = torch.sigmoid(decay_q) / 2
        decay_kernel = - decays.view(-1, 1, 1) * delta.abs() / self.ndecay ** 0.5
        dots += torch.einsum("fts,bhfs->bhts", decay_kernel, decay_q)
    dots = dots.masked_fill(delta == 0, -100)
    weights = torch.softmax(dots, dim=2)
    content = self.content(x).view(B, heads, -1, T)
    result = torch.einsum("bhts,bhct->bhcs", weights, content)
    result = result.reshape(B, -1, T)
    return x + self.proj(result)


def length_generic(model: nn.Module) -> nn.Module:
    """A copy of an HDemucs whose every length-dependent Python branch is graph arithmetic (see
    GraphBLSTM, _henc_forward, _local_state_forward): traced once with a dynamic length, it runs at any
    length as HDemucs.forward does, which apply_model needs for the short last chunk."""
    import types

    from demucs.demucs import BLSTM, LocalState
    from demucs.hdemucs import HEncLayer

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BLSTM):
                setattr(parent, name, GraphBLSTM(child))
            elif type(child) is nn.GroupNorm:
                setattr(parent, name, GraphGroupNorm(child))
    for module in model.modules():
        if isinstance(module, HEncLayer):
            module.forward = types.MethodType(_henc_forward, module)
        elif isinstance(module, LocalState):
            module.forward = types.MethodType(_local_state_forward, module)
    return model


class HCore(nn.Module):
    """HDemucs.forward (hdemucs.py:689-790) minus `_spec`, `_mask`/`_ispec` and the final sum, at any
    length: demucs runs an HDemucs at each chunk's own length (it has no `valid_length`), so the short
    last chunk of a song runs at its length, and the exported graph keeps the length symbolic."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = length_generic(model)

    def forward(self, mix: torch.Tensor, spec: torch.Tensor):
        m = self.m
        length = mix.shape[-1]
        x = spec
        B, C, Fq, T = x.shape
        mean, std = graph_mean_std(x)
        x = (x - mean) / (1e-5 + std)
        xt = mix
        meant, stdt = graph_mean_std(xt)
        xt = (xt - meant) / (1e-5 + stdt)

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(m.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(m.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = m.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and m.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                emb = m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                x = x + m.freq_emb_scale * emb
            saved.append(x)

        x = torch.zeros_like(x)
        xt = torch.zeros_like(x)
        for idx, decode in enumerate(m.decoder):
            skip = saved.pop(-1)
            x, pre = decode(x, skip, lengths.pop(-1))
            offset = m.depth - len(m.tdecoder)
            if idx >= offset:
                tdec = m.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    pre = pre[:, :, 0]
                    xt, _ = tdec(pre, None, length_t)
                else:
                    skip = saved_t.pop(-1)
                    xt, _ = tdec(xt, skip, length_t)
        assert not saved and not saved_t and not lengths_t

        S = len(m.sources)
        x = x.view(B, S, -1, Fq, T)
        x = x * std[:, None] + mean[:, None]
        xt = xt.view(B, S, -1, length)
        xt = xt * stdt[:, None] + meant[:, None]
        return x, xt


def exported_core(model: HTDemucs, demucs_layout: bool = False, attn_block: int = ATTN_BLOCK,
                  stable_norms: bool = False) -> Core:
    """The Core this script exports: by default with RowDConvs and BlockedAttention, which tract runs faster.

    stable_norms is off by default: the short-run GroupNorms cost tract ~25 % more time per segment
    (htdemucs, measured 13.8 s vs 11.0 s single-threaded) for 3e-5 -> 1e-6 relative error in already
    inaudible places."""
    rewritten = model if demucs_layout else with_blocked_attention(with_row_dconvs(model), attn_block)
    return Core(with_stable_norms(rewritten) if stable_norms else rewritten).eval()


def is_hdemucs(model: nn.Module) -> bool:
    from demucs.hdemucs import HDemucs

    return isinstance(model, HDemucs)


def facts(model: nn.Module, name: str, version: str, weights: str) -> dict[str, str]:
    """The stemsep.* metadata of one core; every value a string, as ONNX metadata_props requires."""
    if is_hdemucs(model):
        if not (model.cac and model.hybrid and not model.hybrid_old and model.wiener_iters == 0):
            sys.exit("only a CaC hybrid HDemucs (not hybrid_old) without Wiener filtering fits the split contract")
    elif not (model.cac and model.use_train_segment and model.wiener_iters == 0):
        sys.exit("only CaC HTDemucs with use_train_segment and no Wiener filtering fits the split contract")
    seg = int(model.segment * model.samplerate)
    nfft, hop = model.nfft, model.hop_length
    frames = math.ceil(seg / hop)
    pad_left = hop // 2 * 3
    return {
        "stemsep.format": str(FORMAT_VERSION),
        "stemsep.name": name,
        "stemsep.version": version,
        "stemsep.weights": weights,
        "stemsep.sources": ",".join(model.sources),
        "stemsep.sample_rate": str(model.samplerate),
        "stemsep.channels": str(model.audio_channels),
        "stemsep.segment_samples": str(seg),
        "stemsep.nfft": str(nfft),
        "stemsep.hop": str(hop),
        "stemsep.bins": str(nfft // 2),
        "stemsep.frames": str(frames),
        "stemsep.pad_left": str(pad_left),
        "stemsep.pad_right": str(pad_left + frames * hop - seg),
        "stemsep.overlap": str(OVERLAP),
        "stemsep.stride_samples": str(int((1 - OVERLAP) * seg)),
        "stemsep.spec_layout": "cac",
        "stemsep.inputs": "mix,spec",
        "stemsep.outputs": "freq,time",
        # An HTDemucs core takes exactly its segment (apply_model pads every chunk to it); an HDemucs one
        # any length up to it (apply_model runs each chunk at its own length: the last is shorter).
        "stemsep.length": "any" if is_hdemucs(model) else "segment",
    }


def example_inputs(model: nn.Module, seed: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised-looking segment (of `length` samples, default the model's segment) and its spectrogram
    computed by demucs' own `_spec`/`_magnitude`."""
    seg = length or int(model.segment * model.samplerate)
    gen = torch.Generator().manual_seed(seed + 1)
    mix = torch.randn(1, model.audio_channels, seg, generator=gen)
    with torch.no_grad():
        spec = model._magnitude(model._spec(mix))
    return mix, spec.contiguous()


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


def check_wrapper(model: HTDemucs, core: Core, mix: torch.Tensor, spec: torch.Tensor) -> float:
    """Host STFT → core → host iSTFT + time (all torch) must equal HTDemucs.forward."""
    with torch.no_grad():
        want = model(mix)
        freq, time = core(mix, spec)
        got = time + model._ispec(model._mask(None, freq), mix.shape[-1])
    return rel_l2(got.numpy(), want.numpy())


def export_onnx(core: nn.Module, mix: torch.Tensor, spec: torch.Tensor, out: Path, meta: dict[str, str],
                f16_weights: bool = False, any_length: bool = False) -> None:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    # nn.MultiheadAttention's inference fast path is a fused aten op with no ONNX symbolic.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        # The TorchScript exporter gives a plain opset-17 graph with constants folded (positional embeddings,
        # frequency embedding) that tract loads; static shapes: one segment, batch 1.
        # An HCore keeps the segment length symbolic: the engine plans it at each chunk's length.
        dynamic = {"mix": {2: "length"}, "spec": {3: "frames"}, "freq": {4: "frames"}, "time": {3: "length"}}
        torch.onnx.export(
            core, (mix, spec), str(tmp), input_names=["mix", "spec"], output_names=["freq", "time"],
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
            dynamic_axes=dynamic if any_length else None,
        )
    proto = onnx.load(str(tmp))
    bypass_initializer_identities(proto)
    if f16_weights:
        store_float16(proto)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "stemsep model/export.py"
    proto.doc_string = "HTDemucs learned core; host STFT/iSTFT contract in stemsep model/README.md"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    tmp.unlink()
    Path(str(out) + ".json").write_text(json.dumps(meta, indent=2) + "\n")


def bypass_initializer_identities(proto) -> None:
    """Makes nodes read initializers directly instead of through Identity nodes.

    The TorchScript exporter merges initializers of equal value, keeping the other names as Identity nodes,
    and can put such a node after its consumers (seen with FoldedGlu's affine in random-init exports, whose
    GroupNorms are all alike): onnxruntime and tract then refuse the graph as unsorted.
    """
    inits = {i.name for i in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    alias = {n.output[0]: n.input[0] for n in proto.graph.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    kept = [n for n in proto.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)


# Initializers stored as float16 by store_float16 take this suffix; the Cast back takes the original name.
F16_SUFFIX = "::f16"


def store_float16(proto) -> None:
    """Stores every float32 initializer of 256 values or more as float16, cast back to float32 by a Cast
    node at the head of the graph, so every consumer and every product stays float32 and the file is about
    half as large; engines fold the Casts into constants when they optimise the graph (tract's `make eval`
    time is unchanged, model/README.md section 7)."""
    from onnx import TensorProto, helper, numpy_helper

    kept, casts = [], []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT or math.prod(init.dims) < 256:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + F16_SUFFIX)
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def check_onnx(path: Path, core: nn.Module, mix: torch.Tensor, spec: torch.Tensor, threads: int) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    freq, time = sess.run(["freq", "time"], {"mix": mix.numpy(), "spec": spec.numpy()})
    with torch.no_grad():
        tfreq, ttime = core(mix, spec)
    return {"freq_rel_l2": rel_l2(freq, tfreq.numpy()), "time_rel_l2": rel_l2(time, ttime.numpy()),
            "freq_shape": list(freq.shape), "time_shape": list(time.shape)}


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def synth_clip(sample_rate: int, length: int, seed: int) -> np.ndarray:
    """Deterministic stereo test clip [2, length] float32, peak around 0.3-0.5.

    Music-ish: a bass line, a chord with harmonics panned differently left/right, a vibrato lead, and
    noise-burst "drums" with exponential decay, so every source head and both STFT edges see real signal.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sample_rate
    out = np.zeros((2, length))
    bass_notes = [55.0, 73.42, 61.74, 82.41]
    note_len = length / len(bass_notes)
    for i, f0 in enumerate(bass_notes):
        sl = slice(int(i * note_len), int((i + 1) * note_len))
        if sl.stop <= sl.start:
            continue
        env = np.minimum(1.0, (t[sl] - t[sl][0]) * 40) * np.exp(-(t[sl] - t[sl][0]) * 1.5)
        tone = np.sin(2 * np.pi * f0 * t[sl]) + 0.3 * np.sin(2 * np.pi * 2 * f0 * t[sl])
        out[:, sl] += 0.12 * env * tone
    for f0, pan in [(261.63, 0.2), (329.63, 0.5), (392.0, 0.8)]:
        tone = sum(np.sin(2 * np.pi * h * f0 * t + h) / h ** 1.5 for h in range(1, 7))
        out[0] += 0.05 * (1 - pan) * tone
        out[1] += 0.05 * pan * tone
    vib = 880.0 * t + 3.0 * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi)
    lead = np.sin(2 * np.pi * vib) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    out[0] += 0.06 * lead
    out[1] += 0.04 * lead
    hit_every = int(0.25 * sample_rate)
    for start in range(int(0.05 * sample_rate), length, hit_every):
        n = min(length - start, int(0.15 * sample_rate))
        decay = np.exp(-np.arange(n) / (0.03 * sample_rate))
        noise = rng.standard_normal((2, n))
        noise[1] = 0.7 * noise[1] + 0.3 * noise[0]
        out[:, start:start + n] += 0.1 * decay * noise
    return out.astype(np.float32)


def separator_for(model):
    """A demucs.api.Separator around an in-memory model or bag, with the options Separator uses by default
    except shifts (0) — so golden stems come from `Separator.separate_tensor` itself."""
    from demucs.api import Separator

    sep = Separator.__new__(Separator)
    sep._name, sep._repo = "stemsep-export", None
    sep._model = model
    sep._audio_channels = model.audio_channels
    sep._samplerate = model.samplerate
    sep.update_parameter(device="cpu", shifts=0, overlap=OVERLAP, split=True, segment=None, jobs=0,
                         progress=False, callback=None, callback_arg=None)
    return sep


def write_golden(bag, out_dir: Path, length: int, seed: int, generator: str) -> dict:
    """Golden vectors for `bag` (a demucs BagOfModels): a synthetic clip and the stems demucs'
    Separator makes of it, running apply_model over the whole bag."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = int(max(m.segment for m in bag.models) * bag.samplerate)
    stride = int((1 - OVERLAP) * seg)
    if length % stride == 0 or length < 2 * stride + seg // 2:
        sys.exit(f"golden length {length} must not be a multiple of the stride {stride} and span >= 3 segments")
    mix = synth_clip(bag.samplerate, length, seed)
    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    mean, std = float(ref.mean()), float(ref.std() + 1e-8)
    with torch.no_grad():
        _, stems = separator_for(bag).separate_tensor(wav)
    stems = np.stack([stems[s].numpy() for s in bag.sources]).astype("<f4")
    mix.astype("<f4").tofile(out_dir / "mix.f32")
    stems.tofile(out_dir / "stems.f32")
    meta = {
        "sample_rate": bag.samplerate,
        "channels": bag.audio_channels,
        "length": length,
        "sources": list(bag.sources),
        "segment_samples": seg,
        "stride_samples": stride,
        "overlap": OVERLAP,
        "chunks": list(range(0, length, stride)),
        "members": len(bag.models),
        "weights": [[float(w) for w in ws] for ws in bag.weights],
        "mean": mean,
        "std": std,
        "layout": "mix.f32: f32 LE planar [channels][length]; stems.f32: f32 LE planar [sources][channels][length]",
        "generator": f"model/export.py {generator} (demucs {demucs.__version__}, torch {torch.__version__}), "
                     "Separator.separate_tensor: shifts=0 split=True overlap=0.25",
        "clip_seed": seed,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def export_member(model: nn.Module, out: Path, meta: dict[str, str], args) -> None:
    """One core: the exported graph, checked against the model's forward (torch) and onnxruntime; an
    HDemucs core also at two shorter lengths, as the last chunk of a song runs."""
    if is_hdemucs(model):
        export_hdemucs_member(model, out, meta, args)
        return
    if not isinstance(model, HTDemucs):
        sys.exit(f"{meta['stemsep.name']}: a {type(model).__name__} member; only HTDemucs and HDemucs cores "
                 "export (model/README.md, 'The Demucs family')")
    core = Core(model).eval()
    exported = exported_core(model, args.demucs_layout, args.attn_block, args.stable_norms)
    mix, spec = example_inputs(model, args.seed)
    print(f"{out.name}: segment {meta['stemsep.segment_samples']} samples, spec {list(spec.shape)}, "
          f"params {sum(p.numel() for p in model.parameters()):,}")
    print(f"torch, host DSP + exported core vs HTDemucs.forward: rel L2 "
          f"{check_wrapper(model, exported, mix, spec):.3e}")
    export_onnx(exported, mix, spec, out, meta, args.f16_weights)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB) and {out}.json")
    print("ops:", json.dumps(op_histogram(out)))
    if not args.no_check:
        print("onnxruntime vs torch:", json.dumps(check_onnx(out, core, mix, spec, args.threads)))


def export_hdemucs_member(model: nn.Module, out: Path, meta: dict[str, str], args) -> None:
    core = HCore(model).eval()
    seg = int(meta["stemsep.segment_samples"])
    mix, spec = example_inputs(model, args.seed)
    print(f"{out.name}: HDemucs, segment {seg} samples (any length up to it), "
          f"params {sum(p.numel() for p in model.parameters()):,}")
    print(f"torch, host DSP + exported core vs HDemucs.forward: rel L2 {check_wrapper(model, core, mix, spec):.3e}")
    export_onnx(core, mix, spec, out, meta, args.f16_weights, any_length=True)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB) and {out}.json")
    print("ops:", json.dumps(op_histogram(out)))
    if args.no_check:
        return
    # A short last chunk takes other branches inside (no framing in the DConv LSTMs below 200 steps, other
    # paddings): the one graph must match HDemucs at those lengths too.
    for length in (seg, seg // 3 + 777, seg // 11 + 5):
        mix, spec = example_inputs(model, args.seed, length)
        print(f"onnxruntime vs torch at {length} samples:", json.dumps(check_onnx(out, core, mix, spec, args.threads)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--model", help="pretrained demucs model name (needs internet unless --random-init), "
                                      "e.g. htdemucs, htdemucs_ft, htdemucs_6s")
    mode.add_argument("--tiny", action="store_true", help="small HTDemucs for tests")
    mode.add_argument("--checkpoint", type=Path, help="checkpoint written by model/train.py")
    ap.add_argument("--random-init", action="store_true",
                    help="random weights: with --model, that bag's exact architecture; alone, htdemucs'")
    ap.add_argument("--tiny-variant", choices=sorted(TINY_VARIANTS), default="4s",
                    help="which tiny model --tiny makes")
    ap.add_argument("--name", help="stemsep.name for --checkpoint exports (default: demo)")
    ap.add_argument("--seed", type=int, default=0, help="seed for random weights and inputs")
    ap.add_argument("-o", "--output", type=Path, required=True,
                    help="model directory to write, or a FILE.onnx (+ .onnx.json) for a one-member model")
    ap.add_argument("--golden", type=Path, help="write golden vectors (mix/stems/meta) to this directory")
    ap.add_argument("--golden-length", type=int, default=100_000, help="golden clip length, samples")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    ap.add_argument("--demucs-layout", action="store_true",
                    help="keep demucs' layout: no RowDConv, no BlockedAttention (tract runs it slower)")
    ap.add_argument("--attn-block", type=int, default=ATTN_BLOCK,
                    help="query rows per attention block (not with --demucs-layout)")
    ap.add_argument("--f16-weights", action="store_true",
                    help="store the weights as float16, each cast back to float32 in the graph: half the "
                         "file, outputs within ~3e-4 (model/README.md section 7)")
    ap.add_argument("--stable-norms", action="store_true",
                    help="also sum GroupNorm statistics in short runs (more exact in tract, slower)")
    args = ap.parse_args()
    if args.random_init and (args.tiny or args.checkpoint):
        ap.error("--random-init goes with --model NAME, or alone")
    if not (args.model or args.tiny or args.checkpoint or args.random_init):
        ap.error("one of --model, --random-init, --tiny or --checkpoint is required")

    import family

    torch.set_num_threads(args.threads)
    bag, name, version, weights = build_bag(args)
    single = args.output.suffix == ".onnx"
    if single:
        if len(bag.models) != 1 or any(w != 1.0 for ws in bag.weights for w in ws):
            sys.exit(f"{name} is a bag of {len(bag.models)} members: export it to a model directory (-o DIR)")
        files = [args.output]
    else:
        args.output.mkdir(parents=True, exist_ok=True)
        # Members are named by their checkpoint signatures (demucs/remote/<name>.yaml) when there are some.
        sigs = family.signatures(args.model) if args.model else [f"member{k}" for k in range(len(bag.models))]
        files = [args.output / f"{sig}.onnx" for sig in sigs]
    for k, (model, out) in enumerate(zip(bag.models, files)):
        member_version = version if len(bag.models) == 1 else f"{version}:member-{k}"
        export_member(model, out, facts(model, name, member_version, weights), args)
    if not single:
        family.write_manifest(args.output, name, version, weights, bag, [f.name for f in files])
        print(f"wrote {args.output}/manifest.json ({len(files)} member(s))")
    if args.golden:
        generator = " ".join(sys.argv[1:])
        gmeta = write_golden(bag, args.golden, args.golden_length, args.seed, generator)
        print(f"golden: {gmeta['length']} samples, chunks at {gmeta['chunks']} -> {args.golden}")


if __name__ == "__main__":
    main()
