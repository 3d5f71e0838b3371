"""`agent-legs log`: the table, the filters, --json, rotated files read in order, and --follow in a real
subprocess that keeps every line while the writer rotates the file under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_legs import Legs
from agent_legs._cli import app
from agent_legs._telemetry import ActionLog, follow_log, read_log

runner = CliRunner()


def log_cli(state: Path, *args: str, width: int = 200):
    return runner.invoke(app, ["--state-dir", str(state), "log", *args], env={"COLUMNS": str(width)})


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def state(tmp_path) -> Path:
    """A state dir with six real calls in three sessions: ok, denied, invalid, not found."""
    st = tmp_path / "st"
    with Legs(workspace=tmp_path / "ws", state_dir=st) as legs:
        legs.run("files.write", {"path": "a.txt", "content": "x"}, session="alpha", call_id="call_a")
        legs.run("files.read", {"path": "../../etc/passwd"}, session="alpha")
        legs.run("files.read", {"path": "missing.txt"}, session="beta")
        legs.run("files.list", {}, session="beta")
        legs.run("files.write", {"nope": 1}, session="gamma")
        legs.run("files.read", {"path": "a.txt"}, session="gamma")
    return st


def test_table_has_the_columns_and_rows(state) -> None:
    r = log_cli(state)
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if line.startswith("time"))
    assert header.split() == ["time", "session", "action", "decision", "outcome", "duration", "trace", "target"]
    assert r.stdout.count("files.read") == 3 and "files.write" in r.stdout and "files.list" in r.stdout
    for text in ("alpha", "beta", "gamma", "denied", "not_found", "invalid_input", "a.txt", "../../etc/passwd"):
        assert text in r.stdout, text
    assert "escapes the workspace" in r.stdout  # the error under the target of a failed call
    entries = list(read_log(state / "actions.jsonl"))
    assert entries[0]["trace_id"][:8] in r.stdout and " ms" in r.stdout


def test_narrow_terminal_keeps_the_essentials(state) -> None:
    r = log_cli(state, width=80)
    assert r.exit_code == 0
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    assert "files.write" in r.stdout and "denied" in r.stdout


def test_filters_and_json(state) -> None:
    every = json_lines(log_cli(state, "--json").stdout)
    assert [e["session"] for e in every] == ["alpha", "alpha", "beta", "beta", "gamma", "gamma"]
    assert {"time", "trace_id", "span_id", "action", "session", "call_id", "decision", "outcome", "duration_ms", "error"} <= set(
        every[0]
    )
    failed = json_lines(log_cli(state, "--failed", "--json").stdout)
    assert [e["outcome"] for e in failed] == ["denied", "not_found", "invalid_input"]
    beta = json_lines(log_cli(state, "--session", "beta", "--json").stdout)
    assert [e["action"] for e in beta] == ["files.read", "files.list"]
    both = json_lines(log_cli(state, "--session", "alpha", "--failed", "--json").stdout)
    assert [e["outcome"] for e in both] == ["denied"]
    trace_id = every[3]["trace_id"]
    assert json_lines(log_cli(state, "--trace", trace_id, "--json").stdout) == [every[3]]
    assert json_lines(log_cli(state, "--trace", trace_id[:8].upper(), "--json").stdout) == [every[3]]
    assert json_lines(log_cli(state, "-n", "2", "--json").stdout) == every[-2:]
    r = log_cli(state, "--session", "beta")
    assert r.exit_code == 0 and "alpha" not in r.stdout and r.stdout.count("files.") == 2


def test_no_log_yet_and_no_match(tmp_path, state) -> None:
    r = log_cli(tmp_path / "empty")
    assert r.exit_code == 0 and "no action log yet" in r.output
    r = log_cli(state, "--session", "nobody")
    assert r.exit_code == 0 and "no matching calls" in r.output
    assert log_cli(state, "--session", "nobody", "--json").stdout == ""


def _write_rotating(
    path: Path, count: int, start: int = 0, max_bytes: int = 3000, backups: int = 1000, pause_every: int = 0
) -> None:
    log = ActionLog(path, max_bytes=max_bytes, backups=backups)
    try:
        for i in range(start, start + count):
            log.write(
                {
                    "time": "2026-01-01T00:00:00+00:00",
                    "trace_id": f"{i:032x}",
                    "action": "files.write",
                    "session": "s",
                    "decision": "allow",
                    "outcome": "ok",
                    "duration_ms": 1.0,
                    "i": i,
                    "pad": "x" * 60,
                }
            )
            if pause_every and i % pause_every == 0:
                time.sleep(0.01)
    finally:
        log.close()


def test_rotated_files_are_read_in_order(tmp_path) -> None:
    st = tmp_path / "st"
    st.mkdir()
    _write_rotating(st / "actions.jsonl", 400)
    assert len(list(st.glob("actions.jsonl.*"))) > 10  # past .9: numeric order, not text order
    assert [e["i"] for e in json_lines(log_cli(st, "--json").stdout)] == list(range(400))
    assert [e["i"] for e in json_lines(log_cli(st, "-n", "3", "--json").stdout)] == [397, 398, 399]
    assert log_cli(st).stdout.count("files.write") == 50  # the table: the last 50 by default


def test_torn_line_is_skipped(tmp_path) -> None:
    st = tmp_path / "st"
    st.mkdir()
    good = {"time": "2026-01-01T00:00:00+00:00", "action": "files.list", "session": "s", "outcome": "ok"}
    (st / "actions.jsonl").write_text(
        json.dumps(good) + "\n" + '{"time": "2026-01-01T00:0' + "\n" + json.dumps({**good, "action": "files.read"}) + "\n"
    )
    assert [e["action"] for e in json_lines(log_cli(st, "--json").stdout)] == ["files.list", "files.read"]


def test_follow_function_survives_fast_rotation(tmp_path) -> None:
    # Several rotations between two polls: the files rotated in between are read too, in order.
    path = tmp_path / "actions.jsonl"
    _write_rotating(path, 50)
    stop = threading.Event()
    got: list[int] = []
    markers = 0

    def consume() -> None:
        nonlocal markers
        for e in follow_log(path, poll_s=0.3, stop=stop):
            if e is None:
                markers += 1
            else:
                got.append(e["i"])

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.5)
    _write_rotating(path, 2000, start=50)  # ~60 rotations, most of them within one poll interval
    deadline = time.monotonic() + 10
    while len(got) < 2050 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(5)
    assert markers == 1
    assert got == list(range(2050))


def test_follow_subprocess_sees_new_lines_across_rotations(tmp_path) -> None:
    st = tmp_path / "st"
    st.mkdir()
    path = st / "actions.jsonl"
    _write_rotating(path, 30)  # history: only the last 3 are shown first
    env = {**os.environ, "AGENT_LEGS_STATE_DIR": str(st), "AGENT_LEGS_WORKSPACE": str(tmp_path / "ws")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_legs._cli", "log", "--follow", "--json", "-n", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    got: list[int] = []
    try:
        for _ in range(3):
            got.append(json.loads(proc.stdout.readline())["i"])
        assert got == [27, 28, 29]
        # A writer in this process rotates the file (small max_bytes) many times while the follower reads.
        writer = threading.Thread(target=_write_rotating, args=(path, 600), kwargs={"start": 30, "pause_every": 20})
        writer.start()
        for _ in range(600):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.poll() is not None else "follower closed its output"
            got.append(json.loads(line)["i"])
        writer.join()
    finally:
        proc.kill()
        proc.wait()
    assert got == [27, 28, 29, *range(30, 630)]
    assert len(list(st.glob("actions.jsonl.*"))) > 10


def test_follow_table_subprocess_with_real_calls(tmp_path) -> None:
    st, ws = tmp_path / "st", tmp_path / "ws"
    env = {**os.environ, "AGENT_LEGS_STATE_DIR": str(st), "AGENT_LEGS_WORKSPACE": str(ws), "COLUMNS": "200"}
    # Started before the log exists: it waits for it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_legs._cli", "log", "--follow", "--session", "live"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().split() == [
            "time",
            "session",
            "action",
            "decision",
            "outcome",
            "duration",
            "trace",
            "target",
        ]
        with Legs(workspace=ws, state_dir=st) as legs:
            legs.run("files.list", {}, session="other")
            r = legs.run("files.write", {"path": "live.txt", "content": "x"}, session="live")
        row = proc.stdout.readline()
        assert "files.write" in row and "live" in row and "ok" in row and r.trace_id[:8] in row
    finally:
        proc.kill()
        proc.wait()


def test_processes_sharing_a_log_lose_and_tear_nothing(tmp_path) -> None:
    # An agent and `agent-legs run` can share a state dir: each line is one O_APPEND write, and a
    # writer whose file was rotated by the other reopens the new one.
    path = tmp_path / "actions.jsonl"
    code = (
        "import sys; from pathlib import Path; from agent_legs._telemetry import ActionLog\n"
        "log = ActionLog(Path(sys.argv[1]), max_bytes=20000, backups=300)\n"
        "for i in range(400): log.write({'w': sys.argv[2], 'i': i, 'pad': 'y' * (50 + i % 7 * 300)})\n"
        "log.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(w)]) for w in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    # The log and its backups (the hidden lock file next to them holds the writers' rotation counter).
    raw = [line for p in sorted(tmp_path.glob("actions.jsonl*")) for line in p.read_text().splitlines()]
    assert all(json.loads(line) for line in raw)  # no torn or interleaved line
    entries = list(read_log(path))
    assert len(entries) == 1200
    for w in "012":
        assert [e["i"] for e in entries if e["w"] == w] == list(range(400))  # each writer's order kept
