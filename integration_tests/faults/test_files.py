"""Faults under the files family: a process killed mid-write, and the host's resources running out.

Real faults only: a child process holding a ``Legs`` is killed with SIGKILL during a 20 MB write;
the workspace is a small tmpfs (in a private mount namespace, ``unshare -m``: nobody else sees it)
that fills up; the file-size and open-file limits are real ``setrlimit`` limits; permissions are
the kernel's, for a process that is not root. Each case checks what the model is told (a typed
error with a hint, never "internal error"), that no traceback is logged per call, and what is on
disk afterwards (the old content intact, no temporary files).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

TMP = ".agent-legs-tmp-"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TMP}*")]


# -- 22.2: a write killed half-way leaves a temp file; the next start sweeps it --------------------

WRITER = textwrap.dedent("""
    import sys
    from agent_legs import Legs

    ws, st = sys.argv[1], sys.argv[2]
    content = "x" * 20_000_000
    with Legs(workspace=ws, state_dir=st, policy={"files": {"max_write_bytes": 30_000_000}},
              settings={"telemetry": {"capture_content": False}}) as legs:
        print("ready", flush=True)
        i = 0
        while True:
            r = legs.run("files.write", {"path": f"big/{i % 3}.txt", "content": content})
            assert r.ok, r.output
            i += 1
""")


def test_sigkill_mid_write_leaves_temps_that_the_next_start_sweeps(tmp_path: Path) -> None:
    ws, st = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    st.mkdir()
    (ws / "big").mkdir()
    leftovers: list[Path] = []
    kills = 0
    for _ in range(15):  # until a kill lands while a temp file exists (most do)
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(ws), str(st)], stdout=subprocess.PIPE, env=ENV)
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _temps(ws / "big"):
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        kills += 1
        leftovers = _temps(ws)
        if leftovers:
            break
    assert leftovers, f"no kill out of {kills} landed mid-write"
    left_bytes = sum(p.stat().st_size for p in leftovers)
    print(f"{kills} kill(s); {len(leftovers)} temp file(s), {left_bytes} bytes left: {[p.name for p in leftovers]}")

    from agent_legs import Legs

    with Legs(workspace=ws, state_dir=st) as legs:
        listing = legs.run("files.list", {"path": "big", "recursive": True})
        assert listing.ok and not any(TMP in e["path"] for e in listing.data["entries"])  # never shown
        name = leftovers[0].relative_to(ws).as_posix()
        assert legs.run("files.read", {"path": name}).error.type == "denied"  # nor readable
        deadline = time.monotonic() + 20
        while _temps(ws) and time.monotonic() < deadline:  # the sweep runs in the background
            time.sleep(0.05)
        assert _temps(ws) == []
        for f in (ws / "big").iterdir():  # a file is never partial
            assert f.stat().st_size == 20_000_000


def test_a_live_writers_temp_file_is_never_swept(tmp_path: Path) -> None:
    """A concurrent process's temp file (owner alive, recent) survives another process's sweep."""
    from agent_legs._policy import FilesPolicy
    from agent_legs.actions.files._temp import temp_name
    from agent_legs.actions.files._workspace import Workspace

    ws, st = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    st.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = temp_name().replace(f"-{os.getpid()}-", f"-{sleeper.pid}-")
        (ws / live).write_bytes(b"in progress")
        result = Workspace(ws, FilesPolicy(), st).sweep_temp()
        assert result.removed == [] and (ws / live).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    result = Workspace(ws, FilesPolicy(), st).sweep_temp()
    assert result.removed == [live] and not (ws / live).exists()


# -- 22.6: a full disk, a file-size limit, too many open files, permissions -------------------------

SCENARIO = textwrap.dedent("""
    import errno, json, logging, os, resource, signal, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from agent_legs import Legs

    scenario, ws, st = sys.argv[1:4]
    out = {}

    def err(r):
        assert not r.ok, r.output
        return {"type": r.error.type, "message": r.error.message, "retryable": r.error.retryable,
                "hint": r.error.hint}

    with Legs(workspace=ws, state_dir=st, policy={"files": {"max_write_bytes": 50_000_000}},
              settings={"telemetry": {"capture_content": False}}) as legs:
        if scenario == "full":
            assert legs.run("files.write", {"path": "keep.txt", "content": "original"}).ok
            assert legs.run("files.write", {"path": "tree/a.txt", "content": "a" * 100_000}).ok
            out["big"] = err(legs.run("files.write", {"path": "big.txt", "content": "x" * 10_000_000}))
            with open(os.path.join(ws, "filler"), "wb") as f:  # now exactly full
                try:
                    while True:
                        f.write(b"\\0" * 65536)
                        f.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            out["overwrite"] = err(legs.run("files.write", {"path": "keep.txt", "content": "new" * 100_000}))
            out["append"] = err(legs.run("files.write", {"path": "keep.txt", "content": "y" * 100_000,
                                                          "mode": "append"}))
            out["edit"] = err(legs.run("files.edit", {"path": "tree/a.txt", "old_text": "a" * 100_000,
                                                       "new_text": "b" * 200_000}))
            out["copy"] = err(legs.run("files.copy", {"source": "tree", "destination": "tree2"}))
            out["copy_file"] = err(legs.run("files.copy", {"source": "tree/a.txt", "destination": "a2.txt"}))
            out["read"] = legs.run("files.read", {"path": "keep.txt"}).output
        elif scenario == "trash":  # the state directory's trash is a full disk; the workspace is not
            assert legs.run("files.write", {"path": "keep.txt", "content": "original"}).ok
            assert legs.run("files.write", {"path": "other.txt", "content": "other"}).ok
            with open(os.path.join(st, "trash", "filler"), "wb") as f:
                try:
                    while True:
                        f.write(b"\\0" * 65536)
                        f.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            n = 0
            try:  # and out of inodes: nothing more can be created there
                while True:
                    os.mkdir(os.path.join(st, "trash", f"d{n}"))
                    n += 1
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            out["delete"] = err(legs.run("files.delete", {"path": "keep.txt"}))
            out["move"] = err(legs.run("files.move", {"source": "other.txt", "destination": "keep.txt",
                                                       "overwrite": True}))
            out["kept"] = sorted(n for n in os.listdir(ws) if not n.startswith("."))
        elif scenario == "fsize":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
            out["big"] = err(legs.run("files.write", {"path": "big.txt", "content": "x" * 2_000_000}))
        elif scenario == "nofile":
            assert legs.run("files.write", {"path": "a.txt", "content": "a"}).ok
            held = []
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
            try:
                while True:
                    held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            out["read"] = err(legs.run("files.read", {"path": "a.txt"}))
            out["write"] = err(legs.run("files.write", {"path": "b.txt", "content": "b"}))
            for fd in held:
                os.close(fd)
            out["after"] = legs.run("files.read", {"path": "a.txt"}).ok
        elif scenario == "perms":
            out["read"] = err(legs.run("files.read", {"path": "locked/secret.txt"}))
            out["write"] = err(legs.run("files.write", {"path": "rodir/new.txt", "content": "x"}))
            out["list"] = err(legs.run("files.list", {"path": "locked"}))
    out["temps"] = [n for _, _, names in os.walk(ws) for n in names if n.startswith(".agent-legs-tmp-")]
    print(json.dumps(out))
""")


def _run(scenario: str, ws: Path, st: Path, *, prefix: list[str] | None = None) -> dict:
    cmd = [*(prefix or []), sys.executable, "-c", SCENARIO, scenario, str(ws), str(st)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _typed(e: dict, etype: str, text: str) -> None:
    assert e["type"] == etype and text in e["message"] and e["hint"], e
    assert "internal error" not in e["message"], e


@pytest.mark.skipif(
    not os.environ.get("CI") and (os.geteuid() != 0 or not shutil.which("unshare")), reason="needs root and unshare(1)"
)
def test_a_full_workspace_disk_gives_typed_errors_and_changes_nothing(tmp_path: Path) -> None:
    ws, st = tmp_path / "disk", tmp_path / "state"
    ws.mkdir()
    st.mkdir()
    script = f'mount -t tmpfs -o size=4m tmpfs "{ws}" && exec "$@"'
    out = _run("full", ws, st, prefix=["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"])
    for key in ("big", "overwrite", "append", "edit", "copy", "copy_file"):
        _typed(out[key], "failed", "the workspace's disk is full (ENOSPC)")
        assert not out[key]["retryable"], out[key]
    assert "'keep.txt' is unchanged" in out["overwrite"]["message"]
    assert "'big.txt' was not created" in out["big"]["message"]
    assert out["read"].startswith("original")  # the old content is intact and readable
    assert out["temps"] == []  # no temporary file left on the full disk
    assert not any(ws.iterdir())  # the tmpfs lived only in the child's mount namespace


@pytest.mark.skipif(
    not os.environ.get("CI") and (os.geteuid() != 0 or not shutil.which("unshare")), reason="needs root and unshare(1)"
)
def test_a_full_trash_disk_keeps_the_file_and_says_which_disk(tmp_path: Path) -> None:
    ws, st = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    (st / "trash").mkdir(parents=True)
    script = f'mount -t tmpfs -o size=1m,nr_inodes=64 tmpfs "{st / "trash"}" && exec "$@"'
    out = _run("trash", ws, st, prefix=["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"])
    for key in ("delete", "move"):
        _typed(out[key], "failed", "cannot move to the trash 'keep.txt': the state directory's disk is full (ENOSPC)")
        assert not out[key]["retryable"]
    assert out["kept"] == ["keep.txt", "other.txt"] and (ws / "keep.txt").read_text() == "original"


def test_a_file_size_limit_is_a_typed_error(tmp_path: Path) -> None:
    ws, st = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    st.mkdir()
    out = _run("fsize", ws, st)
    _typed(out["big"], "failed", "too large for the workspace's file system (EFBIG)")
    assert not out["big"]["retryable"] and out["temps"] == [] and not (ws / "big.txt").exists()


def test_too_many_open_files_is_a_typed_error(tmp_path: Path) -> None:
    ws, st = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    st.mkdir()
    out = _run("nofile", ws, st)
    for key in ("read", "write"):
        _typed(out[key], "unavailable", "too many open files on the host (EMFILE)")
        assert out[key]["retryable"]  # nothing happened, and it clears up
    assert out["after"] and out["temps"] == [] and not (ws / "b.txt").exists()


@pytest.mark.skipif(
    not os.environ.get("CI") and (os.geteuid() != 0 or not shutil.which("setpriv")), reason="needs root to drop to nobody"
)
def test_permission_denied_by_the_file_system_is_a_typed_denial() -> None:
    base = Path(tempfile.mkdtemp(prefix="agent-legs-perms-"))
    try:
        base.chmod(0o755)
        ws, st = base / "ws", base / "state"
        ws.mkdir()
        st.mkdir()
        (ws / "locked").mkdir(mode=0o700)
        (ws / "locked/secret.txt").write_text("root only")
        (ws / "rodir").mkdir(mode=0o755)
        for d in (ws, st):
            os.chown(d, 65534, 65534)
        out = _run("perms", ws, st, prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        for key in ("read", "write", "list"):
            _typed(out[key], "denied", "the file system's permissions forbid it (EACCES)")
            assert not out[key]["retryable"]
        assert not (ws / "rodir/new.txt").exists() and out["temps"] == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
