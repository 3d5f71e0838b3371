#!/usr/bin/env bash
# Makes a Docker engine answer on DOCKER_HOST or /var/run/docker.sock. As root on Debian/Ubuntu it
# installs docker.io when missing and starts dockerd in the background when nothing answers (no
# systemd needed). Idempotent; fails loudly with the reason (and dockerd's log) otherwise.
# Once the engine answers, ensure-runsc.sh installs and registers gVisor's runsc (settings.code.runtime).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log=/var/log/agent-legs-dockerd.log
answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
up() { bash "$here/ensure-runsc.sh"; exit 0; }

if command -v docker >/dev/null 2>&1 && answers; then up; fi
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "ensure-docker: DOCKER_HOST=$DOCKER_HOST does not answer:" >&2
  docker version >&2 || true
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-docker: installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends docker.io
  else
    echo "ensure-docker: no Docker engine here; install docker.io (Debian/Ubuntu: sudo apt-get install -y" \
         "docker.io) or set DOCKER_HOST to a remote engine" >&2
    exit 1
  fi
fi
if [ "$(id -u)" != 0 ]; then
  if docker version 2>&1 | grep -qi "permission denied"; then
    echo "ensure-docker: dockerd is running but $(id -un) may not use /var/run/docker.sock:" \
         "add the user to the docker group (sudo usermod -aG docker $(id -un), then log in again)" >&2
    exit 1
  fi
  echo "ensure-docker: dockerd is installed but not running, and only root can start it here" \
       "(sudo bash $0, or start the docker service)" >&2
  exit 1
fi
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid  # left by a dockerd that died: it would refuse to start
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd in the background (log: $log)"
  # Not the terminal's width: ``docker top`` runs ps in dockerd's environment, which cuts lines at COLUMNS.
  nohup env -u COLUMNS -u LINES dockerd >"$log" 2>&1 &
fi
for _ in $(seq 1 60); do
  if answers; then echo "ensure-docker: dockerd is up"; up; fi
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; last log lines:" >&2
tail -n 30 "$log" >&2 || true
exit 1
