#!/usr/bin/env bash
# Makes `cargo +nightly fuzz` work, for `make fuzz-smoke` and the long runs
# of docs/fuzzing.md: the nightly toolchain (libFuzzer's coverage
# instrumentation needs it) and cargo-fuzz at a pinned version.
#
# A missing nightly is installed with rustup (minimal profile). When that
# is impossible the script fails, saying what to install: `make test` sets
# no exception for fuzzing, as for every other tool it needs.
# FANOUT_FUZZ_TOOLCHAIN names another toolchain (a dated nightly, say).
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
toolchain=${FANOUT_FUZZ_TOOLCHAIN:-nightly}

fail() {
  echo "ensure-fuzz: $*" >&2
  if [ "${FANOUT_REQUIRE_TOOLS:-}" = 1 ]; then
    echo "ensure-fuzz: FANOUT_REQUIRE_TOOLS=1: fuzzing cannot be skipped here" >&2
  fi
  exit 1
}

command -v rustup >/dev/null 2>&1 \
  || fail "rustup is needed for the $toolchain toolchain (https://rustup.rs)"
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  echo "ensure-fuzz: installing the $toolchain toolchain (minimal profile)" >&2
  rustup toolchain install "$toolchain" --profile minimal \
    || fail "the $toolchain toolchain is missing and could not be installed; run: rustup toolchain install $toolchain --profile minimal"
fi

installed=$(cargo fuzz --version 2>/dev/null | awk '{print $2}' || true)
if [ "$installed" != "$CARGO_FUZZ_VERSION" ]; then
  echo "ensure-fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (found: ${installed:-none}; ~2 min)" >&2
  # cargo-fuzz itself builds with the default toolchain; only the fuzz
  # targets need nightly.
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked \
    || fail "could not install cargo-fuzz $CARGO_FUZZ_VERSION (cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked)"
fi
