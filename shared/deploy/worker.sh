#!/bin/sh
# One Agent Legs worker (the command of shared/deploy/worker.Dockerfile): the allowed actions as MCP
# tools over streamable HTTP at http://<worker>:8765/mcp, every request with
# "Authorization: Bearer $AGENT_LEGS_MCP_TOKEN". The settings come from the AGENT_LEGS_* environment
# (compose.yaml), the policy from /etc/agent-legs/agent-legs.toml. A call that needs approval waits
# in the approval queue of the shared state store, so any worker (or `agent-legs approve` run
# anywhere with the same AGENT_LEGS_STATE__URL) can decide it.
set -eu
: "${AGENT_LEGS_MCP_TOKEN:?set AGENT_LEGS_MCP_TOKEN: the bearer token MCP clients must send}"
: "${AGENT_LEGS_WORKSPACE:?set AGENT_LEGS_WORKSPACE}"
: "${AGENT_LEGS_STATE_DIR:?set AGENT_LEGS_STATE_DIR}"
mkdir -p "$AGENT_LEGS_WORKSPACE" "$AGENT_LEGS_STATE_DIR"
chmod 700 "$AGENT_LEGS_STATE_DIR"
exec agent-legs --config "${WORKER_CONFIG:-/etc/agent-legs/agent-legs.toml}" \
  mcp --http "${MCP_LISTEN:-0.0.0.0:8765}" --allow-remote --approval-queue
