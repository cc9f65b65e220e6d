"""The Demucs family as stemsep serves it: each pretrained name's bag (read from demucs' own
`demucs/remote/<name>.yaml`), each member's class and constructor kwargs (the exact architecture, for
`--random-init` exports and for the offline hub repository of `make model-check`), and the
stemsep model directory a bag becomes (`manifest.json` + one ONNX core per member).

The kwargs are those stored in the published checkpoints: htdemucs' were read from its checkpoint
(export.HTDEMUCS_KWARGS); its fine-tuned members (htdemucs_ft) and the six-source htdemucs_6s share that
configuration (only `sources` differs); hdemucs_mmi is HDemucs with the `hdemucs` section of demucs'
training configuration (conf/config.yaml) and the 10 s training segment of its grid (grids/mmi.py),
which `get_model` passes as `segment=4 * 10`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import demucs
import torch
import yaml

SOURCES_4 = ["drums", "bass", "other", "vocals"]
SOURCES_6 = ["drums", "bass", "other", "vocals", "guitar", "piano"]

HDEMUCS_MMI_KWARGS = dict(
    audio_channels=2, channels=48, channels_time=None, growth=2, nfft=4096, wiener_iters=0, end_iters=0,
    wiener_residual=False, cac=True, depth=6, rewrite=True, hybrid=True, hybrid_old=False, multi_freqs=[],
    multi_freqs_depth=3, freq_emb=0.2, emb_scale=10, emb_smooth=True, kernel_size=8, time_stride=2, stride=4,
    context=1, context_enc=0, norm_starts=4, norm_groups=4, dconv_mode=1, dconv_depth=2, dconv_comp=4,
    dconv_attn=4, dconv_lstm=4, dconv_init=1e-3, rescale=0.1, samplerate=44100, segment=40,
)

REMOTE = Path(demucs.__file__).parent / "remote"


@dataclass
class MemberSpec:
    """One member of a pretrained bag: its signature, class and constructor kwargs."""

    sig: str
    klass: str  # "demucs.htdemucs.HTDemucs" or "demucs.hdemucs.HDemucs"
    kwargs: dict


@dataclass
class BagSpec:
    """A pretrained name: its members, per-source weights and bag segment (None: each member's own)."""

    name: str
    members: list[MemberSpec]
    weights: list[list[float]] | None = None
    segment: float | None = None
    yaml_text: str = field(default="", repr=False)


def signatures(name: str) -> list[str]:
    """The members' checkpoint signatures of the pretrained bag `name`."""
    path = REMOTE / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"unknown model {name!r}: demucs {demucs.__version__} has no {path.name}")
    return list(yaml.safe_load(path.read_text())["models"])


def bag_spec(name: str) -> BagSpec:
    """The bag `name` as demucs 4.1.0's remote yaml describes it, with each member's architecture."""
    from export import HTDEMUCS_KWARGS  # the htdemucs configuration, defined next to its export

    path = REMOTE / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"unknown model {name!r}: demucs {demucs.__version__} has no {path.name}")
    text = path.read_text()
    bag = yaml.safe_load(text)
    sources = SOURCES_6 if name == "htdemucs_6s" else SOURCES_4
    members = []
    for sig in bag["models"]:
        if name.startswith("htdemucs"):
            members.append(MemberSpec(sig, "demucs.htdemucs.HTDemucs", dict(HTDEMUCS_KWARGS, sources=sources)))
        elif name == "hdemucs_mmi":
            members.append(MemberSpec(sig, "demucs.hdemucs.HDemucs", dict(HDEMUCS_MMI_KWARGS, sources=sources)))
        else:
            raise SystemExit(
                f"{name}: its members' architectures are not described here (model/README.md, 'The Demucs "
                "family', says which names are supported and why the others are not)")
    return BagSpec(name, members, bag.get("weights"), bag.get("segment"), text)


def build_member(spec: MemberSpec, seed: int) -> torch.nn.Module:
    """A member of `spec`'s architecture with seeded random weights (torch's own initialisation)."""
    import importlib

    module, cls = spec.klass.rsplit(".", 1)
    klass = getattr(importlib.import_module(module), cls)
    torch.manual_seed(seed)
    random.seed(seed)
    return klass(**spec.kwargs).eval()


def random_bag(spec: BagSpec, seed: int):
    """The bag of `spec` with random members (member k seeded with `seed + k`), as get_model builds it."""
    from demucs.apply import BagOfModels

    models = [build_member(m, seed + k) for k, m in enumerate(spec.members)]
    return BagOfModels(models, spec.weights, spec.segment).eval()


def _json_default(value):
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    raise TypeError(f"cannot encode {value!r}")


def write_hub_repo(spec: BagSpec, cache: Path, seed: int) -> Path:
    """Lays out `spec` as huggingface_hub caches a download of `adefossez/<repo>` (refs/main → a
    snapshot holding `<name>.yaml` and one `<sig>.safetensors` per member, each with its class and
    kwargs in the metadata, as demucs' `tools/export_hf.py` writes them), with random weights.

    With `HF_HUB_CACHE=<cache>` and `HF_HUB_OFFLINE=1`, `demucs.pretrained.get_model(name)` then loads
    exactly as it does after a real download. Returns the snapshot directory."""
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from safetensors.torch import save_file

    repo = f"models--{DEFAULT_NAMESPACE}--{hf_repo_name(spec.name)}"
    revision = "0" * 40
    snapshot = cache / repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (cache / repo / "refs").mkdir(parents=True, exist_ok=True)
    (cache / repo / "refs" / "main").write_text(revision)
    (snapshot / f"{spec.name}.yaml").write_text(spec.yaml_text)
    for k, member in enumerate(spec.members):
        model = build_member(member, seed + k)
        state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
        metadata = {
            "klass": member.klass,
            "args": json.dumps([]),
            "kwargs": json.dumps(member.kwargs, default=_json_default),
        }
        save_file(state, str(snapshot / f"{member.sig}.safetensors"), metadata=metadata)
    return snapshot


def write_manifest(out_dir: Path, name: str, version: str, weights_kind: str, bag, files: list[str]) -> dict:
    """`manifest.json` of a stemsep model directory for `bag` (a demucs BagOfModels), members in `files`."""
    sr = bag.samplerate
    manifest = {
        "format": 1,
        "name": name,
        "version": version,
        "weights": weights_kind,
        "sources": list(bag.sources),
        "sample_rate": sr,
        "channels": bag.audio_channels,
        "members": [
            # apply_model chunks a member at int(samplerate * segment), its segment after the bag's
            # override (BagOfModels sets it on every non-HTDemucs member, and on an HTDemucs one only if
            # shorter than its own).
            {"file": f, "segment_samples": int(sr * model.segment), "weights": [float(w) for w in ws]}
            for f, model, ws in zip(files, bag.models, bag.weights)
        ],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Lay out pretrained Demucs bags, with random weights of their exact "
                                             "architectures, as huggingface_hub caches a download (for make model-check).")
    ap.add_argument("names", nargs="+", help="pretrained names, e.g. htdemucs_ft")
    ap.add_argument("--hub", type=Path, required=True, help="the cache directory (HF_HUB_CACHE)")
    ap.add_argument("--seed", type=int, default=0, help="member k gets seed + k")
    args = ap.parse_args()
    for name in args.names:
        snapshot = write_hub_repo(bag_spec(name), args.hub, args.seed)
        print(f"{name}: {snapshot}")


if __name__ == "__main__":
    main()
