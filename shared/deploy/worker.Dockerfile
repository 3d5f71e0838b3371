# A small Agent Legs worker image: agent-legs[all] (every family's library, psycopg for PostgreSQL,
# the MCP server) and the worker script, running as an unprivileged user.
#
#   docker build -f shared/deploy/worker.Dockerfile -t agent-legs-worker shared/deploy
#
# It has no Docker engine and no Chromium: the sandbox and the browser reach remote engines
# (settings.code.docker_host, settings.browser.ws_endpoint; docs/deployment.md). PIP_SPEC pins a
# version or installs from a wheel house, e.g. --build-arg PIP_SPEC="agent-legs[all]==0.9.0".
FROM python:3.12-slim

ARG PIP_SPEC="agent-legs[all]"
RUN pip install --no-cache-dir "$PIP_SPEC" \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin agentlegs \
 && mkdir -p /srv/agent-legs/workspace /var/lib/agent-legs \
 && chown agentlegs:agentlegs /srv/agent-legs/workspace /var/lib/agent-legs \
 && chmod 700 /var/lib/agent-legs

COPY agent-legs.toml /etc/agent-legs/agent-legs.toml
COPY --chmod=0755 worker.sh /usr/local/bin/agent-legs-worker

USER agentlegs
WORKDIR /srv/agent-legs
ENV AGENT_LEGS_WORKSPACE=/srv/agent-legs/workspace \
    AGENT_LEGS_STATE_DIR=/var/lib/agent-legs
EXPOSE 8765
CMD ["agent-legs-worker"]
