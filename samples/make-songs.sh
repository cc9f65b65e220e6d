#!/usr/bin/env bash
# Makes the sample songs without copyright trouble: General MIDI songs from Debian's
# `openttd-openmsx` (GPL-2, free to redistribute) rendered by fluidsynth with the GM soundfont and
# encoded by lame. Writes samples/songs/<name>.mp3 and a short clip samples/songs/short-<name>.mp3.
#
# Deterministic (the same packages give byte-identical MP3s, so the same SHA-224 hashes) and
# idempotent (existing files are kept). The songs are generated on demand, never committed.
#
# Usage: samples/make-songs.sh [OUT_DIR]        (default: samples/songs next to this script)
# Env:   SHORT_SECONDS (default 20) — length of the short clips.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/songs}
SHORT_SECONDS=${SHORT_SECONDS:-20}
MIDI_DIR=/usr/share/games/openttd/baseset/openmsx
SOUNDFONT=/usr/share/sounds/sf2/FluidR3_GM.sf2
# A few minutes of music in different styles; about 1.5-3 MB of MP3 each, well under the 16 MiB
# request limit once base64-encoded.
SONGS=(tttheme2 boogi_marabi_redfarn city_blues_redfarn)

need=()
for pkg in fluidsynth fluid-soundfont-gm openttd-openmsx lame; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "make-songs: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for name in "${SONGS[@]}"; do
  full=$OUT/$name.mp3 short=$OUT/short-$name.mp3
  [ -s "$full" ] && [ -s "$short" ] && { echo "make-songs: $name exists, kept"; continue; }
  wav=$tmp/$name.wav
  # -n: no MIDI input, -i: not interactive; -F renders to a file faster than real time.
  fluidsynth -n -i -q -F "$wav" -r 44100 "$SOUNDFONT" "$MIDI_DIR/$name.mid" >/dev/null
  # Writes to a temporary name first so an interrupted run never leaves a truncated song behind.
  [ -s "$full" ] || { lame --quiet -b 128 "$wav" "$full.part" && mv "$full.part" "$full"; }
  if [ ! -s "$short" ]; then
    python3 - "$wav" "$tmp/short.wav" "$SHORT_SECONDS" <<'PY'
import sys, wave
src, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with wave.open(src, "rb") as r, wave.open(dst, "wb") as w:
    w.setparams(r.getparams())
    w.writeframes(r.readframes(int(seconds * r.getframerate())))
PY
    lame --quiet -b 128 "$tmp/short.wav" "$short.part" && mv "$short.part" "$short"
  fi
  echo "make-songs: wrote $full and $short"
done
