# tsstore in a container: `docker build -t tsstore .`, then
#   docker run -d -v tsstore-data:/data -p 21080:21080 --name tsstore tsstore
# (README "Docker"). The image is the static musl binary and an empty data
# directory, nothing else: no shell, no libc, no package manager.
#
# The build stage compiles the binary from this source tree, natively on
# the platform being built (Docker Hub's Rust image exists for amd64, arm64
# and arm/v7), into /out. `make oci` builds the final stage (from its
# `FROM scratch` line to the end of this file) after a stage of the same
# name that copies a static binary of `make cross` there instead, so the ARM
# images need no emulation (packaging/oci/build.sh).

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS build
# musl-gcc compiles ring's C code against musl's headers; the release
# profile (Cargo.toml) links a static, stripped binary.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN set -eu; \
    case "$(dpkg --print-architecture)" in \
    amd64) target=x86_64-unknown-linux-musl ;; \
    arm64) target=aarch64-unknown-linux-musl ;; \
    armhf) target=armv7-unknown-linux-musleabihf ;; \
    *) echo "no musl target for $(dpkg --print-architecture)" >&2; exit 1 ;; \
    esac; \
    rustup target add "$target"; \
    env "CC_$(echo "$target" | tr - _)=musl-gcc" \
        cargo build --release --locked --bin tsstore --target "$target"; \
    mkdir -p /out/data; \
    install -m 0755 "target/$target/release/tsstore" /out/tsstore

FROM scratch
ARG VERSION=unknown
LABEL org.opencontainers.image.title="tsstore" \
      org.opencontainers.image.description="Embedded time-series store with a fixed storage footprint, for edge gateways" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/tsstore /usr/bin/tsstore
# The stores, the admin key and the Unix socket. A new named volume takes
# this directory's owner, so the server (not root) may write to it; a bind
# mount must belong to uid 10001.
COPY --from=build --chown=10001:10001 /out/data /data
# No CA bundle: outbound wss:// connections verify servers against the
# Mozilla roots built into the binary (webpki-roots).
ENV PATH=/usr/bin \
    TSSTORE_DATA_PATH=/data \
    TSSTORE_SOCKET_PATH=/data/tsstore.sock \
    TSSTORE_ADMIN_KEY_FILE=/data/.admin_key
USER 10001:10001
VOLUME /data
EXPOSE 21080
# SIGTERM starts the server's ordered shutdown (stop accepting, finish
# in-flight requests for up to 10 s, sync and close every store): give
# `docker stop` more than that (`-t 20`; compose.yaml sets 20 s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/bin/tsstore", "healthcheck"]
ENTRYPOINT ["/usr/bin/tsstore"]
CMD ["serve"]
