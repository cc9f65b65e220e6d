"""The weights of a stemsep ONNX export (export.py) back in an HTDemucs, so that training can go on from a
committed model, such as model/default/htdemucs.onnx, on a machine that never had its checkpoint.

export.py rewrites the model before exporting it (RowDConv, FoldedGlu, BlockedAttention) and the exporter
folds constants, so many initializers are not parameters but functions of them: transposed Linear weights,
a DConv's 3-tap weight stacked as [3h, C], the frequency embedding times its scales, an attention's input
projection with the query part scaled. Their names do not say which parameter they hold (`onnx::MatMul_9802`).

The names are the same in every export of the same configuration, though, so a probe tells them: export a
copy of the model whose every parameter is a distinct random number, and find each known function of the
parameters (a "tie") among the probe's initializers by value. The trained file's initializer of that name
then holds the trained value of the same function, which is inverted.

One product is not invertible: FoldedGlu holds GroupNorm's affine weight times LayerScale. The split taken
(LayerScale |a|, weight sign(a)) gives the same model; a round trip checks that exporting the loaded model
gives the file's initializers again.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import F16_SUFFIX, example_inputs, export_onnx, exported_core, facts  # noqa: E402

from demucs.htdemucs import HTDemucs  # noqa: E402

State = dict[str, torch.Tensor]
Tie = tuple[torch.Tensor, Callable[[torch.Tensor, State], None]]


def initializers(path: Path) -> dict[str, np.ndarray]:
    """By the names the graph's nodes read them under: float16-stored weights (export.py --f16-weights)
    under the name of their Cast back, as float32."""
    out = {}
    for init in onnx.load(str(path)).graph.initializer:
        value = numpy_helper.to_array(init)
        if init.name.endswith(F16_SUFFIX):
            out[init.name.removesuffix(F16_SUFFIX)] = value.astype(np.float32)
        else:
            out[init.name] = value
    return out


def segment_seconds(path: Path) -> float:
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return int(meta["stemsep.segment_samples"]) / int(meta["stemsep.sample_rate"])


def export_initializers(model: HTDemucs, workdir: Path) -> dict[str, np.ndarray]:
    """The initializers of `model` exported as export.py exports it by default."""
    out = workdir / "probe.onnx"
    export_onnx(exported_core(model), *example_inputs(model, 0), out, facts(model, "probe", "probe"))
    return initializers(out)


def _put(key: str):
    """A tie's inverse for a value held as it is, whatever its shape: state[key] = value."""
    def put(value: torch.Tensor, state: State) -> None:
        state[key][:] = value.reshape(state[key].shape)
    return put


def _transposed(key: str):
    def put(value: torch.Tensor, state: State) -> None:
        state[key][:] = value.reshape(state[key].shape[::-1]).t()
    return put


def _dconv_ties(prefix: str, seq) -> list[Tie]:
    conv1, _, _, conv2, norm2, _, scale = seq  # the first GroupNorm is ties()' like any other
    (k,), h, c = conv1.kernel_size, conv1.out_channels, conv1.in_channels
    half = conv2.out_channels // 2

    def taps(value, state):
        state[f"{prefix}.0.weight"][:] = value.reshape(k, h, c).permute(1, 2, 0)

    def affine(value, state):
        value = value.reshape(-1)
        state[f"{prefix}.6.scale"][:] = value[:half].abs().clamp_min(1e-12)
        state[f"{prefix}.4.weight"][:half] = torch.sign(value[:half])
        state[f"{prefix}.4.weight"][half:] = value[half:]

    def shift(value, state):  # after affine: needs the LayerScale split it made
        value = value.reshape(-1)
        state[f"{prefix}.4.bias"][:half] = value[:half] / state[f"{prefix}.6.scale"]
        state[f"{prefix}.4.bias"][half:] = value[half:]

    return [
        (conv1.weight.permute(2, 0, 1).reshape(k * h, c), taps),
        (conv1.bias, _put(f"{prefix}.0.bias")),
        (conv2.weight[:, :, 0], _put(f"{prefix}.3.weight")),
        (conv2.bias, _put(f"{prefix}.3.bias")),
        (torch.cat([norm2.weight[:half] * scale.scale, norm2.weight[half:]]), affine),
        (torch.cat([norm2.bias[:half] * scale.scale, norm2.bias[half:]]), shift),
    ]


def _attention_ties(prefix: str, mha) -> list[Tie]:
    """BlockedAttention's forms of the input projection: whole, transposed, or query / key-value parts."""
    dim = mha.embed_dim
    scale = torch.ones(3 * dim, 1)
    scale[:dim] = (dim // mha.num_heads) ** -0.5
    weight, bias = mha.in_proj_weight * scale, mha.in_proj_bias * scale[:, 0]
    w_key, b_key = f"{prefix}.in_proj_weight", f"{prefix}.in_proj_bias"

    def weight_rows(rows: slice, transposed: bool):
        def put(value, state):
            value = value.reshape(value.shape[-2:])
            state[w_key][rows] = (value.t() if transposed else value) / scale[rows]
        return put

    def bias_rows(rows: slice):
        def put(value, state):
            state[b_key][rows] = value.reshape(-1) / scale[rows, 0]
        return put

    whole, query, key_value = slice(None), slice(0, dim), slice(dim, None)
    return [
        (weight, weight_rows(whole, False)),
        (weight.t(), weight_rows(whole, True)),
        (weight[query].t(), weight_rows(query, True)),
        (weight[key_value].t(), weight_rows(key_value, True)),
        (bias, bias_rows(whole)),
        (bias[query], bias_rows(query)),
        (bias[key_value], bias_rows(key_value)),
    ]


def ties(model: HTDemucs) -> list[Tie]:
    """Every function of the parameters that export.py's graph may hold as an initializer."""
    out: list[Tie] = []
    for prefix, module in model.named_modules():
        if type(module).__name__ == "DConv":
            for j, seq in enumerate(module.layers):
                out += _dconv_ties(f"{prefix}.layers.{j}", seq)
        elif isinstance(module, torch.nn.MultiheadAttention):
            out += _attention_ties(prefix, module)
        elif isinstance(module, torch.nn.Linear):  # read as MatMul by the transposed weight
            out.append((module.weight.t(), _transposed(f"{prefix}.weight")))
        elif isinstance(module, torch.nn.GroupNorm):  # read as Mul and Add (a DConv's second one is
            # folded into FoldedGlu: its ties above hold it, and these find nothing)
            out += [(module.weight, _put(f"{prefix}.weight")), (module.bias, _put(f"{prefix}.bias"))]
    if model.freq_emb is not None:
        # ScaledEmbedding's own scale is folded in; freq_emb_scale may be, or may stay a Mul of its own.
        for factor in (model.freq_emb.scale, model.freq_emb_scale * model.freq_emb.scale):
            out.append(((factor * model.freq_emb.embedding.weight).t()[None, :, :, None],
                        lambda v, s, f=factor: s["freq_emb.embedding.weight"].copy_(v.reshape(v.shape[1:3]).t() / f)))
    return out


def _match(value: np.ndarray, candidates: dict[str, np.ndarray]) -> list[str]:
    shape = tuple(d for d in value.shape if d != 1)
    return [name for name, init in candidates.items()
            if tuple(d for d in init.shape if d != 1) == shape
            and np.allclose(init.reshape(value.shape), value, rtol=1e-5, atol=0)]


def load(path: Path, kwargs: dict, sources: list[str], workdir: Path) -> HTDemucs:
    """An HTDemucs(sources, **kwargs) holding the weights of the export at `path`."""
    trained = initializers(path)
    model = HTDemucs(sources=sources, **kwargs).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)  # distinct, and never near 0
            p.mul_(torch.where(torch.rand(p.shape, generator=gen) < 0.5, -1.0, 1.0))
        probe = export_initializers(model, workdir)
    if {k: v.shape for k, v in probe.items()} != {k: v.shape for k, v in trained.items()}:
        sys.exit(f"{path} is not an export of this configuration ({kwargs})")
    state = {k: torch.full_like(v, math.nan) for k, v in model.state_dict().items()}
    for key in state:  # parameters the graph reads as they are
        if f"m.{key}" in trained:
            state[key].copy_(torch.from_numpy(trained[f"m.{key}"].copy()).reshape(state[key].shape))
    with torch.no_grad():
        for value, invert in ties(model):
            names = _match(value.numpy(), probe)
            if len(names) > 1:
                sys.exit(f"probe values are not distinct: {names}")
            if names:
                invert(torch.from_numpy(trained[names[0]].copy()).float(), state)
    missing = [k for k, v in state.items() if torch.isnan(v).any()]
    if missing:
        sys.exit(f"{path}: no initializer holds {missing[:5]}{'...' if len(missing) > 5 else ''}")
    model.load_state_dict(state)
    return model


def round_trip_error(model: HTDemucs, path: Path, workdir: Path) -> float:
    """Largest relative difference between the file's initializers and those of `model` exported again."""
    trained, again = initializers(path), export_initializers(model, workdir)
    return max(float(np.abs(again[k] - v).max() / max(np.abs(v).max(), 1e-30)) for k, v in trained.items())


def main() -> None:
    import argparse

    from train import onnx_checkpoint

    ap = argparse.ArgumentParser(description="read an export's weights back and check the round trip")
    ap.add_argument("onnx", type=Path, help="an export of train.py's architecture")
    onnx_checkpoint(ap.parse_args().onnx)


if __name__ == "__main__":
    main()
