# syntax=docker/dockerfile:1
# The `cartwheel` binary (node, edge, up) in a small Debian image; compose.yaml runs it.
#
#   docker build -t cartwheel .
#   docker run --rm cartwheel --help

# Build: the workspace's release binary. The cache mounts keep crates and incremental
# artifacts between builds; the binary is copied out of the cached target dir.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cartwheel \
    && cp target/release/cartwheel /usr/local/bin/cartwheel

# Run: CA certificates for TLS connections (MongoDB Atlas and the like), curl for the
# health checks of compose.yaml, no root.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/cartwheel /usr/local/bin/cartwheel
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin cartwheel
USER cartwheel
ENTRYPOINT ["cartwheel"]
CMD ["--help"]
