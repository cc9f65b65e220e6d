#!/usr/bin/env bash
# Installs the Debian packages the service and its tests run against, if missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v cc >/dev/null || need+=(build-essential)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
