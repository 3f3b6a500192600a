#!/usr/bin/env bash
# Starts tower-bearer's oidc-provider harness on 127.0.0.1:PORT, in the
# foreground.
#
#   tests/peers/oidc-provider/start.sh PORT
#
# Environment: AT_TTL RT_TTL ROTATE_RT AT_FORMAT QUIET (see README.md), and
#   PEER_WORKDIR    writable folder for the npm packages and a copy of the
#                   server (default: $TMPDIR/tower-bearer-oidc-peer)
#   PEER_TEST_DATA  folder with the registered client keys (default: the
#                   crate's tests/data)
#
# The repository itself is only read. The npm packages pinned by
# package-lock.json are installed once (`npm ci`, the only step that needs the
# npm registry) into PEER_WORKDIR/deps-<hash of package*.json>; the server
# files are copied next to them into app-<hash of the sources>. Both are built
# in a temporary folder and renamed into place, so concurrent starts never see
# half an install. Then this script execs node: its PID is the server's, and
# `kill PID` stops it. The server prints "READY oidc-provider issuer=..." once
# it accepts connections.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${1:-${PORT:-9400}}"
workdir="${PEER_WORKDIR:-${TMPDIR:-/tmp}/tower-bearer-oidc-peer}"
export PEER_TEST_DATA="${PEER_TEST_DATA:-$(cd "$here/../../data" && pwd)}"

fail() { echo "start.sh: $*" >&2; exit 1; }
for tool in node npm sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required to run the oidc-provider harness"
done
[ -f "$PEER_TEST_DATA/peer-pkjwt.public.jwks.json" ] \
  || fail "no peer-pkjwt.public.jwks.json in PEER_TEST_DATA=$PEER_TEST_DATA"

mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
cd "$here"
hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# Serialise installs into one work folder (an optimisation only: the renames
# below are what keep concurrent starts safe). fd 9 is closed before exec.
exec 9>"$workdir/.lock"
command -v flock >/dev/null 2>&1 && flock 9

# 1. The npm packages, exactly as locked.
deps="$workdir/deps-$(hash_of package.json package-lock.json)"
if [ ! -f "$deps/.installed" ]; then
  echo "start.sh: installing the harness's npm packages into $deps ..." >&2
  tmp="$(mktemp -d "$workdir/.deps.XXXXXX")"
  chmod 755 "$tmp"
  cp package.json package-lock.json "$tmp/"
  (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline >&2) \
    || { rm -rf "$tmp"; fail "npm ci failed"; }
  touch "$tmp/.installed"
  mv -T "$tmp" "$deps" 2>/dev/null || rm -rf "$tmp" # another start got there first
fi

# 2. The server's own files, beside node_modules so that node resolves the
#    packages from there.
sources=(server.mjs lib/*.mjs)
app="$deps/app-$(hash_of "${sources[@]}")"
if [ ! -d "$app" ]; then
  tmp="$(mktemp -d "$deps/.app.XXXXXX")"
  chmod 755 "$tmp"
  cp --parents "${sources[@]}" "$tmp/"
  mv -T "$tmp" "$app" 2>/dev/null || rm -rf "$tmp"
fi

exec 9>&-
cd "$app"
exec node server.mjs "$port"
