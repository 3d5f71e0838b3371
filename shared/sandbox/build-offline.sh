#!/usr/bin/env bash
# Builds the sandbox image (default agent-legs-sandbox:latest; --tag T) unless one of the same
# recipe exists (image label agent-legs.recipe). `docker build` of shared/sandbox/Dockerfile when
# its base image can be had, else offline: mmdebstrap bookworm | docker import (needs root).
# The recipe lives in one place, the stdlib-only build.py inside the package, run here as a plain
# script so this works before (or without) installing agent_legs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
script="$here/../../packages/agent-legs/src/agent_legs/actions/code/_sandbox/build.py"
if [ -f "$script" ]; then
  exec "${PYTHON:-python3}" "$script" "$@"
fi
exec "${PYTHON:-python3}" -m agent_legs.actions.code._sandbox.build "$@"  # not beside the repo: the installed package
