# syntax=docker/dockerfile:1
# One image, both binaries: hostport-controller and hostport-webhook (the default target);
# hostport-publisher, which runs nft, iptables and ssh, has an image of its own:
#   docker build --target publisher -t ghcr.io/hostport-allocator/hostport-publisher:0.1.0 .
FROM rust:1.91-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hostport-controller -p hostport-webhook -p hostport-publisher --bin hostport-controller --bin hostport-webhook --bin hostport-publisher

FROM debian:bookworm-slim AS publisher
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iptables openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --user-group --home-dir /home/publisher --create-home publisher
# ssh needs a passwd entry and a home for the uid it runs as (the edge Deployment runs as
# 65532); node mode runs as root with NET_ADMIN in the node's network namespace.
COPY --from=build /src/target/release/hostport-publisher /usr/local/bin/hostport-publisher
ENTRYPOINT ["/usr/local/bin/hostport-publisher"]

# Distroless: no shell, non-root (65532), nothing to write to (run with readOnlyRootFilesystem).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hostport-controller /usr/local/bin/hostport-controller
COPY --from=build /src/target/release/hostport-webhook /usr/local/bin/hostport-webhook
USER 65532:65532
# glibc raises its mmap threshold after the first large buffer is freed, so later 200 KB
# response buffers (a tenant's big annotations) come from the heap and its high-water mark
# stays: +50 % RSS in `cargo bench -p hostport-e2e --bench memory`. A fixed threshold returns them to
# the kernel: the same RSS within 3 % whatever objects weigh (BENCHMARKS.md).
ENV MALLOC_MMAP_THRESHOLD_=131072
ENTRYPOINT ["/usr/local/bin/hostport-controller"]
