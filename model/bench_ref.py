#!/usr/bin/env python3
"""Time one segment of a stemsep ONNX core on onnxruntime and of the same model on PyTorch demucs.

    python model/bench_ref.py ~/.cache/stemsep/models/htdemucs-random.onnx --threads 2

Prints one JSON object on stdout:
  {"onnxruntime_s": <seconds or null>, "pytorch_s": <seconds or null>, ..., "<engine>_error": <why null>}
With --song PCM (planar little-endian f32, --song-channels channels) it also separates that whole song once on
each engine: onnxruntime through `reference.separate` (numpy float32 host side; the core's share reported apart
as `onnxruntime_song_core_s`; and again with --threads segments side by side on one thread each,
`onnxruntime_song_side_by_side_s`) and PyTorch through demucs' own `Separator.separate_tensor` (shifts 0, overlap
0.25, as the worker runs it): `onnxruntime_song_s`, `pytorch_song_s`.
onnxruntime times the ONNX core alone (the host STFT/iSTFT are a few ms), on the given graph and on the same
weights exported in demucs' own layout; `onnxruntime_s` is the faster of the two. PyTorch times
`HTDemucs.forward` on one segment, i.e. what demucs' apply_model runs per chunk (core + its own STFT/iSTFT).
The PyTorch model is rebuilt from the file's `stemsep.version` (random-init/tiny seed, same weights as the
export) or, for a pretrained name, downloaded by demucs (needs internet). Either engine missing → null + reason.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from pathlib import Path


def member_file(path: Path) -> Path:
    """The core of a one-member model given as a file or as a model directory (its manifest's member):
    the references below run one core, so a bag is refused."""
    if not path.is_dir():
        return path
    members = json.loads((path / "manifest.json").read_text())["members"]
    if len(members) != 1:
        sys.exit(f"{path}: a bag of {len(members)} members; the references run one core")
    return path / members[0]["file"]


def read_meta(path: Path) -> dict[str, str]:
    sidecar = Path(str(path) + ".json")
    if sidecar.exists():
        return json.loads(sidecar.read_text())
    import onnx  # only when there is no sidecar

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def best_of(fn, runs: int) -> float:
    fn()  # warm-up: allocations, lazy initialisation, thread pools
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_onnxruntime(path: Path, meta: dict[str, str], threads: int, runs: int) -> float:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {}
    rng = np.random.default_rng(0)
    for inp in sess.get_inputs():
        feeds[inp.name] = rng.standard_normal(inp.shape).astype(np.float32)
    return best_of(lambda: sess.run(None, feeds), runs)


def rebuild(meta: dict[str, str]):
    """The export module and the PyTorch model behind an export (built once for both engines' benches)."""
    return _rebuild(meta.get("stemsep.version", ""), meta["stemsep.name"])


@functools.cache
def _rebuild(version: str, name: str):
    """Rebuilt from the seed in `version`, or downloaded by `name` (needs internet)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import export  # noqa: E402  (needs torch + demucs, imported only here)

    found = re.search(r":(random-init|tiny)-seed-(\d+)$", version)
    args = argparse.Namespace(model=None, random_init=False, tiny=False, tiny_variant="4s", checkpoint=None,
                              name=None, seed=0)
    if found:
        args.tiny = found.group(1) == "tiny"
        args.random_init = not args.tiny
        args.seed = int(found.group(2))
    else:
        # By name through demucs' get_model: the hub, or make model-check's offline copy of it
        # (HF_HUB_CACHE, HF_HUB_OFFLINE), which is where that export's weights came from.
        args.model = name
    bag = export.build_bag(args)[0]
    return export, bag.models[0]


def bench_onnxruntime_demucs_layout(meta: dict[str, str], threads: int, runs: int) -> float:
    """onnxruntime on the same weights exported in demucs' own layout (`export.py --demucs-layout`).

    The default export lays out the DConvs and attentions for tract (`RowDConv`, `FoldedGlu`,
    `BlockedAttention`); the figure that is fair to onnxruntime is its faster of the two graphs.
    """
    import tempfile

    import torch

    torch.set_num_threads(threads)
    export, model = rebuild(meta)
    mix, spec = export.example_inputs(model, 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demucs-layout.onnx"
        export.export_onnx(export.Core(model).eval(), mix, spec, path, meta)
        return bench_onnxruntime(path, meta, threads, runs)


def bench_pytorch(meta: dict[str, str], threads: int, runs: int) -> float:
    import torch

    torch.set_num_threads(threads)
    _, model = rebuild(meta)
    torch.use_deterministic_algorithms(False)
    seg = int(meta["stemsep.segment_samples"])
    mix = torch.randn(1, int(meta["stemsep.channels"]), seg, generator=torch.Generator().manual_seed(0))

    def run():
        with torch.no_grad():
            model(mix)

    return best_of(run, runs)


def read_song(path: Path, channels: int):
    import numpy as np

    return np.fromfile(path, dtype="<f4").reshape(channels, -1)


def bench_onnxruntime_song(path: Path, threads: int, wav) -> dict[str, float]:
    """Seconds for the whole song, and the core's share of them."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reference  # noqa: E402

    core = reference.Core(path, threads)
    contract = reference.Contract(core.meta)
    run, in_core = core.run, [0.0]

    def timed(mix, spec):
        t0 = time.perf_counter()
        out = run(mix, spec)
        in_core[0] += time.perf_counter() - t0
        return out

    core.run = timed
    t0 = time.perf_counter()
    reference.separate(contract, core, wav, dtype=np.float32)
    result = {"onnxruntime_song_s": round(time.perf_counter() - t0, 3), "onnxruntime_song_core_s": round(in_core[0], 3)}

    # Side by side, as our engine runs on 2 cores: `threads` segments at once, one intra-op thread each (one
    # session, run concurrently; onnxruntime releases the GIL while it computes).
    from concurrent.futures import ThreadPoolExecutor

    single = reference.Core(path, 1)
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        reference.separate(contract, single, wav, dtype=np.float32, pool=pool)
        result["onnxruntime_song_side_by_side_s"] = round(time.perf_counter() - t0, 3)
    return result


def bench_pytorch_song(meta: dict[str, str], threads: int, wav) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    export, model = rebuild(meta)
    separator = export.separator_for(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        separator.separate_tensor(torch.from_numpy(wav))
    return {"pytorch_song_s": round(time.perf_counter() - t0, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path, help="a one-member model: its .onnx, or its directory (manifest.json)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both engines")
    ap.add_argument("--runs", type=int, default=3,
                    help="timed runs after one warm-up; the best is reported (single onnxruntime runs vary 2x)")
    ap.add_argument("--skip-pytorch", action="store_true")
    ap.add_argument("--skip-demucs-layout", action="store_true",
                    help="time onnxruntime on the given graph only, not also on demucs' own layout")
    ap.add_argument("--song", type=Path, help="also separate this whole song (planar f32 LE) once per engine")
    ap.add_argument("--song-channels", type=int, default=2)
    args = ap.parse_args()
    args.onnx = member_file(args.onnx)

    meta = read_meta(args.onnx)
    result: dict = {"model": meta.get("stemsep.version"), "segment_samples": int(meta["stemsep.segment_samples"]),
                    "threads": args.threads, "onnxruntime_s": None, "pytorch_s": None}
    try:
        result["onnxruntime_given_graph_s"] = round(bench_onnxruntime(args.onnx, meta, args.threads, args.runs), 4)
        result["onnxruntime_s"] = result["onnxruntime_given_graph_s"]
    except ImportError as err:
        result["onnxruntime_error"] = f"onnxruntime unavailable: {err}"
    except Exception as err:  # report, keep the other engine's figure
        result["onnxruntime_error"] = f"{type(err).__name__}: {err}"
    if result["onnxruntime_s"] is not None and not args.skip_demucs_layout:
        try:
            own = round(bench_onnxruntime_demucs_layout(meta, args.threads, args.runs), 4)
            result["onnxruntime_demucs_layout_s"] = own
            result["onnxruntime_s"] = min(own, result["onnxruntime_s"])
        except Exception as err:
            result["onnxruntime_demucs_layout_error"] = f"{type(err).__name__}: {err}"
    if args.skip_pytorch:
        result["pytorch_error"] = "skipped (--skip-pytorch)"
    else:
        try:
            result["pytorch_s"] = round(bench_pytorch(meta, args.threads, args.runs), 4)
        except ImportError as err:
            result["pytorch_error"] = f"torch/demucs unavailable: {err}"
        except Exception as err:
            result["pytorch_error"] = f"{type(err).__name__}: {err}"
    if args.song:
        wav = read_song(args.song, args.song_channels)
        result["song_seconds"] = wav.shape[1] / int(meta["stemsep.sample_rate"])
        for engine, bench in [
            ("onnxruntime", lambda: bench_onnxruntime_song(args.onnx, args.threads, wav)),
            ("pytorch", lambda: bench_pytorch_song(meta, args.threads, wav)),
        ]:
            if result[f"{engine}_s"] is None:
                continue
            try:
                result.update(bench())
            except Exception as err:
                result[f"{engine}_song_error"] = f"{type(err).__name__}: {err}"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
