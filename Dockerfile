# syntax=docker/dockerfile:1
# Perseus container image: a release build of perseus, genhash and encpass on Debian 12.
#
#   docker build -t perseus .
#   docker run -v /path/to/config.json:/etc/perseus/config.json:ro -p 5433:5433 -p 5000:5000 perseus
#
# The image carries config.example.json as /etc/perseus/config.json only so it has a
# config to start with: mount the real one over it (or use PERSEUS_* variables).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and build artefacts between builds; the binaries
# are copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/perseus target/release/genhash target/release/encpass /out/

FROM debian:bookworm-slim
# ca-certificates: TLS to AWS KMS and to destination databases.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system perseus \
    && useradd --system --gid perseus --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin perseus \
    && mkdir -p /etc/perseus
COPY --from=builder /out/perseus /out/genhash /out/encpass /usr/local/bin/
COPY config.example.json /etc/perseus/config.json
USER perseus
# 5433: PostgreSQL clients (ListenAddress); 5000: Prometheus metrics and /health (MetricsAddress).
EXPOSE 5433 5000
STOPSIGNAL SIGTERM
CMD ["perseus", "--config", "/etc/perseus/config.json"]
