"""The action log under faults: a full disk under the state dir, SIGKILL of the process mid-write.

Guarantees checked (docs/reliability.md):
* every record in the log is whole JSON (no torn line, no line glued to a fragment), whatever fills the disk;
* an action whose record cannot be written does not run (``unavailable``, "the action log cannot be written");
* every effect that took place has a record, even when the process is killed in the middle of the call
  (the intent line is on disk first; the next ``Legs`` turns an intent without an outcome into an
  ``unfinished`` line, and ``agent-legs log`` shows it before that too).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent_legs._telemetry import read_log

FULL_DISK_CHILD = """
import json, os, shutil, sys
from pathlib import Path
from agent_legs import Legs

ws, st, out = Path({ws!r}), Path({st!r}), Path({out!r})
legs = Legs(workspace=ws, state_dir=st)
results = []
for i in range(12):  # a few actions with room to spare: the log works
    r = legs.run("files.write", {{"path": f"f{{i}}.txt", "content": f"{{i}}:" + "y" * 3000}})
    results.append([i, r.ok, r.error.type if r.error else None, r.error.message if r.error else None])
# Fill the disk, leaving a few kB (less than one line), then keep acting until well past full.
filler = st / "filler"
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"z" * 4096)
except OSError:
    pass
os.close(fd)
os.truncate(filler, max(0, filler.stat().st_size - 6000))
for i in range(12, 60):
    r = legs.run("files.write", {{"path": f"f{{i}}.txt", "content": f"{{i}}:" + "y" * 3000}})
    results.append([i, r.ok, r.error.type if r.error else None, r.error.message if r.error else None])
    if i == 40:
        filler.unlink()  # space again: the log works again and nothing before is lost
legs.close()
filler.unlink(missing_ok=True)
shutil.copytree(st, out)
print(json.dumps(results))
"""


def _every_line_whole(state: Path) -> list[str]:
    """Lines of the log and of the intent journals that are not whole JSON objects."""
    bad = []
    for p in [*state.glob("actions.jsonl*"), *state.glob("actions.pending/*.jsonl")]:
        if p.name.startswith("."):
            continue
        data = p.read_bytes()
        if data and not data.endswith(b"\n"):
            bad.append(f"{p.name}: ends without a newline: {data[-80:]!r}")
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    bad.append(f"{p.name}: {line[:80]!r}")
            except ValueError:
                bad.append(f"{p.name}: {line[:80]!r}")
    return bad


def test_full_disk_never_tears_a_record_and_never_runs_an_action_unrecorded(dirs, tmp_path, in_tmpfs) -> None:
    ws, _ = dirs
    state = tmp_path / "tmpfs-state"
    out = tmp_path / "state-copy"
    proc = in_tmpfs(FULL_DISK_CHILD.format(ws=str(ws), st=str(state / "st"), out=str(out)), state, 256 * 1024)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # no traceback per call (or at all)

    # Every record is whole JSON.
    assert _every_line_whole(out) == []

    # An action either ran and has a record, or failed closed and changed nothing.
    records = {}
    for e in read_log(out / "actions.jsonl"):
        records.setdefault(e.get("target"), []).append(e)
    ran = [i for i, ok, _, _ in results if ok]
    refused = [(i, t, m) for i, ok, t, m in results if not ok]
    assert ran and refused, results  # the disk did fill up, and there was room before and after
    for i, error_type, message in refused:
        assert error_type == "unavailable" and message.startswith("the action log cannot be written: "), message
        assert "no space left" in message, message
        assert not (ws / f"f{i}.txt").exists(), f"f{i}.txt was written although its action failed closed"
    for i in ran:
        assert (ws / f"f{i}.txt").exists()
        assert f"f{i}.txt" in records, f"f{i}.txt was written and has no record"
    for p in ws.iterdir():
        assert p.name in records, f"{p.name} exists and has no record"
    # Once there is room again, actions run and are logged whole again.
    assert all(ok for i, ok, _, _ in results if i > 41), results[41:]
    assert all(records[f"f{i}.txt"][-1]["outcome"] == "ok" for i in range(42, 60))


SIGKILL_CHILD = """
import sys
from agent_legs import Legs

legs = Legs(workspace={ws!r}, state_dir={st!r}, policy={{"files": {{"max_write_bytes": 30_000_000}}}})
payload = "x" * 20_000_000
print("ready", flush=True)
for j in range(1000):
    legs.run("files.write", {{"path": f"big-{{sys.argv[1]}}-{{j}}.txt", "content": payload}})
"""


def test_sigkill_during_20mb_writes_leaves_a_record_of_every_file(dirs, python_child, kill_child) -> None:
    ws, st = dirs
    code = SIGKILL_CHILD.format(ws=str(ws), st=str(st))
    kills = 0
    started = time.monotonic()
    while kills < 30 and time.monotonic() - started < 60:
        proc = python_child(code.replace("sys.argv[1]", repr(str(kills))))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05 + (kills % 7) * 0.06)  # a different point of the write each time
        kill_child(proc)
        kills += 1
    assert kills >= 5, kills

    files = sorted(p.name for p in ws.iterdir() if p.name.startswith("big-"))
    entries = list(read_log(st / "actions.jsonl"))
    targets = {e.get("target") for e in entries}
    assert files, "no write finished: nothing was tested"
    missing = [f for f in files if f not in targets]
    assert missing == [], f"{len(missing)} of {len(files)} files have no record after {kills} kills"
    assert _every_line_whole(st) == []
    # A line's size does not grow with the payload: 20 MB of content, a few kB of log.
    assert max(len(json.dumps(e)) for e in entries) < 8000
    # Unfinished actions of the dead processes are shown as such; a new Legs writes them into the log.
    unfinished = [e for e in entries if e["outcome"] == "unfinished"]
    assert unfinished and all("killed or crashed" in e["error"] for e in unfinished)
    from agent_legs import Legs

    Legs(workspace=ws, state_dir=st).close()
    logged = [json.loads(x) for x in (st / "actions.jsonl").read_text().splitlines() if x.strip()]
    assert {e["id"] for e in unfinished} <= {e["id"] for e in logged if e["outcome"] == "unfinished"}
    assert not list((st / "actions.pending").glob("*.jsonl")), "dead journals are removed once recovered"


PERMISSION_CHILD = """
import json, os
from pathlib import Path
from agent_legs import Legs

ws, st = Path({ws!r}), Path({st!r})
legs = Legs(workspace=ws, state_dir=st)
os.chmod(st, 0o500)  # the state dir can no longer be written (the journal is made at the first action)
r = legs.run("files.write", {{"path": "during.txt", "content": "x"}})
out = [[r.error.type, r.error.message, r.error.hint] if r.error else "ok"]
os.chmod(st, 0o700)
out.append(legs.run("files.write", {{"path": "after.txt", "content": "x"}}).ok)
legs.close()
print(json.dumps(out))
"""


def test_a_state_dir_without_write_permission_fails_actions_closed(dirs, python_child, no_dac_override) -> None:
    ws, st = dirs
    proc = python_child(PERMISSION_CHILD.format(ws=str(ws), st=str(st)), prefix=no_dac_override)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    during, after = json.loads(out.strip().splitlines()[-1])
    assert during[0] == "unavailable" and "permission denied [EACCES]" in during[1], during
    assert during[1].startswith("the action log cannot be written: ") and "Nothing was done" in during[2]
    assert not (ws / "during.txt").exists()
    assert after and (ws / "after.txt").exists()
    assert "Traceback" not in err, err[-3000:]
    assert [e["outcome"] for e in map(json.loads, (st / "actions.jsonl").read_text().splitlines())] == ["unavailable", "ok"]
