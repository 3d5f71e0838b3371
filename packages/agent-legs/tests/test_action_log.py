"""The action log as a write-ahead record: intent before effect, whole lines, bounded size, fail closed.

The full-disk and SIGKILL experiments are in integration_tests/faults/test_log.py; these are the
pieces, each against real files (and a real ``Legs``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from test_cli_log import json_lines, log_cli

from agent_legs import Legs
from agent_legs._telemetry import ActionLog, read_log


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_a_fragment_left_by_a_crash_never_swallows_the_next_line(tmp_path) -> None:
    path = tmp_path / "actions.jsonl"
    path.write_bytes(b'{"action":"files.write","outcome":"ok"}\n{"time":"2026-01-01T0')  # killed mid-write
    log = ActionLog(path)
    log.write({"action": "files.read", "outcome": "ok"})
    log.write({"action": "files.list", "outcome": "ok"})
    log.close()
    assert [e["action"] for e in read_log(path)] == ["files.write", "files.read", "files.list"]


def test_the_intent_is_on_disk_while_the_action_runs(dirs) -> None:
    ws, st = dirs
    seen: list[list[dict]] = []

    def approver(req) -> bool:  # runs before the handler; the intent is written after approval
        return True

    with Legs(workspace=ws, state_dir=st, approver=approver, policy={"require_approval": ["files.write"]}) as legs:
        original = legs._telemetry.journal.append_intent

        def spy(record_id, line):  # what a reader sees right after the intent, before the effect
            original(record_id, line)
            seen.append(list(read_log(st / "actions.jsonl")))
            assert not (ws / "a.txt").exists()

        legs._telemetry.journal.append_intent = spy
        r = legs.run("files.write", {"path": "a.txt", "content": "hello"}, call_id="c1")
    assert r.ok
    (during,) = seen
    assert [(e["action"], e["outcome"], e["call_id"], e["decision"]) for e in during] == [
        ("files.write", "running", "c1", "approved")
    ]
    after = list(read_log(st / "actions.jsonl"))
    assert [(e["outcome"], e["id"]) for e in after] == [("ok", during[0]["id"])]  # one action, one entry
    assert not list((st / "actions.pending").iterdir())  # the journal is removed at close


def test_an_action_whose_intent_cannot_be_written_does_not_run(dirs) -> None:
    ws, st = dirs
    (st / "actions.pending").write_text("not a directory")  # the journal cannot be created
    with Legs(workspace=ws, state_dir=st) as legs:
        r = legs.run("files.write", {"path": "a.txt", "content": "hello"})
        assert not r.ok and r.error.type == "unavailable" and not r.error.retryable
        assert r.error.message.startswith("the action log cannot be written: ")
        assert "did not run" in r.error.message and "Nothing was done" in r.error.hint
        assert str(st) not in r.error.message  # the model is not told where the state dir is
        assert not (ws / "a.txt").exists()
        denied = legs.run("email.send", {"to": ["a@example.com"], "subject": "s", "body": "b"})
        assert denied.error.type == "approval_denied"  # no effect possible: no intent needed, logged as before
    assert [e["outcome"] for e in _lines(st / "actions.jsonl")] == ["unavailable", "approval_denied"]


def test_too_many_open_files_fails_closed_with_a_clear_message_and_no_traceback(tmp_path) -> None:
    code = f"""
        import os, resource, json
        from agent_legs import Legs
        legs = Legs(workspace={str(tmp_path / "ws")!r}, state_dir={str(tmp_path / "st")!r})
        assert legs.run("files.write", {{"nope": 1}}).error.type == "invalid_input"  # the loop exists, no intent
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        r = legs.run("files.write", {{"path": "a.txt", "content": "x"}})
        for fd in held:
            os.close(fd)
        r2 = legs.run("files.write", {{"path": "b.txt", "content": "x"}})
        legs.close()
        print(json.dumps([r.error.type if r.error else "ok", r.error.message if r.error else "", r2.ok]))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_NOFILE, (256, 256)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    error_type, message, second_ok = json.loads(proc.stdout.strip().splitlines()[-1])
    assert error_type == "unavailable" and "too many open files" in message and "[EMFILE]" in message, message
    assert second_ok
    assert not (tmp_path / "ws/a.txt").exists() and (tmp_path / "ws/b.txt").exists()
    assert "Traceback" not in proc.stderr and proc.stderr.count("the action log cannot be written") == 1, proc.stderr


def test_a_file_size_limit_rolls_back_the_short_write(tmp_path) -> None:
    # RLIMIT_FSIZE makes the kernel write part of a line and then refuse (EFBIG), as a full disk does.
    path = tmp_path / "actions.jsonl"
    code = f"""
        import json, resource, signal
        from agent_legs._telemetry import ActionLog, ActionLogError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        log = ActionLog(__import__("pathlib").Path({str(path)!r}))
        log.write({{"n": 0, "pad": "a" * 100}})
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        errors = []
        for n in range(1, 20):
            try:
                log.write({{"n": n, "pad": "b" * 300}})
            except ActionLogError as exc:
                errors.append(str(exc))
        print(json.dumps(errors))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = json.loads(proc.stdout)
    assert errors and all("the file is too large [EFBIG]" in e for e in errors), errors
    data = path.read_bytes()
    assert data.endswith(b"\n")
    assert [e["n"] for e in map(json.loads, data.splitlines())] == [0, 1, 2]  # whole lines only


def test_large_arguments_are_logged_as_preview_size_and_hash_redacted_before_the_cut(dirs) -> None:
    ws, st = dirs
    secret = "s3cr3t-canary-value"
    content = "a" * 1015 + secret + "b" * 200_000  # the secret straddles the preview's end
    with Legs(workspace=ws, state_dir=st, secrets={"CANARY": secret}) as legs:
        assert legs.run("files.write", {"path": "big.txt", "content": content}).ok
    raw = (st / "actions.jsonl").read_text()
    (line,) = _lines(st / "actions.jsonl")
    assert len(raw) < 4000  # not 200 kB
    logged = line["arguments"]["content"]
    redacted = content.replace(secret, "[REDACTED:CANARY]")
    digest = hashlib.sha256(redacted.encode()).hexdigest()
    assert logged.startswith("a" * 1015 + "[REDACTED:CANARY]"[:9] + "...")
    assert f"[{len(redacted)} chars, {len(redacted)} bytes UTF-8, sha256 {digest}]" in logged
    assert "s3cr3t" not in raw and secret[:6] not in raw
    assert line["arguments"]["path"] == "big.txt"


def test_agent_legs_log_shows_running_and_unfinished_actions_and_a_new_legs_records_them(dirs) -> None:
    ws, st = dirs
    pending = st / "actions.pending"
    pending.mkdir()
    intent = {
        "time": "2026-01-01T00:00:00.000+00:00",
        "trace_id": None,
        "span_id": None,
        "action": "files.write",
        "session": "s",
        "call_id": "c9",
        "decision": "allow",
        "rule": None,
        "target": "x.txt",
        "pid": 1,
    }
    (pending / "1-dead.jsonl").write_text(
        json.dumps({"intent": "aaaa", **intent})
        + "\n"
        + json.dumps({"intent": "bbbb", **intent, "target": "y.txt"})
        + "\n"
        + json.dumps({"done": "bbbb"})
        + "\n"
    )
    live = pending / "2-live.jsonl"
    live.write_text(json.dumps({"intent": "cccc", **intent, "target": "z.txt"}) + "\n")
    with open(live, "rb") as held:  # its process is alive: it holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        shown = json_lines(log_cli(st, "--json").stdout)
        assert [(e["target"], e["outcome"]) for e in shown] == [("x.txt", "unfinished"), ("z.txt", "running")]
        assert "killed or crashed" in shown[0]["error"] and shown[0]["call_id"] == "c9"
        table = log_cli(st).stdout
        assert "unfinished" in table and "running" in table
        assert [e["target"] for e in json_lines(log_cli(st, "--failed", "--json").stdout)] == ["x.txt"]
        Legs(workspace=ws, state_dir=st).close()  # recovers the dead journal, leaves the live one
        assert [(e["target"], e["outcome"], e["id"]) for e in _lines(st / "actions.jsonl")] == [("x.txt", "unfinished", "aaaa")]
        assert sorted(p.name for p in pending.iterdir()) == ["2-live.jsonl"]
    assert [e["target"] for e in json_lines(log_cli(st, "--json").stdout)] == ["x.txt", "z.txt"]
    os.unlink(live)


def test_follow_shows_unfinished_actions_with_the_history(dirs) -> None:
    import threading

    from agent_legs._telemetry import follow_log

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st) as legs:
        assert legs.run("files.write", {"path": "a.txt", "content": "x"}).ok
    (st / "actions.pending").mkdir(exist_ok=True)
    intent = {
        "intent": "dddd",
        "time": "2026-01-01T00:00:00.000+00:00",
        "action": "files.write",
        "session": "s",
        "call_id": None,
        "decision": "allow",
        "target": "cut.txt",
    }
    (st / "actions.pending" / "3-dead.jsonl").write_text(json.dumps(intent) + "\n")
    stop = threading.Event()
    seen = []
    for e in follow_log(st / "actions.jsonl", poll_s=0.05, stop=stop):
        if e is None:
            stop.set()
            continue
        seen.append((e["target"], e["outcome"]))
    assert seen == [("a.txt", "ok"), ("cut.txt", "unfinished")]


def test_an_action_killed_between_its_outcome_and_done_lines_is_recorded_once(dirs) -> None:
    ws, st = dirs
    outcome = {
        "time": "2026-01-01T00:00:01.000+00:00",
        "action": "files.write",
        "session": "s",
        "decision": "allow",
        "outcome": "ok",
        "target": "k.txt",
        "id": "eeee",
    }
    (st / "actions.jsonl").write_text(json.dumps(outcome) + "\n")
    (st / "actions.pending").mkdir()
    intent = {k: v for k, v in outcome.items() if k not in ("outcome", "id")}
    (st / "actions.pending" / "4-dead.jsonl").write_text(json.dumps({"intent": "eeee", **intent}) + "\n")
    assert [(e["target"], e["outcome"]) for e in read_log(st / "actions.jsonl")] == [("k.txt", "ok")]
    Legs(workspace=ws, state_dir=st).close()
    assert [(e["target"], e["outcome"]) for e in _lines(st / "actions.jsonl")] == [("k.txt", "ok")]
    assert not list((st / "actions.pending").iterdir())
