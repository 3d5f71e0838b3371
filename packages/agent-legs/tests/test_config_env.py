"""One environment, one precedence, and configuration problems as messages.

``Legs()``, ``Legs.from_config`` and every ``agent-legs`` command read the same variables with the same
precedence: explicit arguments, then ``AGENT_LEGS_*``, then the config file, then the defaults. A bad
value anywhere is an ``AgentLegsError`` naming the key and where it came from; the CLI prints that one
line, exits 2 and writes nothing. Everything runs in fresh interpreters, as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "agent_legs._cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_LEGS_", "OTEL_"))}
    env["XDG_STATE_HOME"] = "/nonexistent-xdg-state"  # the default state dir must never be the one used
    env.update(extra)
    return env


def py(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def log_json(cwd: Path, env: dict[str, str], *args: str) -> list[dict]:
    p = cli([*args, "log", "--json"], cwd, env)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def test_legs_and_the_cli_read_the_same_environment(tmp_path: Path) -> None:
    env = clean_env(AGENT_LEGS_STATE_DIR=str(tmp_path / "st"), AGENT_LEGS_WORKSPACE=str(tmp_path / "ws"))
    p = py(
        "from agent_legs import Legs\n"
        "with Legs() as legs:\n"
        "    assert legs.run('files.write', {'path': 'a.txt', 'content': 'x'}, session='lib').ok\n"
        "    print(legs.workspace, legs.state_dir)",
        tmp_path,
        env,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(tmp_path / "ws"), str(tmp_path / "st")]
    assert (tmp_path / "ws" / "a.txt").read_text() == "x"
    assert [e["session"] for e in log_json(tmp_path, env)] == ["lib"]
    p = cli(["run", "files.read", "path=a.txt", "--session", "cli"], tmp_path, env)  # the same workspace
    assert p.returncode == 0 and p.stdout.strip() == "x", p.stderr
    assert [e["session"] for e in log_json(tmp_path, env)] == ["lib", "cli"]
    # Explicit arguments win over the environment.
    p = py(
        f"from agent_legs import Legs\nwith Legs(workspace={str(tmp_path / 'ws2')!r}, "
        f"state_dir={str(tmp_path / 'st2')!r}) as legs: print(legs.workspace, legs.state_dir)",
        tmp_path,
        env,
    )
    assert p.stdout.split() == [str(tmp_path / "ws2"), str(tmp_path / "st2")], p.stderr


def test_from_config_and_the_cli_agree_on_the_precedence(tmp_path: Path) -> None:
    (tmp_path / "agent-legs.toml").write_text(
        'workspace = "file-ws"\nstate_dir = "file-st"\n[settings.http]\nretries = 1\nuser_agent = "from-file"\n'
    )
    show = (
        "from agent_legs import Legs\n"
        "with Legs.from_config('agent-legs.toml') as legs:\n"
        "    legs.run('files.write', {'path': 'a.txt', 'content': 'x'}, session='lib')\n"
        "    print(legs.workspace, legs.state_dir, legs.settings.http.retries, legs.settings.http.user_agent)"
    )
    # The file alone.
    env = clean_env()
    p = py(show, tmp_path, env)
    assert p.stdout.split() == [str(tmp_path / "file-ws"), str(tmp_path / "file-st"), "1", "from-file"], p.stderr
    assert [e["session"] for e in log_json(tmp_path, env)] == ["lib"]  # ./agent-legs.toml, read by the CLI too
    # The environment over the file, for directories and settings alike; the rest of the file still applies.
    env = clean_env(AGENT_LEGS_STATE_DIR=str(tmp_path / "env-st"), AGENT_LEGS_HTTP__RETRIES="4")
    p = py(show, tmp_path, env)
    assert p.stdout.split() == [str(tmp_path / "file-ws"), str(tmp_path / "env-st"), "4", "from-file"], p.stderr
    assert [e["session"] for e in log_json(tmp_path, env)] == ["lib"]
    assert [e["session"] for e in log_json(tmp_path, env, "--state-dir", str(tmp_path / "file-st"))] == ["lib"]
    # Keyword arguments over both.
    p = py(
        "from agent_legs import Legs\n"
        f"with Legs.from_config('agent-legs.toml', state_dir={str(tmp_path / 'kw-st')!r}, "
        "settings={'http': {'retries': 7}}) as legs:\n"
        "    print(legs.state_dir, legs.settings.http.retries)",
        tmp_path,
        env,
    )
    assert p.stdout.split() == [str(tmp_path / "kw-st"), "7"], p.stderr


CULPRITS = [
    # (environment, config file text or None, --config name, expected message)
    (
        {"AGENT_LEGS_HTTP__RETRIES": "abc"},
        None,
        None,
        "settings.http.retries (from AGENT_LEGS_HTTP__RETRIES): Input should be a valid integer",
    ),
    ({"AGENT_LEGS_HTTP": "{not json"}, None, None, "settings.http (from AGENT_LEGS_HTTP): not valid JSON"),
    (
        {"AGENT_LEGS_CODE__POOL_SIZE": "-1"},
        None,
        None,
        "settings.code.pool_size (from AGENT_LEGS_CODE__POOL_SIZE): Input should be greater than or equal to 0",
    ),
    ({}, "x = [\n", "bad.toml", "config file bad.toml is not valid TOML"),
    ({}, None, "missing.toml", "config file missing.toml does not exist"),
    ({}, "[settings.http]\nretriez = 3\n", "bad.toml", "settings.http.retriez (in bad.toml): Extra inputs"),
    ({}, "[policy]\nallow = 5\n", "bad.toml", "policy.allow (in bad.toml): Input should be a valid list"),
    ({}, "workspaces = 'x'\n", "bad.toml", "bad.toml: unknown top-level keys ['workspaces']"),
    ({}, "state_dir = 5\n", "bad.toml", "state_dir (in bad.toml): expected a directory path string"),
]


@pytest.mark.parametrize(
    ("env", "text", "config", "message"), CULPRITS, ids=[c[3].split(":")[0].split(" (")[0] for c in CULPRITS]
)
@pytest.mark.parametrize("command", [["log"], ["doctor"], ["run", "files.list"], ["sandbox", "build"]])
def test_cli_names_the_culprit_and_writes_nothing(tmp_path: Path, env, text, config, message, command) -> None:
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    if text is not None:
        (run_dir / config).write_text(text)
    environ = clean_env(AGENT_LEGS_STATE_DIR=str(tmp_path / "st"), AGENT_LEGS_WORKSPACE=str(tmp_path / "ws"), **env)
    p = cli([*(["--config", config] if config else []), *command], run_dir, environ)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr
    assert message in p.stderr, p.stderr
    assert not (tmp_path / "st").exists() and not (tmp_path / "ws").exists()
    assert sorted(x.name for x in run_dir.iterdir()) == ([config] if text is not None else [])


def test_a_directory_that_is_a_file_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    (tmp_path / "st").write_text("not a directory")
    env = clean_env(AGENT_LEGS_STATE_DIR=str(tmp_path / "st"), AGENT_LEGS_WORKSPACE=str(tmp_path / "ws"))
    p = cli(["run", "files.write", "path=a.txt", "content=x"], tmp_path, env)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith(
        f"error: state_dir (from AGENT_LEGS_STATE_DIR): {tmp_path / 'st'} exists and is not a directory"
    ), p.stderr
    assert not (tmp_path / "ws").exists()  # the workspace was not created before the state dir failed


def test_the_library_raises_config_errors_naming_the_key(tmp_path: Path) -> None:
    env = clean_env(AGENT_LEGS_HTTP__RETRIES="abc")
    p = py(
        "from agent_legs import Legs, AgentLegsError, ConfigError\n"
        "try:\n"
        f"    Legs(workspace={str(tmp_path / 'ws')!r}, state_dir={str(tmp_path / 'st')!r})\n"
        "except ConfigError as exc:\n"
        "    print(isinstance(exc, AgentLegsError), exc)\n",
        tmp_path,
        env,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("True settings.http.retries (from AGENT_LEGS_HTTP__RETRIES): "), p.stdout
    assert not (tmp_path / "ws").exists() and not (tmp_path / "st").exists()
    p = py(
        "from agent_legs import Legs, ConfigError\n"
        "try:\n"
        "    Legs(policy={'allow': 'files.*', 'budgets': [{'actions': 'x', 'limit': 'many'}]})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n",
        tmp_path,
        clean_env(),
    )
    assert p.stdout.startswith("2 problems: policy.allow: Input should be a valid list"), (p.stdout, p.stderr)
    assert "policy.budgets.0.limit" in p.stdout


def test_doctor_as_a_library_reads_the_same_environment(tmp_path: Path) -> None:
    env = clean_env(
        AGENT_LEGS_STATE_DIR=str(tmp_path / "st"),
        AGENT_LEGS_WORKSPACE=str(tmp_path / "ws"),
        AGENT_LEGS_CODE__DOCKER_HOST="unix:///nonexistent/docker.sock",
    )
    p = py("from agent_legs._doctor import run_checks\nfor c in run_checks(): print(c.name, '|', c.detail)", tmp_path, env)
    assert p.returncode == 0, p.stderr
    assert f"workspace | {tmp_path / 'ws'} (will be created)" in p.stdout
    assert f"state dir | {tmp_path / 'st'} (will be created)" in p.stdout
    assert "unix:///nonexistent/docker.sock" in p.stdout
    p = py(
        "from agent_legs import ConfigError\nfrom agent_legs._doctor import run_checks\n"
        "try:\n    run_checks()\nexcept ConfigError as exc:\n    print(exc)",
        tmp_path,
        clean_env(AGENT_LEGS_HTTP__RETRIES="abc"),
    )
    assert p.stdout.startswith("settings.http.retries (from AGENT_LEGS_HTTP__RETRIES)"), (p.stdout, p.stderr)
