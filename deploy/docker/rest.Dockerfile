# syntax=docker/dockerfile:1.7
# stemsep REST API image. Build from the repository root (the whole workspace is the context):
#   docker build -f deploy/docker/rest.Dockerfile -t stemsep-rest .
# BuildKit reads deploy/docker/rest.Dockerfile.dockerignore, which keeps data/, target/ and the
# sample songs out of the context.

ARG RUST_VERSION=1.88
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# aws-lc-sys (rustls' crypto) builds C; cmake keeps its build path the well-trodden one.
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep crates and build products across image builds; the binary is copied out of
# the cached target dir because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p stemsep-rest \
    && install -D target/release/stemsep-rest /out/stemsep-rest

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# CA certificates for TLS to Google Cloud Storage; nothing else is installed.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin stemsep
COPY --from=builder /out/stemsep-rest /usr/local/bin/stemsep-rest
USER 10001:10001
ENV STEMSEP_BIND=0.0.0.0:5000 RUST_LOG=info
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/stemsep-rest"]
