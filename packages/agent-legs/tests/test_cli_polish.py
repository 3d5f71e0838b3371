"""The CLI as a person uses it, each command in a fresh interpreter: the catalog keeps optional
arguments and whole sentences, flags look like flags, ``run`` can pass any string or JSON value,
``doctor``'s fixes are commands that work after ``pip install``, and a long action shows progress on a
terminal (and nowhere else)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from agent_legs._registry import REGISTRY

CLI = [sys.executable, "-m", "agent_legs._cli"]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_LEGS_", "OTEL_"))}
    env.update(AGENT_LEGS_WORKSPACE=str(tmp_path / "ws"), AGENT_LEGS_STATE_DIR=str(tmp_path / "st"), **extra)
    return env


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=tmp_path, env=env_for(tmp_path, **env), capture_output=True, text=True, timeout=120)


def test_actions_shows_optional_arguments_and_whole_sentences(tmp_path: Path) -> None:
    p = cli(tmp_path, "actions", COLUMNS="400")
    assert p.returncode == 0, p.stderr
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
        for line in p.stdout.splitlines()
        if line.startswith("│")
    }
    assert rows["files.read"][3] == "path, [offset], [limit]"
    assert rows["browser.content"][3] == "[selector], [format], [offset]"
    for spec in REGISTRY:
        description = rows[spec.name][4]
        assert description.endswith((".", ")")), (spec.name, description)  # never cut mid-sentence
        assert " ".join(spec.description.split()).startswith(description), spec.name
    assert rows["browser.click"][4].endswith("waits for the page to settle and returns the resulting page.")


@pytest.mark.parametrize("command", [["actions"], ["run"], ["log"], ["doctor"], ["sandbox", "build"], []])
def test_flags_do_not_look_like_they_take_a_value(tmp_path: Path, command: list[str]) -> None:
    p = cli(tmp_path, *command, "--help", COLUMNS="120")
    assert p.returncode == 0, p.stderr
    flags = [
        line
        for line in p.stdout.splitlines()
        if any(f in line for f in ("--json ", "--yes ", "--follow ", "--failed ", "--force ", "--help "))
    ]
    assert flags and not [line for line in flags if "<bool>" in line], p.stdout


def test_run_passes_strings_as_strings_and_json_with_colon_equals(tmp_path: Path) -> None:
    p = cli(tmp_path, "run", "files.write", "path=n.txt", "content=123")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "ws" / "n.txt").read_text() == "123"  # the string "123", not the number
    p = cli(tmp_path, "run", "files.write", "path=q.txt", 'content:="quoted \\" json"')
    assert p.returncode == 0 and (tmp_path / "ws" / "q.txt").read_text() == 'quoted " json', p.stderr
    # Schema-typed scalars still work as plain key=value (limit=1), JSON as key:=json (offset:=0).
    p = cli(tmp_path, "run", "files.read", "path=n.txt", "limit=1", "offset:=0", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["output"] == "123", p.stderr
    p = cli(tmp_path, "run", "files.write", "path=m.txt", "content:=123")  # a number where text is needed
    assert p.returncode == 1 and "content: Input should be a valid string" in p.stdout
    p = cli(tmp_path, "run", "http.request", "method=GET", "url=http://127.0.0.1:9/", 'headers={"A": "b"}')
    assert p.returncode == 1 and "key:=json" in p.stderr, p.stderr  # the hint for an object passed as a string
    entries = len((tmp_path / "st" / "actions.jsonl").read_text().splitlines())
    for bad in ("content:={x", "novalue", "=x", ":=1"):
        p = cli(tmp_path, "run", "files.write", "path=z.txt", bad)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr, (bad, p.stderr)
    assert not (tmp_path / "ws" / "z.txt").exists()
    assert len((tmp_path / "st" / "actions.jsonl").read_text().splitlines()) == entries  # nothing ran


def test_an_unknown_action_creates_nothing(tmp_path: Path) -> None:
    p = cli(tmp_path, "run", "files.raed", "path=a.txt")
    assert p.returncode == 2 and p.stderr.startswith("error: unknown action 'files.raed'"), p.stderr
    assert not (tmp_path / "ws").exists() and not (tmp_path / "st").exists()


def test_doctor_fixes_are_commands_a_pip_user_has(tmp_path: Path) -> None:
    p = cli(tmp_path, "doctor", "--json", AGENT_LEGS_CODE__DOCKER_HOST="unix:///nonexistent/docker.sock")
    checks = {c["name"]: c for c in map(json.loads, p.stdout.splitlines())}
    assert checks["docker"]["status"] == "fail" and "systemctl start docker" in checks["docker"]["fix"]
    assert checks["OTLP"]["status"] == "warn" and "jaegertracing/all-in-one" in checks["OTLP"]["fix"]
    p2 = cli(tmp_path, "doctor", "--json", AGENT_LEGS_TELEMETRY__OTLP_ENDPOINT="http://127.0.0.1:9")
    otlp = next(c for c in map(json.loads, p2.stdout.splitlines()) if c["name"] == "OTLP")
    assert otlp["status"] == "fail" and "jaegertracing/all-in-one" in otlp["fix"]
    for c in [*checks.values(), otlp]:
        assert "shared/" not in (c["fix"] or "") and ".sh" not in (c["fix"] or ""), c


def _run_on_a_terminal(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, bytes]:
    """Run with stderr on a pseudo-terminal (120x24); stdout stays a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        cmd, cwd=cwd, env={**env, "TERM": "xterm-256color"}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=60), out, b"".join(chunks)


def test_a_long_action_shows_a_spinner_on_a_terminal_only(tmp_path: Path, http_server) -> None:
    (tmp_path / "agent-legs.toml").write_text(f'[policy.network]\nallow_hosts = ["127.0.0.1:{http_server.port}"]\n')
    args = [*CLI, "run", "http.request", "method=GET", f"url={http_server.url('/slow?s=1')}"]
    code, out, terminal = _run_on_a_terminal(args, tmp_path, env_for(tmp_path))
    assert code == 0 and out.startswith("HTTP 200"), (out, terminal)
    assert b"running http.request..." in terminal
    # Not a terminal: no spinner, no control codes in what a pipe or a log file receives.
    p = subprocess.run(args, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("HTTP 200"), p.stderr
    assert "running" not in p.stderr and "\x1b" not in p.stderr
