#!/usr/bin/env bash
# Builds Sockudo, the second benchmark peer, once, into a cache outside the
# repository, and prints the binary's path on stdout (everything else goes
# to stderr). `make bench-compare` runs it; `make test` never does (the
# build takes about 10 minutes on 2 cores).
#
#   bench/peers/sockudo/build.sh            # build if missing; print the path
#   SOCKUDO_REBUILD=1 bench/peers/sockudo/build.sh
#
# The cache is ${FANOUT_PEER_CACHE:-$HOME/.cache/fanout-peers}; the binary
# lands in <cache>/sockudo-<version>/bin/sockudo, where fanout-bench looks
# for it. It is `cargo install sockudo --version <version> --locked` with
# the default features plus `redis` (README.md says why).
set -euo pipefail

# Keep in step with SOCKUDO_VERSION in bench/fanout-bench/src/deploy.rs.
VERSION=5.2.0
FEATURES=redis

cache=${FANOUT_PEER_CACHE:-${HOME:?HOME or FANOUT_PEER_CACHE must be set}/.cache/fanout-peers}
root="$cache/sockudo-$VERSION"
bin="$root/bin/sockudo"

if [ -x "$bin" ] && [ -z "${SOCKUDO_REBUILD:-}" ]; then
  echo "$bin"
  exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)

# Native build dependencies of its crates (aws-lc, protobuf code generation,
# OpenSSL): Debian's packages.
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  "$repo/.ci/apt-install.sh" "${missing[@]}" >&2
fi

mkdir -p "$cache"
echo "building sockudo $VERSION (features: default + $FEATURES) into $root; about 10 minutes" >&2
started=$(date +%s)
# A build directory of its own inside the cache: an interrupted build
# resumes where it stopped instead of starting over.
CARGO_TARGET_DIR="$cache/sockudo-$VERSION-build" \
  cargo install sockudo --version "$VERSION" --locked --features "$FEATURES" \
  --root "$root" --force 1>&2
rm -rf "$cache/sockudo-$VERSION-build"
echo "built in $(( $(date +%s) - started )) s: $("$bin" --version)" >&2
echo "$bin"
