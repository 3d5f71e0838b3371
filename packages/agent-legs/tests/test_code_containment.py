"""What the code sandbox leaves in (and can see of) the host's workspace, under runc and gVisor (runsc).

Issue 13: no set-id file reaches the host (13.2), denied files stay denied in the sandbox (13.3), the
operator's files keep their owner and mode (13.5), and gVisor on request (13.12). Every test runs a
real container and checks the host's file system itself.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sandbox_runtimes import RUNTIMES, SANDBOX_UID, require_runtime, workspace_for

from agent_legs import Legs

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")

SECRET = "s3cret-value-7f1d"
SETID = stat.S_ISUID | stat.S_ISGID


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    require_runtime(request.param)
    return request.param


def make_legs(tmp_path, runtime: str, **policy):
    ws = workspace_for(runtime, tmp_path / "ws")
    code = {"pool_size": 0} if runtime == "runc" else {"pool_size": 0, "runtime": runtime}  # runc: the default
    return Legs(workspace=ws, state_dir=tmp_path / "st", settings={"code": code}, policy={"code": {"timeout_s": 30}, **policy})


def py(legs, code: str, session: str = "s"):
    r = legs.run("code.run", {"code": code}, session=session)
    assert r.ok, r.output
    return r


def sh(legs, script: str, session: str = "s"):
    r = legs.run("code.run", {"code": script, "language": "bash"}, session=session)
    assert r.ok, r.output
    return r


def host_setid(ws) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(ws):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_mode & SETID:
                out.append(os.path.relpath(path, ws))
    return sorted(out)


# -- 13.2: no set-id file reaches the host ----------------------------------------------------------
def test_setid_files_made_in_the_sandbox_lose_their_bits_on_the_host(tmp_path, runtime) -> None:
    with make_legs(tmp_path, runtime) as legs:
        ws = legs.workspace
        r = sh(
            legs,
            "cp /bin/sh tool && chmod 4755 tool\n"
            "python3 -c \"import os, stat; print(stat.filemode(os.stat('tool').st_mode))\"\n"
            "cp /bin/sh gtool && chmod 2755 gtool\n"
            "mkdir shared && chmod 2775 shared\n"
            "python3 -c \"import os; os.close(os.open('made', os.O_CREAT | os.O_WRONLY, 0o6755))\"",
        )
        assert host_setid(ws) == []  # nothing carries a set-id bit on the host once the call returns
        # the bit was set inside (the call itself is not refused); the periodic sweep (every SETID_SWEEP_S)
        # may strip some bits while the call runs (seen on a slow machine): those the call itself removed are
        # reported, and never a name it did not make (gVisor itself drops the bits open(2) asks for: "made")
        removed = set(r.data["setid_removed"])
        assert removed <= {"gtool", "made", "shared", "tool"}
        if removed:
            assert "setuid/setgid bits removed" in r.output
        assert stat.S_IMODE(os.stat(ws / "tool").st_mode) == 0o755
        assert os.stat(ws / "tool").st_uid == SANDBOX_UID

        # a thread left running sets the bit between calls: the sweep strips it without waiting for a call
        py(
            legs,
            "import os, threading, time\n"
            "def later():\n    time.sleep(0.5); os.chmod('tool', 0o4755); open('set-done', 'w').close()\n"
            "threading.Thread(target=later, daemon=True).start()",
        )
        deadline = time.monotonic() + 20
        while not (ws / "set-done").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (ws / "set-done").exists()
        while host_setid(ws) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert host_setid(ws) == []


def test_the_operators_own_setid_file_is_left_alone(tmp_path, runtime) -> None:
    with make_legs(tmp_path, runtime) as legs:
        ws = legs.workspace
        (ws / "operator-tool").write_bytes(b"#!/bin/sh\n")
        os.chown(ws / "operator-tool", 0, 0)
        os.chmod(ws / "operator-tool", 0o4755)
        r = py(legs, "None")
        assert r.data["setid_removed"] == []
        assert stat.S_IMODE(os.stat(ws / "operator-tool").st_mode) == 0o4755  # not the sandbox's: not changed


# -- 13.3: denied files stay denied in the sandbox -------------------------------------------------
DENIED = {
    ".env": f"API_KEY={SECRET}-env",
    "keys/id_rsa": f"{SECRET}-rsa",
    "certs/server.pem": f"{SECRET}-pem",
    "app/.env": f"{SECRET}-appenv",
    "secrets/api.txt": f"{SECRET}-api",
    "private/notes.txt": f"{SECRET}-dir",
}
DENY = [".env", "**/.env", "**/*.pem", "**/id_*", "**/*.key", "secrets/**", "private"]

PROBE = r"""
import os, json
results = {}
def attempt(name, fn):
    try:
        value = fn()
        results[name] = "OK " + (value if isinstance(value, str) else repr(value))
    except OSError as e:
        results[name] = "ERR " + type(e).__name__
for path in %(paths)r:
    attempt("read " + path, lambda: open(path).read())
    attempt("write " + path, lambda: open(path, "w").write("x"))
    attempt("rename " + path, lambda: os.rename(path, path + ".moved"))
    attempt("unlink " + path, lambda: os.unlink(path))
    attempt("link " + path, lambda: os.link(path, path + ".hard"))
    attempt("symlink " + path, lambda: (os.symlink(os.path.basename(path), path + ".sym"), open(path + ".sym").read())[1])
attempt("list private", lambda: os.listdir("private"))
attempt("rename private", lambda: os.rename("private", "public"))
print(json.dumps(results))
"""


def seed(ws) -> None:
    for rel, content in DENIED.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(content)
    (ws / "readme.txt").write_text("public")


def test_denied_files_cannot_be_read_moved_or_linked_from_code(tmp_path, runtime) -> None:
    import json

    with make_legs(tmp_path, runtime, files={"deny": DENY}) as legs:
        ws = legs.workspace
        seed(ws)
        files = [p for p in DENIED if not p.startswith("private/")]
        r = py(legs, PROBE % {"paths": files})
        results = json.loads(r.data["stdout"])
        assert SECRET not in r.output and SECRET not in r.data["stdout"]
        leaked = {k: v for k, v in results.items() if v.startswith("OK") and k.split()[0] in ("read", "symlink", "list")}
        assert leaked == {}, leaked
        changed = {k: v for k, v in results.items() if v.startswith("OK") and k.split()[0] != "symlink"}
        assert changed == {}, changed  # no write, rename, unlink or hard link of a denied path
        r = sh(legs, "cat .env keys/id_rsa private/notes.txt secrets/api.txt; grep -r s3cret . ; echo done")
        assert SECRET not in r.output
        assert py(legs, "open('readme.txt').read()").data["value"] == "'public'"  # the rest stays readable
        for rel, content in DENIED.items():  # the host's files are untouched
            assert (ws / rel).read_text() == content
        leftovers = [p for p in os.listdir(ws) if p.endswith((".moved", ".hard"))]
        assert leftovers == []
        assert os.path.islink(ws / ".env.sym")  # a link code made to a denied file: files.* does not follow it
        r = legs.run("files.read", {"path": ".env.sym"})
        assert not r.ok and SECRET not in r.output
        assert not (ws / "public").exists()


def test_denied_names_files_cannot_even_parse_are_masked_too(tmp_path, runtime) -> None:
    # names files.* refuses outright (undecodable byte, control character, backslash, leading '~' or
    # drive letter) still match a deny glob: code must not read them either
    names = [b"tab\t.pem", b"back\\slash.pem", b"~home.pem", b"c:drive.pem"]
    with make_legs(tmp_path, runtime) as legs:
        ws = legs.workspace
        for name in [*names, b"key\xff.pem"]:
            with open(os.path.join(os.fsencode(ws), name), "wb") as f:
                f.write(SECRET.encode())
        # a name that is not UTF-8 cannot be a mount point (the engine's API is JSON): code is refused
        r = legs.run("code.run", {"code": "1"}, session="s")
        assert not r.ok and r.error.type == "denied" and "not valid UTF-8" in r.error.message
        assert "policy.files.deny" in r.error.message
        os.unlink(os.path.join(os.fsencode(ws), b"key\xff.pem"))
        r = sh(legs, 'for f in *.pem; do cat "$f" || echo "refused $f"; done')
        assert SECRET not in r.output and r.data["stdout"].count("refused") == len(names), r.output


def test_denied_paths_that_appear_later_are_hidden_before_code_runs(tmp_path, runtime) -> None:
    with make_legs(tmp_path, runtime) as legs:
        ws = legs.workspace
        r = py(legs, "x = 41")
        (ws / ".env").write_text(SECRET)  # the operator (or another process) adds a secret between calls
        os.chown(ws / ".env", 0, 0)
        r = legs.run("code.run", {"code": "open('.env').read()"}, session="s")
        assert r.data["new_kernel"] and r.data["denied_paths_appeared"] == [".env"]
        assert "PermissionError" in r.data["error"] and SECRET not in r.output
        assert "policy.files.deny: .env" in r.output
        r = py(legs, "x = 1\nx")  # a kernel that already hides it is kept
        assert not r.data["new_kernel"]

        # the same name, a new file (new inode): the old mask covered the old file only
        (ws / ".env").unlink()
        (ws / ".env").write_text(SECRET + "2")
        r = legs.run("code.run", {"code": "open('.env').read()"}, session="s")
        assert r.data["new_kernel"] and r.data["denied_paths_appeared"] == [".env"]
        assert SECRET not in r.output

        # another name for the secret (a hard link), made while the kernel runs
        os.link(ws / ".env", ws / "notes.txt")
        r = legs.run("code.run", {"code": "open('notes.txt').read()"}, session="s")
        assert r.data["denied_paths_appeared"] == ["notes.txt"] and SECRET not in r.output


def test_a_pooled_container_started_before_a_denied_file_appeared_is_not_used(tmp_path, runtime) -> None:
    ws = workspace_for(runtime, tmp_path / "ws")
    code = {"pool_size": 1, **({"runtime": runtime} if runtime != "runc" else {})}
    with Legs(workspace=ws, state_dir=tmp_path / "st", settings={"code": code}) as legs:
        py(legs, "None", session="first")  # starts the service; the pool refills in the background
        from agent_legs.actions.code._service import CodeService

        svc = legs._runtime._services[CodeService]  # white-box: wait until the pooled kernel is ready
        deadline = time.monotonic() + 60
        while not svc.pool and time.monotonic() < deadline:
            time.sleep(0.1)
        assert svc.pool
        (ws / ".env").write_text(SECRET)  # appears after the pooled container started
        r = legs.run("code.run", {"code": "open('.env').read()"}, session="second")
        assert r.data["new_kernel"] and "PermissionError" in (r.data["error"] or "") and SECRET not in r.output


def test_a_directory_renamed_by_code_keeps_its_denied_file_hidden(tmp_path, runtime) -> None:
    with make_legs(tmp_path, runtime, files={"deny": ["secrets/**"]}) as legs:
        ws = legs.workspace
        (ws / "secrets").mkdir()
        (ws / "secrets" / "api.txt").write_text(SECRET)
        r = legs.run(
            "code.run", {"code": "import os\nos.rename('secrets', 'public')\nopen('public/api.txt').read()"}, session="s"
        )
        assert "PermissionError" in (r.data["error"] or "") and SECRET not in r.output
        r = legs.run("code.run", {"code": "open('public/api.txt').read()"}, session="s")
        assert "PermissionError" in (r.data["error"] or "") and SECRET not in r.output
        r = legs.run("code.run", {"code": "open('public/api.txt').read()"}, session="another")
        assert "PermissionError" in (r.data["error"] or "") and SECRET not in r.output


# -- 13.5: ownership and modes are the operator's --------------------------------------------------
def snapshot(ws) -> dict[str, tuple[int, int, int]]:
    out = {}
    for dirpath, _, filenames in os.walk(ws):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), ws)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return out


@pytest.mark.skipif(
    not os.environ.get("CI") and os.geteuid() != 0, reason="the operator's files belong to another user only when run as root"
)
def test_code_run_as_root_keeps_the_operators_owner_and_mode(tmp_path) -> None:
    require_runtime("runc")
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "secret.txt").write_text(SECRET)
    os.chmod(ws / "secret.txt", 0o600)
    (ws / "data" / "table.csv").write_text("a,b\n1,2\n")
    (ws / "data" / "by-operator.txt").write_text("mine")
    os.chown(ws / "data" / "table.csv", 4242, 4343)  # another account's file
    before = snapshot(ws)
    dir_before = {d: os.stat(ws / d) for d in (".", "data")}
    with Legs(workspace=ws, state_dir=tmp_path / "st", settings={"code": {"pool_size": 0}}) as legs:
        w = legs.run("files.write", {"path": "data/agent.txt", "content": "from files.write"})
        assert w.ok
        r = sh(
            legs,
            "echo new > made.txt && mkdir -p out/deep && echo x > out/deep/f.txt\n"
            "echo ' +code' >> data/agent.txt && cat data/agent.txt\n"
            "cat data/table.csv\n"
            "cat secret.txt || echo SECRET-UNREADABLE\n"
            "chmod 777 secret.txt || echo CHMOD-REFUSED\n"
            "chown 1000 data/table.csv || echo CHOWN-REFUSED\n"
            "mv data/by-operator.txt data/moved.txt "
            "&& mv data/moved.txt data/by-operator.txt && echo RENAMED",
        )
        out = r.data["stdout"]
        assert "from files.write +code" in out and "a,b" in out
        assert "SECRET-UNREADABLE" in out and SECRET not in r.output
        assert "CHMOD-REFUSED" in out and "CHOWN-REFUSED" in out
        assert "RENAMED" in out  # entries of the directories can be renamed (and deleted), as files.move can
        # files made by code later are editable by files.* and by code again
        assert legs.run("files.write", {"path": "made.txt", "content": "rewritten"}).ok
        assert sh(legs, "echo more >> made.txt && cat made.txt").data["stdout"] == "rewrittenmore\n"
    after = snapshot(ws)
    for rel, owner_mode in before.items():
        assert after[rel] == owner_mode, rel  # owner, group and mode of every operator file unchanged
    assert after["secret.txt"] == (0, 0, 0o600)
    for d, st in dir_before.items():  # directories keep their owner (an ACL entry lets the sandbox in)
        now = os.stat(ws / d)
        assert (now.st_uid, now.st_gid) == (st.st_uid, st.st_gid)
        assert stat.S_IMODE(now.st_mode) & 0o7707 == stat.S_IMODE(st.st_mode) & 0o7707
    assert os.stat(ws / "made.txt").st_uid == 0 or os.stat(ws / "made.txt").st_uid == SANDBOX_UID
    assert os.stat(ws / "out" / "deep" / "f.txt").st_uid == SANDBOX_UID


@pytest.mark.skipif(not os.environ.get("CI") and os.geteuid() != 0, reason="needs a root-owned workspace")
def test_runsc_refuses_a_root_owned_workspace_and_changes_nothing(tmp_path) -> None:
    require_runtime("runsc")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "secret.txt").write_text(SECRET)
    os.chmod(ws / "secret.txt", 0o600)
    before = snapshot(ws)
    with Legs(workspace=ws, state_dir=tmp_path / "st", settings={"code": {"pool_size": 0, "runtime": "runsc"}}) as legs:
        r = legs.run("code.run", {"code": "open('secret.txt').read()"})
    assert not r.ok and r.error.type == "unavailable"
    assert "gVisor" in r.error.message and "chown" in r.error.hint
    assert snapshot(ws) == before and os.stat(ws).st_uid == 0
    assert os.listxattr(ws) == []  # no ACL was added either


# -- 13.12: gVisor on request -----------------------------------------------------------------------
def test_the_container_runs_under_the_chosen_runtime(tmp_path, runtime, captured_spans) -> None:
    import docker

    with Legs(
        workspace=workspace_for(runtime, tmp_path / "ws"),
        state_dir=tmp_path / "st",
        tracer_provider=captured_spans.provider,
        settings={"code": {"pool_size": 0, **({"runtime": runtime} if runtime != "runc" else {})}},
        policy={"code": {"memory_mb": 200, "pids_limit": 50}},
    ) as legs:
        r = sh(legs, "dmesg 2>/dev/null | head -1; cat /proc/version")
        gvisor = "gVisor" in r.data["stdout"] or "Starting gVisor" in r.data["stdout"]
        assert gvisor == (runtime == "runsc"), r.data["stdout"]
        cid = captured_spans.by_name("sandbox exec")[-1].attributes["agent_legs.code.container"]
        client = docker.from_env()
        try:
            host = client.containers.get(cid).attrs["HostConfig"]
        finally:
            client.close()
        assert host["Runtime"] == runtime
        # gVisor's own kernel shares the cgroup: the code keeps its 200 MB and 50 processes
        assert host["Memory"] == (200 + (64 if runtime == "runsc" else 0)) * 2**20
        assert host["PidsLimit"] == (50 if runtime == "runc" else 64 + 50 * 8)


@pytest.fixture
def loopback_http():
    hits: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the host")

        def log_message(self, *a) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], hits
    srv.shutdown()
    srv.server_close()


def test_guarded_network_works_under_each_runtime(tmp_path, runtime, loopback_http) -> None:
    port, hits = loopback_http
    with make_legs(
        tmp_path, runtime, code={"network": True, "timeout_s": 30}, network={"allow_hosts": [f"127.0.0.1:{port}"]}
    ) as legs:
        r = py(
            legs,
            f"import urllib.request, socket\n"
            f"print(urllib.request.urlopen('http://127.0.0.1:{port}/ok', timeout=10).read().decode())\n"
            f"try:\n    urllib.request.urlopen('http://127.0.0.1:{port + 1}/no', timeout=10)\n"
            f"except Exception:\n    print('refused')\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('DIRECT')\n"
            f"except OSError:\n    print('no direct route')",
        )
        assert r.data["stdout"].splitlines() == ["hello from the host", "refused", "no direct route"]
        assert hits == ["/ok"]
