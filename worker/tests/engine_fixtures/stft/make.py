"""Regenerates the STFT fixtures for worker/tests/engine_stft.rs from demucs itself.

Needs torch + demucs 4.1 (not needed by `cargo test`):  /work/pyenv/bin/python make.py
Small geometry (n_fft 256, hop 64, 2000-sample stereo segment) to keep the files small; the code
path is HTDemucs._spec / _ispec, which only read nfft and hop_length from the model.
"""
import json
from types import SimpleNamespace

import numpy as np
import torch
from demucs.htdemucs import HTDemucs

NFFT, HOP, T = 256, 64, 2000
rng = np.random.default_rng(7)
model = SimpleNamespace(nfft=NFFT, hop_length=HOP)

x = rng.standard_normal((1, 2, T)).astype(np.float32)
z = HTDemucs._spec(model, torch.from_numpy(x))                     # [1, 2, bins, frames] complex
spec = torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(1, 4, NFFT // 2, -1)

frames = spec.shape[-1]
y_spec = rng.standard_normal((1, 4, NFFT // 2, frames)).astype(np.float32)
zc = torch.view_as_complex(torch.from_numpy(y_spec).view(1, 2, 2, NFFT // 2, frames).permute(0, 1, 3, 4, 2).contiguous())
y = HTDemucs._ispec(model, zc, T)                                  # [1, 2, T]

x.astype("<f4").tofile("signal.f32")
spec.numpy().astype("<f4").tofile("spec.f32")
y_spec.astype("<f4").tofile("ispec_in.f32")
y.numpy().astype("<f4").tofile("ispec_out.f32")
json.dump({"n_fft": NFFT, "hop": HOP, "segment": T, "channels": 2, "bins": NFFT // 2, "frames": frames,
           "torch": torch.__version__}, open("meta.json", "w"), indent=1)
print("frames", frames)
