#!/usr/bin/env python3
"""Writes the seed inputs the audio fuzzers started from: tiny real files of every kind the reader
takes (MP3 MPEG-1/2/2.5, mono and stereo, with and without ID3v2 and Info tags; WAV 8/16/24/32-bit
integer and 32/64-bit float, mono to 6 channels, WAVE_FORMAT_EXTENSIBLE; FLAC at several depths).

Run once by hand; the seeds and what the fuzzers grew from them are committed under
corpus/decode/ (and, as request bodies, under rest/fuzz/corpus/separate_body/).
Needs the `lameenc` package and the `flac` command.

    python3 seeds.py OUT_DIR [BODY_DIR]
"""

import base64
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import lameenc


def tone(frames, channels, rate):
    return [
        [0.5 * math.sin(2 * math.pi * (220 + 110 * c) * i / rate) for c in range(channels)]
        for i in range(frames)
    ]


def wav(frames, channels, rate, fmt, bits, extensible=False):
    rows = tone(frames, channels, rate)
    data = bytearray()
    for row in rows:
        for s in row:
            if fmt == 3:
                data += struct.pack("<f" if bits == 32 else "<d", s)
            elif bits == 8:
                data += struct.pack("<B", int(128 + s * 127))
            elif bits == 16:
                data += struct.pack("<h", int(s * 32767))
            elif bits == 24:
                data += int(s * 8388607).to_bytes(3, "little", signed=True)
            else:
                data += struct.pack("<i", int(s * 2147483647))
    align = channels * bits // 8
    if extensible:
        sub = (b"\x01\x00" if fmt == 1 else b"\x03\x00") + bytes.fromhex("000000001000800000aa00389b71")
        mask = (1 << channels) - 1
        fmt_chunk = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * align, align, bits, 22, bits, mask) + sub
    else:
        fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    body += b"data" + struct.pack("<I", len(data)) + bytes(data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp3(frames, channels, rate, kbps, id3=False):
    enc = lameenc.Encoder()
    enc.set_bit_rate(kbps)
    enc.set_in_sample_rate(rate)
    enc.set_channels(channels)
    enc.set_quality(7)
    pcm = b"".join(struct.pack("<h", int(s * 32767)) for row in tone(frames, channels, rate) for s in row)
    out = enc.encode(pcm) + enc.flush()
    if id3:
        frame = b"TIT2" + struct.pack(">I", 5) + b"\x00\x00" + b"\x00seed"
        size = len(frame)
        synchsafe = bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127])
        out = b"ID3\x03\x00\x00" + synchsafe + frame + out
    return out


def flac(frames, channels, rate, bits):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.wav"), os.path.join(tmp, "out.flac")
        with open(src, "wb") as f:
            f.write(wav(frames, channels, rate, 1, bits, extensible=channels > 2))
        subprocess.run(["flac", "-s", "-f", "--blocksize=256", "--no-padding", "-o", dst, src], check=True)
        with open(dst, "rb") as f:
            return f.read()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = {
        "mp3-44k-stereo-128.mp3": mp3(4000, 2, 44100, 128),
        "mp3-44k-mono-64-id3.mp3": mp3(3000, 1, 44100, 64, id3=True),
        "mp3-22k-stereo-32.mp3": mp3(3000, 2, 22050, 32),
        "mp3-8k-mono-8.mp3": mp3(2000, 1, 8000, 8),
        "wav-u8-mono.wav": wav(200, 1, 8000, 1, 8),
        "wav-s16-stereo.wav": wav(200, 2, 44100, 1, 16),
        "wav-s24-stereo.wav": wav(150, 2, 48000, 1, 24),
        "wav-s32-mono.wav": wav(100, 1, 96000, 1, 32),
        "wav-f32-stereo.wav": wav(100, 2, 44100, 3, 32),
        "wav-f64-mono.wav": wav(100, 1, 44100, 3, 64),
        "wav-s16-6ch-extensible.wav": wav(60, 6, 48000, 1, 16, extensible=True),
        "wav-f32-3ch-extensible.wav": wav(60, 3, 44100, 3, 32, extensible=True),
        "flac-16-stereo.flac": flac(600, 2, 44100, 16),
        "flac-24-mono.flac": flac(600, 1, 48000, 24),
        "flac-8-6ch.flac": flac(300, 6, 22050, 8),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    if len(sys.argv) > 2:
        bodies = sys.argv[2]
        os.makedirs(bodies, exist_ok=True)
        picks = ["mp3-8k-mono-8.mp3", "wav-s16-stereo.wav", "flac-8-6ch.flac"]
        for i, name in enumerate(picks):
            body = {"mp3": base64.b64encode(seeds[name]).decode()}
            if i == 1:
                body["model"] = "htdemucs_6s"
                body["callback"] = {"url": "http://localhost:5000/done", "data": {"id": 1}}
            with open(os.path.join(bodies, f"body-{i}.json"), "w") as f:
                json.dump(body, f)


if __name__ == "__main__":
    main()
