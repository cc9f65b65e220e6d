#!/usr/bin/env bash
# Installs the Debian packages the service and its tests run against, if missing.
# With the argument `corpus`: also what model/corpus.py renders with (make test's held-out excerpt,
# make eval); with `corpus-train`: that and the training-only songs' packages too (make corpus);
# with `browser`: Chromium and its WebDriver, for the web page's browser test (make test).
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v cc >/dev/null || need+=(build-essential)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if [ "${1:-}" = corpus ] || [ "${1:-}" = corpus-train ]; then
  # Synthesiser, General MIDI soundfont, MIDI songs. --no-install-recommends: fluidsynth recommends
  # qsynth, which pulls in Qt.
  command -v fluidsynth >/dev/null || need+=(fluidsynth)
  [ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
  [ -d /usr/share/games/openttd/baseset/openmsx ] || need+=(openttd-openmsx)
fi
if [ "${1:-}" = corpus-train ]; then
  [ -e /usr/share/games/doom/freedoom1.wad ] || need+=(freedoom)
  [ -d /usr/share/planetblupi/music ] || need+=(planetblupi-music-midi)
fi
if [ "${1:-}" = browser ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
fi
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
