#!/usr/bin/env bash
# A real OTLP/HTTP receiver for the telemetry tests: arize-phoenix in its own virtualenv (it accepts
# OTLP at /v1/traces and returns the stored spans over its REST API). Jaeger, which users run,
# cannot be installed here; it ingests the same OTLP/HTTP. Idempotent.
set -euo pipefail
venv="${AGENT_LEGS_PHOENIX_VENV:-/opt/agent-legs-phoenix}"
if [ -x "$venv/bin/phoenix" ]; then exit 0; fi
echo "install-phoenix: creating $venv (about 1-2 minutes)"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "arize-phoenix>=12,<30"
