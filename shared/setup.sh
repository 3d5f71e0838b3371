#!/usr/bin/env bash
# Installs and starts the system components Agent Legs' tests and demo use:
# Docker engine (+ the sandbox image, and gVisor's runsc registered as a runtime), Chromium, Dovecot IMAP,
# mmdebstrap, iproute2.
# As root on Debian/Ubuntu it installs what is missing; elsewhere it says what to install.
# Re-runs are fast: nothing that exists is rebuilt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)  # the state store's tests

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]}) and re-run" >&2
    exit 1
  fi
fi

if [ -f "$here/sandbox/ensure-docker.sh" ]; then
  bash "$here/sandbox/ensure-docker.sh"
fi
if [ -f "$here/sandbox/build-offline.sh" ]; then
  bash "$here/sandbox/build-offline.sh"
fi
if [ -z "${AGENT_LEGS_SKIP_PHOENIX:-}" ]; then bash "$here/otlp/install-phoenix.sh"; fi  # tests only
echo "setup: system components ready"
