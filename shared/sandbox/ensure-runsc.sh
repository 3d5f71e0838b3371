#!/usr/bin/env bash
# Installs gVisor's runsc (Debian package) and registers it with the local Docker engine as the
# runtime "runsc", for settings.code.runtime = "runsc". Idempotent. As root on Debian/Ubuntu it installs
# the package when missing, merges the runtime into /etc/docker/daemon.json (other keys are kept) and
# reloads dockerd with SIGHUP (running containers are not touched). Elsewhere it says what to do.
# --network=none: sandboxes have no network (--network none); without it runsc fails to start them.
# --host-uds=open: code may connect to a host unix socket mounted into it (policy.code.network = true:
# the socket to its egress proxy is its only way out); gVisor refuses them otherwise.
# AGENT_LEGS_SKIP_RUNSC=1 skips this step.
set -euo pipefail
[ -n "${AGENT_LEGS_SKIP_RUNSC:-}" ] && exit 0
conf="${AGENT_LEGS_DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "ensure-runsc: DOCKER_HOST=$DOCKER_HOST is a remote engine: register runsc on its host" >&2
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  if ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
    echo "ensure-runsc: runsc is not registered with Docker (optional: settings.code.runtime = \"runsc\");" \
         "as root: bash $0" >&2
  fi
  exit 0
fi
if [ ! -x /usr/bin/runsc ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-runsc: no apt-get here: install gVisor's runsc (https://gvisor.dev) to /usr/bin/runsc" >&2
    exit 1
  fi
  echo "ensure-runsc: installing runsc"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends runsc || { apt-get update -q && apt-get install -y -q --no-install-recommends runsc; }
fi
mkdir -p "$(dirname "$conf")"
changed="$(python3 - "$conf" <<'PY'
import json, os, sys
path = sys.argv[1]
want = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--host-uds=open"]}
try:
    with open(path) as f:
        conf = json.load(f)
except FileNotFoundError:
    conf = {}
if not isinstance(conf, dict):
    sys.exit(f"ensure-runsc: {path} is not a JSON object")
runtimes = conf.setdefault("runtimes", {})
if runtimes.get("runsc") == want:
    print("no")
    sys.exit(0)
runtimes["runsc"] = want
tmp = path + ".agent-legs-tmp"
with open(tmp, "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
print("yes")
PY
)"
registered() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }
if [ "$changed" = yes ] || ! registered; then
  if pid="$(pgrep -xo dockerd)"; then
    echo "ensure-runsc: registered runsc in $conf; reloading dockerd (SIGHUP)"
    kill -HUP "$pid"
    for _ in $(seq 1 20); do registered && break; sleep 0.5; done
  fi
fi
if pgrep -x dockerd >/dev/null 2>&1 && ! registered; then
  echo "ensure-runsc: dockerd did not pick up the runsc runtime from $conf (is it started with another --config-file?)" >&2
  exit 1
fi
echo "ensure-runsc: runsc is registered with Docker"
