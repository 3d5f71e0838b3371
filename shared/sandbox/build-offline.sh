#!/usr/bin/env bash
# Builds the sandbox image (agent-legs-sandbox:latest) unless an up-to-date one exists.
# Uses `docker build` when a registry is reachable, else mmdebstrap | docker import (offline).
set -euo pipefail
exec "${PYTHON:-python3}" -m agent_legs._sandbox.build "$@"
