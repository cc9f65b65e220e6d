#!/usr/bin/env bash
# `make run`: the whole service on one machine with embedded defaults — a private redis-server
# (AOF persistence) on a free port under $DATA/redis, local-directory storage under $DATA/storage,
# the REST API on $PORT and one worker. Ctrl-C stops everything.
set -euo pipefail
DATA=${1:-data}
PORT=${2:-5000}
BIN=${CARGO_TARGET_DIR:-target}/debug
mkdir -p "$DATA/redis" "$DATA/storage" "$DATA/models"
DATA=$(cd "$DATA" && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pids=()
redis_pid=
# Stop the service first and Redis last, so the worker can still hand its job back.
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  true
}
trap cleanup INT TERM EXIT

REDIS_PORT=$(free_port)
# Own session: a Ctrl-C on `make run` reaches the service, not Redis, which cleanup stops last.
setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA/redis" \
  --appendonly yes --appendfsync everysec --save '' --daemonize no \
  --logfile "$DATA/redis/redis.log" &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# The worker serves every model in STEMSEP_MODEL_DIR (`make model NAME=...` puts pretrained ones
# there); jobs without a model name get `htdemucs`. Without one, the demo model stands in for it.
MODEL_DIR=${STEMSEP_MODEL_DIR:-$DATA/models}
# A link an earlier run made into model/ is re-pointed, so a newly trained demo model takes over
# from tiny; a model the user put there (file, directory or link elsewhere) is never touched.
ours() { [ -L "$1" ] && case "$(readlink "$1")" in "$(pwd)"/model/*) true ;; *) false ;; esac; }
if [ -d "$MODEL_DIR/htdemucs" ]; then
  # A real htdemucs (make model): the demo links an earlier run made would only be shadowed by it.
  for link in "$MODEL_DIR/htdemucs.onnx" "$MODEL_DIR/htdemucs.onnx.json"; do
    if ours "$link"; then rm -f "$link"; fi
  done
elif [ ! -e "$MODEL_DIR/htdemucs.onnx" ] || ours "$MODEL_DIR/htdemucs.onnx"; then
  for f in model/default/htdemucs.onnx model/tiny/tiny.onnx; do
    if [ -e "$f" ]; then
      ln -sf "$(pwd)/$f" "$MODEL_DIR/htdemucs.onnx"
      [ -e "$f.json" ] && ln -sf "$(pwd)/$f.json" "$MODEL_DIR/htdemucs.onnx.json"
      case $f in
        */default/*) echo "make run: no pretrained model in $MODEL_DIR; using the demo model $f, trained on synthetic renders (see README: Models)" >&2 ;;
        *) echo "make run: no pretrained model in $MODEL_DIR; using $f, a random-weight test model whose stems are noise (see README: Models)" >&2 ;;
      esac
      break
    fi
  done
fi

export STEMSEP_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export STEMSEP_STORAGE=local STEMSEP_STORAGE_DIR="$DATA/storage" STEMSEP_MODEL_DIR="$MODEL_DIR"
export STEMSEP_BIND="0.0.0.0:$PORT" STEMSEP_PUBLIC_URL="${STEMSEP_PUBLIC_URL:-http://localhost:$PORT}"
export RUST_LOG=${RUST_LOG:-info}

"$BIN/stemsep-worker" &
pids+=($!)
"$BIN/stemsep-rest" &
pids+=($!)
echo "stemsep: API on http://localhost:$PORT  (redis on 127.0.0.1:$REDIS_PORT, data in $DATA)"
wait -n "${pids[@]}" "$redis_pid"
echo "stemsep: a process exited; stopping the rest" >&2
