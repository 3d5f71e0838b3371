"""Sandbox escape corpus: each attempt fails inside the container; host and other sessions unaffected.

Every attempt runs under both container runtimes (runc and gVisor's runsc): a runtime missing from
the engine fails the run (``sandbox_runtimes.require_runtime``), it is never skipped."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sandbox_runtimes import RUNTIMES, require_runtime, workspace_for

from agent_legs import Legs
from agent_legs_testing.docker import container_processes, sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")

CANARY = "canary-secret-0f9e8d7c"


def _bridge_address() -> str | None:
    """The host's address on Docker's default bridge (what a container with network would reach)."""
    r = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() or None


@pytest.fixture(scope="module")
def host_server():
    """HTTP listeners on the host's loopback and on its Docker bridge address (host-local both)."""
    hits: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a) -> None:
            pass

    servers = [HTTPServer(("127.0.0.1", 0), H)]
    bridge = _bridge_address()
    if bridge:
        servers.append(HTTPServer((bridge, servers[0].server_address[1]), H))
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield servers[0].server_address[1], [srv.server_address[0] for srv in servers], hits
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    require_runtime(request.param)
    return request.param


def code_settings(runtime: str, **kw):
    return {**kw, "runtime": runtime} if runtime != "runc" else kw


@pytest.fixture
def legs(tmp_path, monkeypatch, captured_spans, runtime):
    monkeypatch.setenv("AGENT_LEGS_TEST_CANARY", CANARY)
    (tmp_path / "host-only.txt").write_text(CANARY)
    with Legs(
        workspace=workspace_for(runtime, tmp_path / "ws"),
        state_dir=tmp_path / "st",
        secrets={"CANARY": CANARY},
        settings={"code": code_settings(runtime, pool_size=0)},
        tracer_provider=captured_spans.provider,
        policy={"code": {"timeout_s": 15, "memory_mb": 128, "pids_limit": 64}},
    ) as legs:
        legs.run("code.run", {"code": "witness = 'alive'"}, session="bystander")
        yield legs
        r = legs.run("code.run", {"code": "witness"}, session="bystander")
        assert r.data["value"] == "'alive'", "another session was affected"
        probe = legs.run("files.write", {"path": "host-check.txt", "content": "host fine"})
        assert probe.ok, "the host side stopped working"


def attacker_container(legs, captured_spans) -> str:
    """The attacker session's container id (its kernel is started if needed)."""
    captured_spans.clear()
    py(legs, "None")
    return captured_spans.by_name("sandbox exec")[-1].attributes["agent_legs.code.container"]


def py(legs, code: str, timeout_s: float | None = None):
    args = {"code": code}
    if timeout_s:
        args["timeout_s"] = timeout_s
    return legs.run("code.run", args, session="attacker")


def test_no_tcp_to_the_host(legs, host_server) -> None:
    port, addresses, hits = host_server
    targets = [*addresses, "172.17.0.1", "host.docker.internal", "localhost", "::1"]
    r = py(
        legs,
        f"import socket\nfor h in {targets!r}:\n"
        f"    try:\n        socket.create_connection((h, {port}), timeout=2); print('CONNECTED', h)\n"
        f"    except OSError as e:\n        print('blocked', h, type(e).__name__)",
    )
    assert "CONNECTED" not in r.data["stdout"] and r.data["stdout"].count("blocked") == len(targets)
    assert hits == []


def test_no_raw_sockets(legs) -> None:
    r = py(
        legs,
        "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
        "    print('RAW')\nexcept PermissionError:\n    print('denied')",
    )
    assert r.data["stdout"] == "denied\n"


def test_no_dns(legs) -> None:
    r = py(
        legs,
        "import socket\ntry:\n    socket.getaddrinfo('example.com', 80); print('RESOLVED')\n"
        "except OSError as e:\n    print('no dns', e)",
    )
    assert "RESOLVED" not in r.data["stdout"]


def test_only_loopback_interface(legs) -> None:
    r = py(legs, "import socket; sorted(n for _, n in socket.if_nameindex())")
    assert r.data["value"] == "['lo']"


def test_host_files_are_not_visible(legs, tmp_path) -> None:
    r = py(
        legs,
        f"import os\nhits = []\nfor root, dirs, files in os.walk('/'):\n"
        f"    dirs[:] = [d for d in dirs if root != '/' or d not in ('proc', 'sys', 'dev', 'usr')]\n"
        f"    hits += [os.path.join(root, f) for f in files if f == 'host-only.txt']\n"
        f"print(hits, os.path.exists('{tmp_path}/host-only.txt'))",
        timeout_s=15,
    )
    assert r.data["stdout"].strip() == "[] False"


def test_env_and_proc_hold_no_secret(legs) -> None:
    code = (
        "import os, glob\nblob = repr(dict(os.environ))\n"
        "for p in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
        "    try:\n        blob += open(p, 'rb').read().decode('latin-1')\n    except OSError:\n        pass\n"
        f"print('{CANARY[:6]}' + '-FOUND' if '{CANARY}' in blob else 'clean', sorted(os.environ))"
    )
    r = py(legs, code)
    assert r.data["stdout"].startswith("clean")
    assert "AGENT_LEGS" not in r.data["stdout"]


def test_cannot_write_outside_workspace(legs) -> None:
    code = (
        "res = {}\nfor p in ['/etc/evil', '/usr/bin/evil', '/opt/evil', '/evil', '/root/x']:\n"
        "    try:\n        open(p, 'w').write('x'); res[p] = 'WROTE'\n"
        "    except OSError as e:\n        res[p] = type(e).__name__\nres"
    )
    r = py(legs, code)
    assert "WROTE" not in r.data["value"]
    r = py(legs, "open('/tmp/ok', 'w').write('fine')")  # the size-limited tmpfs is writable
    assert r.data["error"] is None


def test_tmpfs_is_size_limited(tmp_path, runtime) -> None:
    with Legs(
        workspace=workspace_for(runtime, tmp_path / "w2"),
        state_dir=tmp_path / "s2",
        settings={"code": code_settings(runtime)},
        policy={"code": {"tmp_mb": 16}},
    ) as legs:
        r = legs.run(
            "code.run",
            {
                "code": "f = open('/tmp/big', 'wb')\ntry:\n    for _ in range(40):\n"
                "        f.write(b'x' * (1 << 20))\n    f.flush()\n"
                "except OSError as e:\n    print('limited', e.errno)"
            },
        )
        assert "limited 28" in r.data["stdout"]  # ENOSPC


def test_not_root_and_no_capabilities(legs, runtime) -> None:
    r = py(
        legs,
        "import os\nprint(os.getuid(), os.geteuid())\n"
        "print([l for l in open('/proc/self/status') if l.startswith(('CapEff', 'NoNewPrivs'))])",
    )
    out = r.data["stdout"]
    assert out.splitlines()[0] == "1000 1000"
    assert "CapEff:\\t0000000000000000" in out
    assert "NoNewPrivs:\\t1" in out or runtime == "runsc"  # gVisor's /proc does not show the line


def test_setuid_attempts_fail(legs) -> None:
    r = py(legs, "import os\ntry:\n    os.setuid(0); print('ROOT')\nexcept PermissionError:\n    print('denied')")
    assert r.data["stdout"] == "denied\n"
    r = legs.run(
        "code.run",
        {
            "code": "cp /bin/bash /tmp/sh && chmod u+s /tmp/sh && /tmp/sh -p -c id -u; ls /usr/bin/sudo /bin/su 2>&1 | head -2",
            "language": "bash",
        },
        session="attacker",
    )
    assert "\n0\n" not in "\n" + r.data["stdout"]


def test_no_docker_socket_and_no_mount(legs) -> None:
    # (`[ -e ]`, not ls: Debian's runsc of 2022 answers coreutils' statx with EINVAL)
    r = legs.run(
        "code.run",
        {
            "code": "for p in /var/run/docker.sock /run/docker.sock; do [ -e $p ] && echo EXISTS $p "
            "|| echo No such file: $p; done; mount -t tmpfs x /mnt 2>&1; "
            "echo done",
            "language": "bash",
        },
        session="attacker",
    )
    assert "No such file" in r.data["stdout"] and "done" in r.data["stdout"]
    assert "must be superuser" in r.data["stdout"] or "permission denied" in r.data["stdout"].lower()


def test_fork_bomb_is_contained(legs, captured_spans, runtime) -> None:
    cid = attacker_container(legs, captured_spans)
    # the bomb runs into the pids limit (64) for 3 s while the call's own shell waits
    r = legs.run(
        "code.run", {"code": ":(){ :|:& };:; sleep 3; echo waited", "language": "bash", "timeout_s": 10}, session="attacker"
    )
    if runtime == "runsc" and r.error is not None and r.error.type == "failed":
        # gVisor's kernel shares the task limit with the code: the bomb can take the whole sandbox down
        assert "kernel died" in r.error.message and container_processes(cid) == []
        assert py(legs, "6 * 7").data["value"] == "42"
        return
    assert r.error is None or r.error.type == "timeout"
    if r.error is None:  # the call returned: every process it forked was stopped with it
        assert r.data["killed_processes"] > 30 and "Resource temporarily unavailable" in r.data["stderr"]
        assert len(container_processes(cid)) == 2  # the driver's supervisor (PID 1) and kernel
        assert py(legs, "6 * 7").data["value"] == "42"
    else:
        assert container_processes(cid) == []
    assert legs.run("files.write", {"path": "after-fork-bomb.txt", "content": "host fine"}).ok


def test_memory_bomb_fails_naming_the_limit(legs) -> None:
    r = py(legs, "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))", timeout_s=15)
    assert not r.ok and r.error.type == "failed", r.error
    assert "memory limit of 128 MB" in r.error.message and "policy.code.memory_mb" in r.error.message
    r = py(legs, "1 + 1")
    assert r.data["value"] == "2" and r.data["new_kernel"]


def test_memory_bomb_in_a_child_process_keeps_the_kernel(legs, runtime) -> None:
    py(legs, "kept = 'yes'")
    r = legs.run(
        "code.run",
        {"code": "python3 -c 'x = bytearray(400 * 1024 * 1024)'; echo exit=$?", "language": "bash"},
        session="attacker",
    )
    assert not r.ok and r.error.type == "failed" and "memory limit of 128 MB" in r.error.message
    if runtime == "runsc":  # gVisor: the host's OOM killer stops the whole sandbox (its kernel included)
        assert "state was lost" in r.error.message
        assert py(legs, "1 + 1").data["new_kernel"]
        return
    assert r.data["stdout"] == "exit=137\n"
    r = py(legs, "kept")
    assert r.data["value"] == "'yes'" and not r.data["new_kernel"]


def test_infinite_loop_is_killed(legs, captured_spans) -> None:
    cid = attacker_container(legs, captured_spans)
    r = py(legs, "while True: pass", timeout_s=1)
    assert r.error.type == "timeout"
    assert not any(c.startswith(cid) for c in sandbox_containers()) and container_processes(cid) == []


def test_huge_output_is_bounded(legs) -> None:
    r = py(legs, "import sys\nfor _ in range(200):\n    sys.stdout.write('y' * 100000)")
    assert r.ok and r.data["error"] is None and r.data["stdout_truncated"] and len(r.output) < 30000
    assert r.data["stdout_bytes"] == 20_000_000
    r = legs.run("code.run", {"code": "yes | head -c 50000000 >&2; echo done", "language": "bash"}, session="attacker")
    assert r.ok and r.data["stdout"] == "done\n" and r.data["stderr_bytes"] == 50_000_000


def test_pid_namespace_hides_host_processes(legs) -> None:
    r = py(legs, "import os; len([p for p in os.listdir('/proc') if p.isdigit()]) < 10")
    assert r.data["value"] == "True"
    host_pid = os.getpid()
    r = py(legs, f"import os\ntry:\n    os.kill({host_pid}, 9); print('KILLED')\nexcept OSError as e:\n    print('no')")
    assert "KILLED" not in r.data["stdout"]


def test_stdin_is_not_the_protocol(legs) -> None:
    r = py(legs, "import sys; sys.stdin.read()")
    assert r.ok and r.data["value"] == "''"
    r = py(legs, "import os; os.write(1, b'\\x00\\x00\\x10\\x00garbage'); 'still fine'")
    assert r.data["value"] == "'still fine'"


def test_hostname_is_generic(legs) -> None:
    r = py(legs, "import socket; socket.gethostname()")
    assert r.data["value"] == "'sandbox'" and socket.gethostname() != "sandbox"
