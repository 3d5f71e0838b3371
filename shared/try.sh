#!/usr/bin/env bash
# First look at Agent Legs: install into .venv, show the catalog, run a files action, show the log.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e packages/agent-legs
export AGENT_LEGS_WORKSPACE="${AGENT_LEGS_WORKSPACE:-$PWD/agent-workspace}"
export AGENT_LEGS_STATE_DIR="${AGENT_LEGS_STATE_DIR:-$PWD/.agent-legs-state}"
.venv/bin/agent-legs actions
.venv/bin/agent-legs run files.write path=hello.txt content="Hello from Agent Legs" || true
.venv/bin/agent-legs run files.read path=hello.txt || true
.venv/bin/agent-legs run files.read path=../../etc/passwd || true
.venv/bin/agent-legs log
