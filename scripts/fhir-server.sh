#!/usr/bin/env bash
# Install the real FHIR R4 server the FHIR tests run against (Medplum's FHIR router from the
# npm registry, with a Node.js 22 binary from the same registry; tests/support/medplum/) into
# a cache folder kept between runs: ${BATCHBRIDGE_CACHE:-~/.cache/batchbridge}/medplum-fhir-<key>,
# the key being a hash of package.json + package-lock.json. A no-op when that folder is complete.
# Used by `make test` (target fhir-server) and so by `.ci/run`; a test fixture, never shipped.
set -euo pipefail
cd "$(dirname "$0")/.."

src=tests/support/medplum
cache="${BATCHBRIDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/batchbridge}"
key=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)
dest="$cache/medplum-fhir-$key"
[ -f "$dest/.installed" ] && exit 0

if ! command -v npm >/dev/null 2>&1; then
    echo "warning: npm not found: the tests against the real FHIR server will be skipped" >&2
    echo "         (install Node.js and npm, then run: make fhir-server)" >&2
    [ -n "${CI:-}" ] && exit 1
    exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.medplum-fhir-XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$src/package.json" "$src/package-lock.json" "$work/"
echo "installing the FHIR test server (Medplum FHIR router) into $dest"
# --ignore-scripts: nothing here needs an install script; engine warnings are expected
# when the machine's Node.js is older than 22 (the Node.js 22 from npm runs the server).
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
touch "$work/.installed"
rm -rf "$dest"
mv "$work" "$dest"
trap - EXIT
# Older installs (another package-lock) are no longer used.
find "$cache" -maxdepth 1 -name 'medplum-fhir-*' ! -name "medplum-fhir-$key" -exec rm -rf {} +
