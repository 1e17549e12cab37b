# syntax=docker/dockerfile:1
#
# studio-relay container image.
#
#   docker build -t studio-relay:0.1.0 .
#   docker run --rm -e TELAVOX_TOKEN=... -e STUDIO_RELAY__SINK__KIND=stdout studio-relay:0.1.0
#
# Stage 1 builds the release binary (rdkafka compiles its bundled librdkafka
# with cmake); stage 2 is a small Debian runtime with only the shared libraries
# the binary links against, running as uid 10001.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake pkg-config libssl-dev libsasl2-dev zlib1g-dev libzstd-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads: the manifest, the lock file and the sources
# (benches/ because Cargo.toml declares the bench target explicitly;
# tests/kit/ because it is a member of the workspace).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests/kit ./tests/kit

# The registry and target caches survive between builds (BuildKit); the
# binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin studio-relay \
 && install -D -m 0755 target/release/studio-relay /out/studio-relay \
 && /out/studio-relay --version

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

# Shared libraries of the binary (OpenSSL, SASL with its Kerberos plugin for
# GSSAPI, zstd, curl for OAUTHBEARER/OIDC in librdkafka),
# CA certificates for TLS to brokers, and curl for the HEALTHCHECK.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 libsasl2-2 libsasl2-modules-gssapi-mit libzstd1 libcurl4 curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 studio-relay \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin studio-relay \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/studio-relay \
 && install -d -m 0755 /etc/studio-relay

COPY --from=builder /out/studio-relay /usr/local/bin/studio-relay
COPY config/studio-relay.example.toml /etc/studio-relay/studio-relay.example.toml

# Metrics and probes must be reachable from outside the container. Every other
# setting comes from --config / STUDIO_RELAY_CONFIG or STUDIO_RELAY__* variables.
ENV STUDIO_RELAY__OPS__LISTEN=0.0.0.0:9464 \
    STUDIO_RELAY_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/studio-relay
VOLUME ["/var/lib/studio-relay"]
EXPOSE 9464

# SIGTERM drains in-flight events within relay.shutdown_deadline (20 s);
# a second signal exits at once.
STOPSIGNAL SIGTERM

# Liveness of `run`. `simulate` and `replay` serve no /healthz: their compose
# services and Kubernetes Jobs override or ignore this check.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS --max-time 2 http://127.0.0.1:9464/healthz >/dev/null || exit 1

ENTRYPOINT ["studio-relay"]
CMD ["run"]
