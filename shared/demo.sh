#!/usr/bin/env bash
# The README's demo command: sets up what the demo needs on a fresh Debian/Ubuntu machine (as root:
# Docker engine, Chromium, the sandbox image; Python packages in .venv), then runs `agent-legs demo`.
# Re-runs are fast: nothing that exists is rebuilt. Pass --model provider:name to use a real model.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -e packages/agent-legs -e packages/langchain-agent-legs \
  "langchain>=1.0,<2"
PATH="$PWD/.venv/bin:$PATH" AGENT_LEGS_SKIP_PHOENIX=1 bash shared/setup.sh
exec .venv/bin/agent-legs demo "$@"
