# The extility server as a container image: built with cargo, run on Debian slim with QEMU,
# its block drivers (qemu-block-extra has rbd:), Ceph's client and the tenant-network tools.
#   docker build -t extility .
#   docker compose up        (docker-compose.yml: PostgreSQL and two nodes)

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Everything but what .dockerignore leaves out (build output, data, tests).
COPY . .
RUN cargo build --release --locked --bin extility \
    && cp target/release/extility /usr/local/bin/extility

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        qemu-system-x86 qemu-utils qemu-block-extra ceph-common \
        iproute2 nftables dnsmasq-base ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/extility /usr/local/bin/extility
# Volumes, VM directories, the SQLite database when no DATABASE_URL is given.
VOLUME /var/lib/extility
ENV EXTILITY_DATA_DIR=/var/lib/extility \
    EXTILITY_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["extility"]
CMD ["serve"]
