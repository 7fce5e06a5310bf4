# fanout container image.
#
#   docker build -t fanout:0.1.0 .
#
# The tag is the version in Cargo.toml, which is the Helm chart's appVersion
# (helm/fanout/Chart.yaml): the chart's default image is fanout:<appVersion>.
# Push it to your registry and set image.repository in the chart's values.
#
# Runtime: debian:bookworm-slim as the non-root user 10001, binary at /fanout.
# Debian rather than distroless because the chart's default preStop hook runs
# `sleep` (the kubelet's own sleep action is only beta before Kubernetes
# 1.34), and ca-certificates is needed for rediss:// (rustls reads the system
# roots).

# ---- build -------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: this layer is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source edit.
# Cargo.toml is a workspace: cargo reads every member's manifest (and wants
# a target in each) even to build one package, so the manifests of the load
# tool and of the test support crate come along with empty sources. Only the
# server is ever built here.
COPY Cargo.toml Cargo.lock ./
COPY bench/fanout-bench/Cargo.toml bench/fanout-bench/
COPY bench/testkit/Cargo.toml bench/testkit/
RUN mkdir src bench/fanout-bench/src bench/testkit/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs bench/testkit/src/lib.rs \
 && echo 'fn main() {}' > bench/fanout-bench/src/main.rs \
 && cargo build --release --locked --bin fanout \
 && rm -rf src

# The real sources. Cargo decides what to rebuild by file mtimes, and COPY
# keeps the build context's (older) mtimes, so drop the placeholder crate's
# build results to make sure fanout itself is compiled from the real sources.
COPY src ./src
RUN rm -rf target/release/.fingerprint/fanout-* target/release/deps/fanout-* \
        target/release/deps/libfanout-* target/release/fanout \
 && cargo build --release --locked --bin fanout \
 && install -m 0755 target/release/fanout /fanout \
 && /fanout --version

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates is left unpinned on purpose: bookworm's security updates
# replace the exact version, and a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fanout \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin fanout

COPY --from=build /fanout /fanout

# Numeric, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001:10001

# 8080: WebSocket clients and the HTTP API (FANOUT_LISTEN).
# 9090: /metrics, /healthz, /readyz (FANOUT_INTERNAL_ADDR); keep it private.
EXPOSE 8080 9090

# fanout handles SIGTERM itself: /readyz fails, clients are closed at a paced
# rate over FANOUT_DRAIN_WINDOW, and it exits at most FANOUT_SHUTDOWN_GRACE
# after that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/fanout"]
CMD ["serve"]
