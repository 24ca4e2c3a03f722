#!/usr/bin/env bash
# Fetch the prebuilt OHIF viewer (the npm package @ohif/app, pinned) into a cache outside the
# repository and print its dist/ folder. The viewer test (tests/integration/test_ohif_viewer.py)
# calls this; run it by hand to warm the cache.
#
# usage: install-ohif.sh VERSION SHA512-INTEGRITY
# exit 0: printed the dist/ folder; exit 3: the npm registry cannot be reached (the test skips);
# any other failure (wrong checksum, missing dist/) is an error.
set -euo pipefail
version="${1:?usage: install-ohif.sh VERSION SHA512-INTEGRITY}"
integrity="${2:?usage: install-ohif.sh VERSION SHA512-INTEGRITY}"
cache="${LIVER_AGENT_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/liver-agent}"
target="$cache/ohif-$version"
if [ -f "$target/dist/index.html" ]; then
  echo "$target/dist"
  exit 0
fi
if ! command -v npm >/dev/null; then
  "$(dirname "$0")/../../deploy/install-system-packages.sh" npm
fi
if ! timeout 60 npm ping >/dev/null 2>&1; then
  echo "the npm registry cannot be reached (npm ping failed)" >&2
  exit 3
fi
mkdir -p "$cache"
work="$(mktemp -d "$cache/.ohif-$version.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && timeout 600 npm pack --silent "@ohif/app@$version" >/dev/null)
tarball="$work/ohif-app-$version.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$integrity" ]; then
  echo "@ohif/app@$version: checksum $actual, expected $integrity" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
test -f "$work/package/dist/index.html"
rm -rf "$target"
mv "$work/package" "$target"  # one rename: a reader never sees half a viewer
echo "$target/dist"
