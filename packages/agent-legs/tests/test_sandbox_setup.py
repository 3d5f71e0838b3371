"""shared/sandbox/ensure-runsc.sh: installs and registers gVisor's runsc, merging into daemon.json.

The tests point the script at a daemon.json of their own; when it changes that file the script sends
the running dockerd a SIGHUP, which re-reads the real /etc/docker/daemon.json (running containers are
not touched), and then checks that the engine lists runsc."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "shared" / "sandbox" / "ensure-runsc.sh"
WANT = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--host-uds=open"]}


def run(conf: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENT_LEGS_DOCKER_DAEMON_JSON": str(conf)}
    env.pop("DOCKER_HOST", None)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(
    not os.environ.get("CI") and os.geteuid() != 0, reason="registering a runtime is root's job (the script says so otherwise)"
)
def test_registration_merges_into_an_existing_daemon_json(tmp_path: Path) -> None:
    conf = tmp_path / "daemon.json"
    conf.write_text(json.dumps({"log-level": "warn", "runtimes": {"other": {"path": "/usr/bin/other"}}}))
    r = run(conf)
    assert r.returncode == 0, r.stderr
    merged = json.loads(conf.read_text())
    assert merged["log-level"] == "warn" and merged["runtimes"]["other"] == {"path": "/usr/bin/other"}
    assert merged["runtimes"]["runsc"] == WANT
    assert os.access("/usr/bin/runsc", os.X_OK)
    r = run(conf)  # idempotent: nothing to change the second time
    assert r.returncode == 0 and "registered runsc in" not in r.stdout and json.loads(conf.read_text()) == merged


@pytest.mark.skipif(not os.environ.get("CI") and os.geteuid() != 0, reason="needs root")
def test_a_daemon_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "daemon.json"
    conf.write_text("[1, 2]")
    r = run(conf)
    assert r.returncode != 0 and "not a JSON object" in r.stderr
    assert conf.read_text() == "[1, 2]"
