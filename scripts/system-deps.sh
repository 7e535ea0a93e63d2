#!/usr/bin/env bash
# Install the system programs the integration tests start (sshd, PostgreSQL, gpg, a headless
# Chromium for the workbench's browser tests, npm for the real FHIR server that
# scripts/fhir-server.sh installs) when missing.
# Used by `make test` and `.ci/run`; a no-op when everything is present.
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need+=(postgresql)
fi
# Debian's headless-only build (no X, smaller); Playwright drives it by path (tests/plugins/
# browser.py). A full `chromium` already installed serves as well.
if ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
    need+=(chromium-headless-shell)
fi
# npm fetches the FHIR test server and a Node.js 22 of its own (any Node.js runs npm).
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "warning: missing ${need[*]} and no root: integration tests will be skipped" >&2
        echo "         (install them with: sudo apt-get install ${need[*]})" >&2
        [ -n "${CI:-}" ] && exit 1
        exit 0
    fi
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
