#!/usr/bin/env bash
# Fetch the prebuilt OHIF viewer (npm package @ohif/app, its dist/ folder) into .cache/ohif for the viewer tests.
# Idempotent: does nothing when the pinned version is already unpacked. OHIF itself is never committed.
set -euo pipefail
cd "$(dirname "$0")/.."

OHIF_VERSION=${OHIF_VERSION:-3.13.2}
CACHE_DIR=${OHIF_CACHE_DIR:-.cache/ohif}
target="$CACHE_DIR/$OHIF_VERSION"

if [[ -f "$target/dist/index.html" ]]; then
    echo "fetch_ohif: OHIF $OHIF_VERSION ready in $target/dist"
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "fetch_ohif: npm is not installed; install nodejs/npm to fetch the OHIF viewer" >&2
    exit 1
fi
mkdir -p "$CACHE_DIR"
work=$(mktemp -d "$CACHE_DIR/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetch_ohif: npm pack @ohif/app@$OHIF_VERSION"
tarball=$(cd "$work" && npm pack --silent "@ohif/app@$OHIF_VERSION" | tail -1)
tar -xzf "$work/$tarball" -C "$work" package/dist
rm -rf "$target"
mkdir -p "$target"
mv "$work/package/dist" "$target/dist"
echo "fetch_ohif: OHIF $OHIF_VERSION ready in $target/dist"
