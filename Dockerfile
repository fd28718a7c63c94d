# syntax=docker/dockerfile:1
#
# One image for every role of Reporting. The role is the first argument:
#   docker run IMAGE ingest --config /etc/reporting/reporting.toml
#   docker run IMAGE aggregator | api | migrate | config | up ...
# Kubernetes manifests (apps/base) pass the role in `args`; ENTRYPOINT stays fixed.
#
# Stage 1 builds the `reporting` binary. The rdkafka crate compiles librdkafka from
# source with the C toolchain (gcc, make, its own ./configure), so the builder needs
# build-essential, zlib1g-dev for compression and libssl-dev for SASL/SCRAM and TLS;
# CMake is not needed. The builder and the runtime are both Debian 12 (bookworm),
# so the glibc the binary links against is the one it runs with.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Copy only what the build reads, so edits to deployment files do not invalidate
# the build cache (.dockerignore keeps target/, .git/ and the deploy trees out too).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package reporting --bin reporting \
 && install -D -m 0755 target/release/reporting /out/reporting

# Stage 2: a small runtime with CA certificates (TLS to managed Kafka/PostgreSQL)
# and the shared libraries librdkafka links dynamically (OpenSSL, zlib).
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 reporting \
 && useradd --system --uid 10001 --gid reporting --home-dir /var/lib/reporting \
      --create-home --shell /usr/sbin/nologin reporting
COPY --from=builder /out/reporting /usr/local/bin/reporting
# Numeric user so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
WORKDIR /var/lib/reporting
# ingest, api, admin (/healthz /readyz /metrics). The binary listens on loopback unless told otherwise; a
# container must listen on every interface to be reachable.
ENV REPORTING__INGEST__LISTEN=0.0.0.0:8080 \
    REPORTING__API__LISTEN=0.0.0.0:8081 \
    REPORTING__ADMIN__LISTEN=0.0.0.0:9464
EXPOSE 8080 8081 9464
ENTRYPOINT ["/usr/local/bin/reporting"]
CMD ["up"]
