#!/usr/bin/env bash
# Makes a Docker engine answer on DOCKER_HOST or /var/run/docker.sock. Installs docker.io as root on
# Debian/Ubuntu when missing and starts dockerd in the background when nothing answers (no systemd).
set -euo pipefail
answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if answers; then exit 0; fi
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "ensure-docker: DOCKER_HOST=$DOCKER_HOST does not answer" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
  else
    echo "ensure-docker: no Docker engine; install docker.io (or set DOCKER_HOST to a remote engine)" >&2
    exit 1
  fi
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-docker: dockerd is installed but not running, and only root can start it here" >&2
  exit 1
fi
log=/var/log/agent-legs-dockerd.log
echo "ensure-docker: starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if answers; then echo "ensure-docker: dockerd is up"; exit 0; fi
  sleep 1
done
echo "ensure-docker: dockerd did not start within 60 s; last log lines:" >&2
tail -n 30 "$log" >&2 || true
exit 1
