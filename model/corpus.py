#!/usr/bin/env python3
"""Render the stemsep ground-truth corpus: General MIDI songs → four stems and their exact sum.

Source songs are the General MIDI files of Debian's `openttd-openmsx` (GPL-2), rendered with `fluidsynth`
and the FluidR3 General MIDI soundfont (`fluid-soundfont-gm`). For training only, two more Debian packages
add 76 songs by other composers in other styles (`--sources`): the music of `freedoom` (BSD-3; the MIDI
lumps of its two WADs, named freedoom1_e1m1 and so on) and of `planetblupi-music-midi` (GPL-3;
planetblupi_music000...). Those are cut at EXTRA_SECONDS, since several loop for up to 29 minutes.
Each song's notes are routed to one stem:

  drums   MIDI channel 10 (0-based channel 9), whatever its program
  bass    programs 32-39 (the GM bass family), by the channel's program when the note starts
  vocals  the song's lead melodic part: the non-drum, non-bass channel that most often holds the highest
          sounding note among tonal programs (GM 1-112; sampled every 1/16 beat), preferring channels whose
          instrument no other channel plays (see lead_channel); the choice per song is printed and kept
          in manifest.json. The lead is re-voiced with LEAD_PROGRAM in every song, so that the stem keeps
          one timbre across songs, as real voices do (`--lead-program song` keeps each song's own)
  other   every other note

Every stem is rendered from the same merged MIDI stream with only the other stems' notes removed, so
tempo, controllers and program changes are identical across stems. The mixture is the exact float sum of
the four stems, scaled with them so its peak is -1 dBFS. Output is 44.1 kHz stereo float32 WAV:

  OUT/{train,test}/<song>/{mixture,drums,bass,other,vocals}.wav   and   OUT/manifest.json

Train and test are split by song, never by excerpt: TEST_SONGS below are held out (each has all four
stems); every held-out song is an openmsx song. Rendering is deterministic (no dither: fluidsynth
writes float samples).

Needs: apt-get install fluidsynth fluid-soundfont-gm openttd-openmsx (and freedoom planetblupi-music-midi
for the training-only songs); pip install mido numpy.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mido
import numpy as np

MIDI_DIR = Path("/usr/share/games/openttd/baseset/openmsx")
FREEDOOM_WADS = [Path(f"/usr/share/games/doom/freedoom{n}.wad") for n in (1, 2)]
BLUPI_DIR = Path("/usr/share/planetblupi/music")
# Where each source's songs come from: (Debian package, a path that exists once it is installed).
SOURCES = {
    "openmsx": ("openttd-openmsx", MIDI_DIR),
    "freedoom": ("freedoom", FREEDOOM_WADS[0]),
    "planetblupi": ("planetblupi-music-midi", BLUPI_DIR),
}
EXTRA_SECONDS = 240.0  # training-only songs are cut here (see the module docstring)
MIN_SECONDS = 20.0  # shorter jingles are left out
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 44100
STEMS = ["drums", "bass", "other", "vocals"]  # the model's source order
DRUM_CHANNEL = 9
BASS_PROGRAMS = range(32, 40)
# GM 113-128 are percussive and sound effects: never a lead, always "other".
LEAD_PROGRAMS = range(0, 112)
# GM "Voice Oohs" (0-based 53): every song's lead is played with it (see the module docstring).
LEAD_PROGRAM = 53
PEAK = 10 ** (-1 / 20)
SILENT_DBFS = -90.0  # a held-out stem quieter than this over the whole render is taken as absent
# Held-out songs: varied tempo, style and instrumentation, each with drums, bass, a lead and other parts.
TEST_SONGS = [
    "be_sharp_bw_redfarn", "midnight_snow_run", "say_what_redfarn", "the_fast_route",
    "ttsong_iii_imuh3", "ultimate_run",
]


def wad_midis(path: Path) -> dict[str, bytes]:
    """The music lumps (D_*) of a Doom WAD that are Standard MIDI files, by lump name without D_."""
    data = path.read_bytes()
    _, count, directory = struct.unpack_from("<4sii", data, 0)
    found = {}
    for i in range(count):
        pos, size, name = struct.unpack_from("<ii8s", data, directory + 16 * i)
        name = name.rstrip(b"\0").decode("ascii")
        if name.startswith("D_") and data[pos:pos + 4] == b"MThd":
            found[name[2:].lower()] = data[pos:pos + size]
    return found


def catalogue(sources: list[str]) -> dict[str, bytes]:
    """Every song of the given sources: name -> Standard MIDI file bytes."""
    songs = {}
    if "openmsx" in sources:
        songs.update({p.stem: p.read_bytes() for p in MIDI_DIR.glob("*.mid")})
    extra = {}
    if "freedoom" in sources:
        for n, wad in enumerate(FREEDOOM_WADS, 1):
            extra.update({f"freedoom{n}_{lump}": midi for lump, midi in wad_midis(wad).items()})
    if "planetblupi" in sources:
        extra.update({f"planetblupi_{p.stem}": p.read_bytes() for p in BLUPI_DIR.glob("*.mid")})
    songs.update({k: v for k, v in extra.items() if parse(v).length >= MIN_SECONDS})
    return dict(sorted(songs.items()))


def is_extra(song: str) -> bool:
    return song.startswith(("freedoom", "planetblupi_"))


def parse(midi: bytes) -> mido.MidiFile:
    return mido.MidiFile(file=io.BytesIO(midi))


def split_of(song: str) -> str:
    return "test" if song in TEST_SONGS else "train"


def merged_events(midi: mido.MidiFile) -> tuple[int, list[tuple[int, mido.Message]]]:
    """(ticks per beat, [(absolute tick, message)]) of every track merged in time order."""
    tick, events = 0, []
    for msg in mido.merge_tracks(midi.tracks):
        tick += msg.time
        events.append((tick, msg))
    return midi.ticks_per_beat, events


def note_spans(events) -> list[tuple[int, int, int, int, int]]:
    """[(start tick, end tick, channel, pitch, program at start)] of every sounded note."""
    program = [0] * 16
    open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}
    spans = []
    for tick, msg in events:
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            open_notes.setdefault((msg.channel, msg.note), []).append((tick, program[msg.channel]))
        elif msg.type in ("note_off", "note_on"):
            starts = open_notes.get((msg.channel, msg.note))
            if starts:
                start, prog = starts.pop(0)
                spans.append((start, tick, msg.channel, msg.note, prog))
    return spans


def base_stem(channel: int, program: int) -> str | None:
    if channel == DRUM_CHANNEL:
        return "drums"
    if program in BASS_PROGRAMS:
        return "bass"
    return None


def lead_channel(spans, ticks_per_beat: int) -> int | None:
    """The melodic channel that holds the highest sounding note most often (ties: lower channel), among
    the channels whose instruments no other channel plays, if any.

    Real vocals differ from the accompaniment in timbre. A lead played on the same instrument as a part
    left in "other" (a piano melody over piano chords) would make the stem a matter of pitch order, which
    no timbre tells apart, so such channels are passed over when another candidate exists."""
    melodic = [s for s in spans if base_stem(s[2], s[4]) is None and s[4] in LEAD_PROGRAMS and s[1] > s[0]]
    if not melodic:
        return None
    programs: dict[int, set[int]] = {}
    for s in spans:
        if base_stem(s[2], s[4]) is None:
            programs.setdefault(s[2], set()).add(s[4])
    distinct = [s for s in melodic
                if not any(programs[s[2]] & p for c, p in programs.items() if c != s[2])]
    melodic = distinct or melodic
    step = max(1, ticks_per_beat // 16)
    end = max(s[1] for s in melodic)
    top_pitch = np.full(end // step + 1, -1)
    top_channel = np.full(end // step + 1, -1)
    for start, stop, channel, pitch, _ in melodic:
        window = slice(-(-start // step), -(-stop // step))
        higher = top_pitch[window] < pitch
        top_pitch[window][higher] = pitch
        top_channel[window][higher] = channel
    counts = np.bincount(top_channel[top_channel >= 0], minlength=16)
    return int(np.argmax(counts))


def stem_midis(midi: mido.MidiFile, lead_program: int | None) -> tuple[dict[str, mido.MidiFile], dict]:
    """One type-0 MIDI file per stem, plus facts about the routing. The lead channel sounds `lead_program`
    throughout (None: the song's own programs); routing always follows the song's own programs."""
    ticks_per_beat, events = merged_events(midi)
    spans = note_spans(events)
    lead = lead_channel(spans, ticks_per_beat)
    revoice = lead is not None and lead_program is not None
    program = [0] * 16
    # A note-off goes to the stem its note-on went to, even if the program changed in between.
    sounding: dict[tuple[int, int], list[str]] = {}
    tracks = {stem: mido.MidiTrack() for stem in STEMS}
    if revoice:
        for track in tracks.values():
            track.append(mido.Message("program_change", channel=lead, program=lead_program, time=0))
    last_tick = {stem: 0 for stem in STEMS}
    notes = {stem: 0 for stem in STEMS}
    programs: dict[str, set[int]] = {stem: set() for stem in STEMS}
    for tick, msg in events:
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        if msg.type == "note_on" and msg.velocity > 0:
            stem = base_stem(msg.channel, program[msg.channel]) or (
                "vocals" if msg.channel == lead else "other")
            sounding.setdefault((msg.channel, msg.note), []).append(stem)
            notes[stem] += 1
            programs[stem].add(program[msg.channel])
            targets = [stem]
        elif msg.type in ("note_off", "note_on"):
            stack = sounding.get((msg.channel, msg.note))
            targets = [stack.pop(0)] if stack else []
        else:
            targets = STEMS  # tempo, controllers, program changes, end of track: everywhere
        if revoice and msg.type == "program_change" and msg.channel == lead and msg.program not in BASS_PROGRAMS:
            msg = msg.copy(program=lead_program)
        for stem in targets:
            tracks[stem].append(msg.copy(time=tick - last_tick[stem]))
            last_tick[stem] = tick
    files = {}
    for stem, track in tracks.items():
        midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
        midi.tracks.append(track)
        files[stem] = midi
    facts = {
        "lead_channel": None if lead is None else lead + 1,  # 1-based, as MIDI documents name channels
        "lead_program": lead_program,
        "notes": notes,
        "programs": {stem: sorted(p) for stem, p in programs.items()},
    }
    return files, facts


def render(midi: mido.MidiFile, workdir: Path, name: str) -> np.ndarray:
    """fluidsynth render as float32 [2, n]."""
    mid, raw = workdir / f"{name}.mid", workdir / f"{name}.raw"
    midi.save(mid)
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(SAMPLE_RATE), "-O", "float", "-T", "raw",
         "-F", str(raw), str(SOUNDFONT), str(mid)],
        check=True, stdout=subprocess.DEVNULL,
    )
    return np.fromfile(raw, dtype="<f4").reshape(-1, 2).T.copy()


def write_wav(path: Path, audio: np.ndarray) -> None:
    """IEEE-float WAV, interleaved: the format symphonia and every DAW read losslessly."""
    channels, frames = audio.shape
    data = np.ascontiguousarray(audio.T, dtype="<f4").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 3, channels, SAMPLE_RATE, SAMPLE_RATE * channels * 4,
                                    channels * 4, 32)
    path.write_bytes(header + b"data" + struct.pack("<I", len(data)) + data)


def read_wav(path: Path) -> np.ndarray:
    """What write_wav wrote, mapped rather than read (training samples excerpts from GBs of stems):
    float32 [frames, channels]."""
    with open(path, "rb") as f:
        header = f.read(44)
    channels = struct.unpack_from("<H", header, 22)[0]
    size = struct.unpack_from("<I", header, 40)[0]
    return np.memmap(path, dtype="<f4", mode="r", offset=44, shape=(size // 4 // channels, channels))


def render_song(song: str, midi: bytes, out: Path, start: float, seconds: float | None,
                lead_program: int | None) -> dict:
    files, facts = stem_midis(parse(midi), lead_program)
    if is_extra(song):
        seconds = min(seconds or EXTRA_SECONDS, EXTRA_SECONDS)
    with tempfile.TemporaryDirectory(prefix="stemsep-corpus-") as tmp:
        stems = {stem: render(stem_midi, Path(tmp), stem) for stem, stem_midi in files.items()}
    length = max(a.shape[1] for a in stems.values())
    stems = {k: np.pad(a, ((0, 0), (0, length - a.shape[1]))) for k, a in stems.items()}
    first = int(start * SAMPLE_RATE)
    last = length if seconds is None else min(length, first + int(seconds * SAMPLE_RATE))
    stems = {k: a[:, first:last] for k, a in stems.items()}
    mix = sum(stems[s].astype(np.float64) for s in STEMS)
    scale = PEAK / max(float(np.abs(mix).max()), 1e-9)
    stems = {k: (a * scale).astype(np.float32) for k, a in stems.items()}
    # The exact sum of the stems as stored (float32 each), rounded once.
    mixture = sum(stems[s].astype(np.float64) for s in STEMS).astype(np.float32)
    song_dir = out / split_of(song) / song
    song_dir.mkdir(parents=True, exist_ok=True)
    write_wav(song_dir / "mixture.wav", mixture)
    for stem, audio in stems.items():
        write_wav(song_dir / f"{stem}.wav", audio)
    rms = {k: round(20 * math.log10(max(float(np.sqrt(np.mean(a.astype(np.float64) ** 2))), 1e-12)), 1)
           for k, a in stems.items()}
    return {"song": song, "split": split_of(song), "seconds": round(mixture.shape[1] / SAMPLE_RATE, 2),
            "rms_dbfs": rms, **facts}


def lead_program_arg(value: str) -> int | None:
    if value == "song":
        return None
    if value.isdigit() and int(value) < 128:
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r} is neither a GM program 0-127 nor `song`")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, required=True, help="corpus directory")
    ap.add_argument("--songs", help="comma-separated song names (default: every song)")
    ap.add_argument("--split", choices=["train", "test", "all"], default="all", help="which songs to render")
    ap.add_argument("--start", type=float, default=0.0, help="excerpt start, seconds")
    ap.add_argument("--seconds", type=float, help="excerpt length, seconds (default: whole song)")
    ap.add_argument("--sources", default=",".join(SOURCES),
                    help=f"song sources, comma-separated (default: all of {', '.join(SOURCES)}; "
                         "--split test needs openmsx only)")
    ap.add_argument("--jobs", type=int, default=2, help="songs rendered in parallel")
    ap.add_argument("--lead-program", type=lead_program_arg, default=LEAD_PROGRAM, metavar="{0-127,song}",
                    help="the GM program (0-based) every song's lead is played with, or `song` for each song's "
                         f"own programs (default: {LEAD_PROGRAM}, Voice Oohs)")
    args = ap.parse_args()

    sources = ["openmsx"] if args.split == "test" else args.sources.split(",")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        sys.exit(f"unknown sources: {', '.join(unknown)} (known: {', '.join(SOURCES)})")
    for tool, hint in [("fluidsynth", "apt-get install fluidsynth")]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: {hint}")
    needed = [(SOUNDFONT, "fluid-soundfont-gm")] + [(SOURCES[s][1], SOURCES[s][0]) for s in sources]
    for path, package in needed:
        if not path.exists():
            sys.exit(f"{path} not found: apt-get install {package}")
    midis = catalogue(sources)
    songs = args.songs.split(",") if args.songs else list(midis)
    unknown = sorted(set(songs) - set(midis))
    if unknown:
        sys.exit(f"unknown songs: {', '.join(unknown)}")
    if args.split != "all":
        songs = [s for s in songs if split_of(s) == args.split]

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        render = functools.partial(render_song, out=args.out, start=args.start, seconds=args.seconds,
                                   lead_program=args.lead_program)
        rendered = list(pool.map(render, songs, [midis[s] for s in songs]))
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for facts in rendered:
        manifest[facts["song"]] = facts
        print(f"{facts['split']:5} {facts['song']:26} {facts['seconds']:7.1f} s  lead ch {facts['lead_channel']}"
              f" {facts['programs']['vocals']}  rms {facts['rms_dbfs']}")
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    # SDR against a silent reference says nothing (freedoom2_dm2ttl's empty bass scores -113 dB): a
    # held-out render must have every stem.
    silent = [f"{f['song']} {stem} ({db} dBFS)" for f in rendered if f["split"] == "test"
              for stem, db in f["rms_dbfs"].items() if db < SILENT_DBFS]
    if silent:
        sys.exit(f"held-out renders with a silent stem, which make eval cannot score: {', '.join(silent)}")


if __name__ == "__main__":
    main()
