#!/usr/bin/env bash
# The README's demo command: `bash shared/demo.sh [--model provider:name] [--no-inbox]`.
#
# On a fresh Debian/Ubuntu machine, as root, it sets up everything the demo uses: Python 3.11+ with
# venv, the Docker engine (started if nothing answers), Chromium, Dovecot and the sandbox image
# (shared/setup.sh), then the packages in .venv, then runs `agent-legs demo`. Not root, or not
# Debian/Ubuntu: it says what to install and still runs the demo, which shows what could not run.
# Re-runs are fast: nothing that exists is reinstalled or rebuilt (.venv carries a stamp of what
# was installed). --model openai:gpt-4o-mini also installs langchain-openai; set the provider's key.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "demo: $*" >&2; }
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${_apt_updated:-}" ]; then apt-get update -q >/dev/null; _apt_updated=1; fi
  apt-get install -y -q --no-install-recommends "$@" >/dev/null
}
py_ok() { command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

# -- Python 3.11+ ------------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
if ! py_ok "$PY"; then
  for candidate in python3.13 python3.12 python3.11; do
    if py_ok "$candidate"; then PY=$candidate; break; fi
  done
fi
if ! py_ok "$PY" && can_apt; then
  if ! command -v python3 >/dev/null 2>&1; then apt_install python3 python3-venv; PY=python3; fi
  if ! py_ok "$PY" && apt-cache show python3.11 >/dev/null 2>&1; then apt_install python3.11 python3.11-venv; PY=python3.11; fi
fi
if ! py_ok "$PY"; then
  say "Agent Legs needs Python 3.11 or newer (found: $("$PY" --version 2>&1 || echo 'no python3'))."
  say "install it (Debian 12, Ubuntu 24.04: apt-get install -y python3 python3-venv; Ubuntu 22.04:"
  say "apt-get install -y python3.11 python3.11-venv), or run with PYTHON=/path/to/python3.11"
  exit 1
fi

# -- the virtualenv (.venv) --------------------------------------------------------------------------
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  if ! "$PY" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if can_apt; then
      apt_install "python${version}-venv"
      "$PY" -m venv .venv
    else
      say "$PY cannot create a virtualenv: install python${version}-venv (Debian/Ubuntu: sudo apt-get install -y python${version}-venv)"
      exit 1
    fi
  fi
fi

# -- Python packages (skipped when the stamp says they are there) ------------------------------------
model=""
prev=""
for arg in "$@"; do
  case "$arg" in --model=*) model="${arg#--model=}" ;; esac
  if [ "$prev" = "--model" ]; then model="$arg"; fi
  prev="$arg"
done
provider_pkg=""
if [ -n "$model" ] && [ "${model#*:}" != "$model" ]; then
  provider="${model%%:*}"
  case "$provider" in
    azure_openai) provider_pkg=langchain-openai ;;
    bedrock|bedrock_converse) provider_pkg=langchain-aws ;;
    *) provider_pkg="langchain-${provider//_/-}" ;;
  esac
fi
# the demo is its own package (agent-legs-demo: the core with every extra, the LangChain adapter, LangChain)
packages=(-e packages/agent-legs -e packages/langchain-agent-legs -e packages/agent-legs-demo)
if [ -n "$provider_pkg" ]; then packages+=("$provider_pkg"); fi
stamp_value="$(cat packages/agent-legs/pyproject.toml packages/langchain-agent-legs/pyproject.toml \
  packages/agent-legs-demo/pyproject.toml | sha256sum | cut -c1-16) ${packages[*]}"
stamp=.venv/.agent-legs-demo-stamp
if [ ! -f "$stamp" ] || ! grep -qxF "$stamp_value" "$stamp"; then
  say "installing the Python packages into .venv (first run: about a minute)"
  .venv/bin/python -m pip install -q --disable-pip-version-check "${packages[@]}"
  echo "$stamp_value" >>"$stamp"
fi

# -- system components: Docker + sandbox image, Chromium, Dovecot ------------------------------------
if ! PATH="$PWD/.venv/bin:$PATH" AGENT_LEGS_SKIP_PHOENIX=1 bash shared/setup.sh; then
  say "some system components are missing (see above); the demo runs anyway: the agent gets a"
  say "structured error for what is unavailable and works around it. \`.venv/bin/agent-legs doctor\` checks them."
  if docker version >/dev/null 2>&1; then
    .venv/bin/agent-legs sandbox build || say "could not build the sandbox image (agent-legs sandbox build)"
  fi
fi

exec .venv/bin/agent-legs demo "$@"
