"""``pip install agent-legs`` alone, into a fresh virtualenv (issue 14.5).

The core package is built from this checkout and installed with its dependencies from PyPI (the
default pip cache makes a second run quick): no extra. Then, in that virtualenv: files and http
work (http against a real server on 127.0.0.1), browser/code/email return ``unavailable`` with the
exact ``pip install 'agent-legs[<extra>]'`` hint, the adapters' helper offers only files and http,
``import agent_legs`` loads no family, and the ``agent-legs`` script prints the ``[cli]`` hint
instead of a traceback. About a minute (most of it pip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
from importlib import metadata

before = set(sys.modules)
import agent_legs
light = sorted(m for m in set(sys.modules) - before if m.startswith(("agent_legs.actions", "pydantic", "opentelemetry")))
from agent_legs import Legs, offered_actions

url = sys.argv[1]
port = url.split(":")[2].split("/")[0]
policy = {"allow": ["*"], "require_approval": [], "network": {"allow_hosts": [f"127.0.0.1:{port}"]}}
out = {"light": light, "dists": sorted(d.metadata["Name"].lower() for d in metadata.distributions())}
with Legs(workspace="ws", state_dir="st", policy=policy) as legs:
    calls = {
        "files.write": {"path": "a.txt", "content": "hello"},
        "files.read": {"path": "a.txt"},
        "http.request": {"method": "GET", "url": url},
        "browser.navigate": {"url": url},
        "code.run": {"code": "print(1)"},
        "email.send": {"to": ["a@example.com"], "subject": "s", "body": "b"},
        "email.list": {},
    }
    out["results"] = {name: legs.run(name, args).model_dump(mode="json") for name, args in calls.items()}
    out["offered"] = sorted({s.family for s in offered_actions(legs)})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("core-only") / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    p = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(CORE)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert p.returncode == 0, f"pip install agent-legs failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    yield venv


def _env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("AGENT_LEGS_", "OTEL_", "VIRTUAL_ENV"))
    }


def test_core_alone_runs_files_and_http_and_says_how_to_add_the_rest(core_venv: Path, tmp_path: Path, http_server) -> None:
    p = subprocess.run(
        [str(core_venv / "bin" / "python"), "-c", SCRIPT, http_server.url("/json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.splitlines()[-1])
    # the core's dependencies only: no extra, nor the demo's SMTP server
    assert not {"playwright", "docker", "aiosmtplib", "typer", "rich", "aiosmtpd"} & set(out["dists"]), out["dists"]
    assert {"agent-legs", "pydantic", "aiohttp", "httpx", "opentelemetry-sdk"} <= set(out["dists"])
    assert out["light"] == [], "import agent_legs loaded more than its errors and version"

    results = out["results"]
    for name in ("files.write", "files.read", "http.request"):
        assert results[name]["ok"], results[name]
    assert "hello" in results["files.read"]["output"]
    assert http_server.requests and http_server.requests[-1].path == "/json"
    for name, extra in (("browser.navigate", "browser"), ("code.run", "code"), ("email.send", "email"), ("email.list", "email")):
        error = results[name]["error"]
        assert error["type"] == "unavailable", (name, error)
        assert f"pip install 'agent-legs[{extra}]'" in error["hint"], (name, error)
    assert out["offered"] == ["files", "http"]


def test_core_alone_cli_script_prints_the_cli_hint(core_venv: Path) -> None:
    p = subprocess.run([str(core_venv / "bin" / "agent-legs"), "--help"], capture_output=True, text=True, timeout=120, env=_env())
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert "pip install 'agent-legs[cli]'" in p.stderr
