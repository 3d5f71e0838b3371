"""The agent-legs command line, through typer's runner and a real subprocess for --follow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from typer.testing import CliRunner

from agent_legs._cli import app

runner = CliRunner()


def cli(tmp_path, *args: str, input: str | None = None):
    return runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "--state-dir", str(tmp_path / "st"), *args], input=input)


def test_actions_lists_the_catalog(tmp_path) -> None:
    r = cli(tmp_path, "actions", "--json")
    assert r.exit_code == 0
    names = {a["name"] for a in json.loads(r.stdout)}
    assert {"files.read", "http.request", "browser.navigate", "code.run", "email.send"} <= names


def test_run_prints_result_and_exit_code(tmp_path) -> None:
    r = cli(tmp_path, "run", "files.write", "path=notes/a.txt", "content=hello")
    assert r.exit_code == 0 and "Wrote notes/a.txt" in r.stdout
    r = cli(tmp_path, "run", "files.read", "path=notes/a.txt", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["output"] == "hello"
    r = cli(tmp_path, "run", "files.read", "path=../etc/passwd")
    assert r.exit_code == 1 and "escapes the workspace" in r.stdout
    r = cli(tmp_path, "run", "files.list", "recursive=true")  # JSON values are parsed
    assert r.exit_code == 0 and "notes/a.txt" in r.stdout
    r = cli(tmp_path, "run", "no.such")
    assert r.exit_code == 2 and "unknown action" in r.output


def test_run_scrubs_secrets_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AGENT_LEGS_SECRET_API_TOKEN", "canary-7f3a9c")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "leak.txt").write_text("token=canary-7f3a9c\n")
    r = cli(tmp_path, "run", "files.read", "path=leak.txt", "--json")
    assert r.exit_code == 0 and "token=" in r.stdout and "canary-7f3a9c" not in r.stdout
    assert "canary-7f3a9c" not in (tmp_path / "st" / "actions.jsonl").read_text()


def test_log_table_filters_and_json(tmp_path) -> None:
    cli(tmp_path, "run", "files.write", "path=a.txt", "content=x", "--session", "s1")
    cli(tmp_path, "run", "files.read", "path=../x", "--session", "s2")
    r = cli(tmp_path, "log")
    assert r.exit_code == 0 and "files.write" in r.stdout and "files.read" in r.stdout
    r = cli(tmp_path, "log", "--failed", "--json")
    entries = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["outcome"] for e in entries] == ["denied"]
    r = cli(tmp_path, "log", "--session", "s1", "--json")
    (entry,) = [json.loads(line) for line in r.stdout.splitlines()]
    r = cli(tmp_path, "log", "--trace", entry["trace_id"], "--json")
    assert [json.loads(line)["trace_id"] for line in r.stdout.splitlines()] == [entry["trace_id"]]


def test_log_follow_sees_new_lines(tmp_path) -> None:
    env = {**os.environ, "AGENT_LEGS_WORKSPACE": str(tmp_path / "ws"), "AGENT_LEGS_STATE_DIR": str(tmp_path / "st")}
    (tmp_path / "st").mkdir()
    (tmp_path / "st/actions.jsonl").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_legs._cli", "log", "--follow", "--json"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.5)
        cli(tmp_path, "run", "files.write", "path=f.txt", "content=x")
        line = proc.stdout.readline()
        assert json.loads(line)["action"] == "files.write"
    finally:
        proc.kill()
