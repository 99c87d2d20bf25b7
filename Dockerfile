# The extility server as a container image, run on Debian slim with QEMU, its block drivers
# (qemu-block-extra has rbd:), Ceph's client and the tenant-network tools. Two ways to build it
# (README "Running in containers"):
#
#   docker build -t extility .
#       the binary built here with cargo, in rust:1-bookworm (needs a registry, and
#       BuildKit, which skips the prebuilt stage);
#   cargo build --release --locked --bin extility
#   podman build --target prebuilt -t extility .
#       the binary built on the host, which must be Debian 12 (bookworm: the same glibc and
#       libssl3 as the image); BINARY=target/debug/extility takes a debug build instead.
#
#   docker compose up        (docker-compose.yml: PostgreSQL and two nodes)

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        qemu-system-x86 qemu-utils qemu-block-extra ceph-common \
        iproute2 nftables dnsmasq-base ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
# Volumes, VM directories, the SQLite database when no DATABASE_URL is given.
VOLUME /var/lib/extility
ENV EXTILITY_DATA_DIR=/var/lib/extility \
    EXTILITY_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["extility"]
CMD ["serve"]

# The binary built on the host (.dockerignore lets these two through, and nothing else of
# target/). Before the build stage, so that a builder without BuildKit stops here too.
FROM runtime AS prebuilt
ARG BINARY=target/release/extility
COPY ${BINARY} /usr/local/bin/extility

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Everything but what .dockerignore leaves out (build output, data, tests).
COPY . .
RUN rm -rf target \
    && cargo build --release --locked --bin extility \
    && cp target/release/extility /usr/local/bin/extility

# The default target: the binary built from the sources above.
FROM runtime
COPY --from=build /usr/local/bin/extility /usr/local/bin/extility
