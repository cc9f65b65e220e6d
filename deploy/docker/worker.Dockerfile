# syntax=docker/dockerfile:1.7
# stemsep worker image, with the pretrained htdemucs export baked in at /models so pods never
# download weights. Build from the repository root (the whole workspace is the context):
#   docker build -f deploy/docker/worker.Dockerfile -t stemsep-worker .
# The model stage downloads the pretrained checkpoint once, at build time (it needs internet).
# BuildKit reads deploy/docker/worker.Dockerfile.dockerignore.

ARG RUST_VERSION=1.88
ARG DEBIAN_RELEASE=bookworm
ARG PYTHON_VERSION=3.11

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# aws-lc-sys (rustls' crypto) builds C; cmake keeps its build path the well-trodden one.
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p stemsep-worker --bin stemsep-worker \
    && install -D target/release/stemsep-worker /out/stemsep-worker

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS model
# CPU-only torch wheels: the CUDA ones are gigabytes and the export runs on the CPU.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG MODEL=htdemucs
WORKDIR /src
COPY model/ model/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --extra-index-url "${TORCH_INDEX}" -r model/requirements.txt
# Writes the model directory /models/<model>: manifest.json and one ONNX core (+ sidecar JSON) per
# member of its bag. MODEL may be any name make model takes (htdemucs_ft, htdemucs_6s, ...).
RUN python model/export.py --model "${MODEL}" --output "/models/${MODEL}"

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin stemsep
COPY --from=builder /out/stemsep-worker /usr/local/bin/stemsep-worker
COPY --from=model /models/ /models/
USER 10001:10001
ENV STEMSEP_MODEL_DIR=/models RUST_LOG=info
ENTRYPOINT ["/usr/local/bin/stemsep-worker"]
