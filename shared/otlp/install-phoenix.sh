#!/usr/bin/env bash
# A real OTLP/HTTP receiver for the telemetry tests: arize-phoenix in its own virtualenv (it accepts
# OTLP at /v1/traces and returns the stored spans over its REST API). Jaeger, which users run,
# cannot be installed here; it ingests the same OTLP/HTTP. Phoenix has its own venv because its
# dependency tree (FastAPI, SQLAlchemy, grpcio, pandas...) must not pin what the project is tested with.
#
# Idempotent: does nothing when the venv is complete (the marker file is written last).
# Where: $AGENT_LEGS_PHOENIX_VENV, else /opt/agent-legs-phoenix when /opt is writable, else
# ${XDG_CACHE_HOME:-~/.cache}/agent-legs-phoenix (the test fixture looks in the same places).
# Measured: ~75 s with a warm pip cache, ~90 s cold; ~850 MB on disk.
set -euo pipefail

if [ -n "${AGENT_LEGS_PHOENIX_VENV:-}" ]; then
  venv="$AGENT_LEGS_PHOENIX_VENV"
elif [ -w /opt ] || [ -d /opt/agent-legs-phoenix ]; then
  venv=/opt/agent-legs-phoenix
else
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/agent-legs-phoenix"
fi
marker="$venv/.agent-legs-complete"
if [ -f "$marker" ] || { [ -x "$venv/bin/phoenix" ] && "$venv/bin/python" -c "import phoenix" 2>/dev/null; }; then
  touch "$marker" 2>/dev/null || true
  exit 0
fi

echo "install-phoenix: creating $venv (about 1.5 minutes)"
start=$(date +%s)
rm -rf "$venv"
python3 -m venv "$venv"
# pip's notices about this machine's unused local find-links are noise here.
"$venv/bin/pip" install -q --disable-pip-version-check "arize-phoenix>=12,<30" 2>&1 | grep -v "is ignored: it is neither" || true
"$venv/bin/python" -c "import phoenix" # fail loudly when the install did not work
touch "$marker"
echo "install-phoenix: done in $(( $(date +%s) - start )) s"
