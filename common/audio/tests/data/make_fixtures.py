"""Writes the compressed-input fixtures the tests decode: the same 3 s stereo chord at 44.1 kHz
as Ogg Vorbis (song.ogg), AAC in MP4 (song.m4a) and AAC in ADTS (song.aac).

We have no Vorbis or AAC encoder in Rust, so these are encoded once, here, and committed:
Vorbis with libvorbis through soundfile (ffmpeg's own Vorbis encoder ruins the second channel),
AAC with ffmpeg's encoder through PyAV (`pip install av soundfile numpy`):

    python common/audio/tests/data/make_fixtures.py common/audio/tests/data
"""

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile

RATE = 44_100
SECONDS = 3


def chord() -> np.ndarray:
    t = np.arange(RATE * SECONDS) / RATE
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
    right = 0.3 * np.sin(2 * np.pi * 277 * t) + 0.2 * np.sin(2 * np.pi * 415 * t)
    return np.stack([left, right]).astype(np.float32)


def write(path: Path, container: str, codec: str, samples: np.ndarray) -> None:
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=RATE, layout="stereo")
        stream.bit_rate = 96_000
        frame_size = 1024
        for start in range(0, samples.shape[1], frame_size):
            block = np.ascontiguousarray(samples[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = start
            frame.time_base = Fraction(1, RATE)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    dest = Path(sys.argv[1])
    samples = chord()
    soundfile.write(dest / "song.ogg", samples.T, RATE, format="OGG", subtype="VORBIS")
    write(dest / "song.m4a", "ipod", "aac", samples)
    write(dest / "song.aac", "adts", "aac", samples)


if __name__ == "__main__":
    main()
