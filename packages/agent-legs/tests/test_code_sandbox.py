"""code.run / code.reset against a real Docker engine and the real sandbox image."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from agent_legs import Legs
from agent_legs_testing.docker import container_processes, orphan_container, owner_label, sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")


@pytest.fixture
def legs(open_legs, captured_spans) -> Legs:
    return open_legs(
        tracer_provider=captured_spans.provider, settings={"code": {"pool_size": 1}}, policy={"code": {"timeout_s": 20}}
    )


def run(legs, code, **kw):
    return legs.run(
        "code.run", {"code": code, **{k: v for k, v in kw.items() if k != "session"}}, session=kw.get("session", "default")
    )


def test_workspace_files_named_like_the_drivers_modules_do_not_replace_them(open_legs, dirs) -> None:
    """``python3 -c`` puts the working directory (the workspace) first on ``sys.path``: a file there named
    like a module the driver imports ran in the container's PID 1 instead of the standard library's
    (the sandbox did not start). The driver's modules are the standard library's; the code still
    imports the workspace's own modules."""
    ws = dirs[0]
    for name in ("traceback", "json", "socket", "subprocess"):
        (ws / f"{name}.py").write_text("raise SystemExit('the workspace file ran')\n")
    (ws / "mymod.py").write_text("X = 42\n")
    legs = open_legs(settings={"code": {"pool_size": 1}})
    r = run(legs, "import sys, mymod\nprint(mymod.X, sys.path[0] == '')")
    assert r.ok, r.error
    assert r.data["stdout"] == "42 True\n"


def test_state_persists_like_a_notebook(legs) -> None:
    r = run(legs, "import math\nx = 20\ndef f(y):\n    return y * 2\nf(x) + 2")
    assert r.ok and r.data["value"] == "42" and r.data["new_kernel"]
    r = run(legs, "print(f(x), math.pi > 3)")
    assert r.ok and r.data["stdout"] == "40 True\n" and not r.data["new_kernel"]


def test_cells_compile_as_plain_python_without_the_drivers_future_flags(legs) -> None:
    """The driver is compiled in a module with ``from __future__ import annotations``; its compile() of a cell
    inherited that flag, so the model's annotations were strings where ``python3 -c`` gives the classes."""
    code = "def f(x: int) -> str: pass\nclass C:\n    y: float\n(f.__annotations__, C.__annotations__)"
    r = legs.run("code.run", {"code": code})
    assert r.ok, r
    assert r.data["value"] == "({'x': <class 'int'>, 'return': <class 'str'>}, {'y': <class 'float'>})", r.data
    r = legs.run("code.run", {"code": "from __future__ import annotations\ndef g(x: int): pass\ng.__annotations__"})
    assert r.ok and r.data["value"] == "{'x': 'int'}", r.data  # a cell's own future import still counts


def test_stdout_stderr_value_and_traceback(legs) -> None:
    r = run(legs, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n{'a': 1}")
    assert r.data["stdout"] == "out\n" and r.data["stderr"] == "err\n" and r.data["value"] == "{'a': 1}"
    r = run(legs, "def g():\n    raise ValueError('bad input')\ng()")
    assert r.ok and "ValueError: bad input" in r.data["error"] and 'File "<cell>", line 3' in r.data["error"]
    assert "driver.py" not in r.data["error"]
    r = run(legs, "x = (")
    assert r.ok and "SyntaxError" in r.data["error"]


def test_subprocess_output_is_captured(legs) -> None:
    r = run(legs, "import os\nos.system('echo from-child')")
    assert "from-child" in r.data["stdout"]


def test_bash_runs_in_the_workspace(legs, dirs) -> None:
    (dirs[0] / "input.txt").write_text("hello\n")
    r = run(legs, "cat input.txt; pwd; echo oops >&2; exit 3", language="bash")
    assert r.ok and r.data["exit_code"] == 3 and r.data["stdout"] == "hello\n/workspace\n"
    assert r.data["stderr"] == "oops\n" and "[exit code 3]" in r.output


def test_two_sessions_are_isolated(legs) -> None:
    run(legs, "secret = 'a'", session="s1")
    r = run(legs, "secret", session="s2")
    assert "NameError" in r.data["error"]
    run(legs, "open('/tmp/mine', 'w').write('s1')", session="s1")
    r = run(legs, "import os; os.path.exists('/tmp/mine')", session="s2")
    assert r.data["value"] == "False"


def test_files_and_figures_come_back_as_artifacts(legs, dirs) -> None:
    code = (
        "import matplotlib.pyplot as plt\nimport pandas as pd\n"
        "df = pd.DataFrame({'a': [1, 2, 3]})\n"
        "import os; os.makedirs('report', exist_ok=True); df.to_csv('report/out.csv', index=False)\n"
        "plt.plot(df['a'])\nplt.title('t')"
    )
    r = run(legs, code)
    paths = {a.path: a for a in r.artifacts}
    assert "report/out.csv" in paths and paths["report/out.csv"].mime_type == "text/csv"
    figures = [p for p in paths if p.startswith("figures/") and p.endswith(".png")]
    assert len(figures) == 1 and paths[figures[0]].size > 1000
    assert (dirs[0] / figures[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (dirs[0] / "report/out.csv").read_text() == "a\n1\n2\n3\n"
    r = run(legs, "print('nothing new')")
    assert r.artifacts == []


def test_host_can_modify_files_the_sandbox_wrote(legs, dirs) -> None:
    run(legs, "open('made.txt', 'w').write('x')")
    assert legs.run("files.write", {"path": "made.txt", "content": "y"}).ok
    r = run(legs, "open('made.txt').read()")
    assert r.data["value"] == "'y'"


def test_reset_gives_a_fresh_kernel(legs) -> None:
    run(legs, "v = 1")
    r = legs.run("code.reset", {})
    assert r.ok and r.data["had_kernel"]
    r = run(legs, "v")
    assert "NameError" in r.data["error"] and r.data["new_kernel"]


def test_timeout_kills_the_work(legs, captured_spans) -> None:
    run(legs, "state = 1")
    (exec_span,) = captured_spans.by_name("sandbox exec")
    cid = exec_span.attributes["agent_legs.code.container"]
    t0 = time.monotonic()
    r = run(legs, "while True:\n    pass", timeout_s=1.5)
    assert time.monotonic() - t0 < 10
    assert r.error.type == "timeout" and "lost" in r.error.message
    assert not any(c.startswith(cid) for c in sandbox_containers()), (
        "the timed-out container must be removed, not left burning CPU"
    )
    assert container_processes(cid) == []
    r = run(legs, "state")
    assert r.data["new_kernel"] and "NameError" in r.data["error"]


def test_output_is_truncated(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"code": {"max_output_bytes": 1000}}) as legs:
        r = legs.run("code.run", {"code": "print('x' * 100000)"})
        assert r.ok and len(r.data["stdout"]) == 1000 and r.data["stdout_truncated"]
        assert "truncated: 100001 bytes, limit 1000" in r.output
        r = legs.run("code.run", {"code": "'v' * 5000"})
        assert r.data["value_truncated"] and len(r.data["value"]) == 1000 and "[value truncated" in r.output


def test_an_output_flood_neither_fails_the_code_nor_fills_memory(legs) -> None:
    r = run(
        legs,
        "import sys\nfor i in range(400):\n    sys.stdout.write('y' * 50000)\n"
        "import os; os.system('head -c 3000000 /dev/zero')\nprint('end')",
    )
    assert r.ok and r.data["error"] is None, r.data["error"]
    assert r.data["stdout_bytes"] == 400 * 50000 + 3000000 + 4 and r.data["stdout_truncated"]
    assert len(r.data["stdout"]) == 100_000


def test_pool_gives_a_new_session_a_running_kernel(legs, captured_spans) -> None:
    run(legs, "1", session="first")  # starts the service; the pool fills in the background
    deadline = time.monotonic() + 60
    # the first call's own container and the pooled one: a kernel joins the pool as its span ends
    while len(captured_spans.by_name("sandbox container start")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    captured_spans.clear()
    r = run(legs, "2", session="second")
    assert r.ok and r.data["new_kernel"]
    tool = captured_spans.by_name("execute_tool code_run")[0]
    starts = [s for s in captured_spans.by_name("sandbox container start") if s.context.trace_id == tool.context.trace_id]
    assert starts == [], "a pooled kernel needs no container start in the call"


def test_concurrent_first_calls_of_a_session_share_one_kernel(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0}}) as legs:
        legs.run("code.run", {"code": "1"}, session="warm")  # the service is up
        before = set(sandbox_containers())

        async def both() -> list:
            return await asyncio.gather(*(legs.arun("code.run", {"code": f"n{i} = {i}"}, session="c") for i in range(2)))

        results = asyncio.run(both())
        assert all(r.ok for r in results)
        assert len(set(sandbox_containers()) - before) == 1
        assert legs.run("code.run", {"code": "n0 + n1"}, session="c").data["value"] == "1"


def test_sessions_run_in_parallel(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 3}}) as legs:
        for i in range(3):
            legs.run("code.run", {"code": "import time"}, session=f"p{i}")

        async def three() -> list:
            return await asyncio.gather(*(legs.arun("code.run", {"code": "time.sleep(1.5)"}, session=f"p{i}") for i in range(3)))

        t0 = time.monotonic()
        results = asyncio.run(three())
        assert all(r.ok for r in results) and time.monotonic() - t0 < 3.5


def test_idle_sessions_are_reaped(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0, "session_ttl_s": 0.5}}) as legs:
        legs.run("code.run", {"code": "kept = 1"}, session="idle")
        assert len(sandbox_containers()) == 1
        deadline = time.monotonic() + 10
        while sandbox_containers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sandbox_containers() == []
        r = legs.run("code.run", {"code": "kept"}, session="idle")
        assert r.data["new_kernel"] and "NameError" in r.data["error"]


def test_a_calls_processes_end_with_it(legs, captured_spans) -> None:
    r = run(legs, "sleep 300 & sleep 301 & (sleep 302 &) ; echo started", language="bash")
    assert r.ok and r.data["stdout"] == "started\n" and r.data["killed_processes"] >= 3
    assert "leftover process(es) stopped" in r.output
    (exec_span,) = captured_spans.by_name("sandbox exec")
    cid = exec_span.attributes["agent_legs.code.container"]
    procs = container_processes(cid)
    # what stays: the driver's two processes (PID 1, the supervisor, and the kernel it forked)
    assert len(procs) == 2 and all("agent-legs-driver" in p for p in procs), procs
    r = run(legs, "import subprocess\np = subprocess.Popen(['sleep', '300'])\n'spawned'")
    assert r.data["value"] == "'spawned'" and r.data["killed_processes"] == 1
    assert len(container_processes(cid)) == 2


def test_threads_printing_between_calls_cannot_corrupt_the_channel(legs) -> None:
    run(
        legs,
        "import threading, time\n"
        "def chatter():\n    for i in range(2000):\n        print('noise' * 50, i)\n        time.sleep(0.0005)\n"
        "threading.Thread(target=chatter, daemon=True).start()",
    )
    for i in range(20):
        r = run(legs, f"{i} * 2")
        assert r.ok and r.data["value"] == str(i * 2)


def test_figure_names_do_not_collide_across_kernels(legs, dirs) -> None:
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2])"
    first = [a.path for a in run(legs, plot).artifacts]
    legs.run("code.reset", {})
    second = [a.path for a in run(legs, plot).artifacts]
    assert len(first) == 1 and len(second) == 1 and first != second
    assert (dirs[0] / first[0]).exists() and (dirs[0] / second[0]).exists()


def test_session_close_removes_its_container(legs) -> None:
    run(legs, "1", session="closing")
    before = set(sandbox_containers())
    t0 = time.monotonic()
    legs.close_session("closing")
    assert time.monotonic() - t0 < 3
    assert len(before - set(sandbox_containers())) == 1


def test_read_only_workspace_is_mounted_read_only(dirs) -> None:
    ws, st = dirs
    (ws / "a.txt").write_text("a")
    with Legs(workspace=ws, state_dir=st, policy={"files": {"read_only": True}}) as legs:
        r = legs.run("code.run", {"code": "open('a.txt').read()"})
        assert r.data["value"] == "'a'"
        r = legs.run("code.run", {"code": "open('b.txt', 'w')"})
        assert "Read-only file system" in r.data["error"]
    assert not (ws / "b.txt").exists()


def test_child_spans(legs, captured_spans) -> None:
    run(legs, "1")
    tool = captured_spans.by_name("execute_tool code_run")[0]
    (exec_span,) = captured_spans.by_name("sandbox exec")
    assert exec_span.parent.span_id == tool.context.span_id


@pytest.fixture
def loopback_http():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    hits: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b"hello from the host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], hits
    srv.shutdown()
    srv.server_close()


def test_network_true_goes_only_through_the_egress_guard(dirs, loopback_http) -> None:
    port, hits = loopback_http
    ws, st = dirs
    policy = {"code": {"network": True}, "network": {"allow_hosts": [f"127.0.0.1:{port}"]}}
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0}}, policy=policy) as legs:
        code = (
            f"import socket, urllib.request\n"
            f"print(urllib.request.urlopen('http://127.0.0.1:{port}/allowed', timeout=10).read().decode())\n"
            f"for url in ['http://127.0.0.1:{port + 1}/other-port', 'http://10.0.0.1/private', "
            f"'http://169.254.169.254/metadata', 'https://10.0.0.2/tls']:\n"
            f"    try:\n        urllib.request.urlopen(url, timeout=10); print('REACHED', url)\n"
            f"    except Exception as e:\n        print('refused', url)\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('DIRECT')\n"
            f"except OSError:\n    print('no direct route')\n"
            f"s = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n"  # a CONNECT tunnel, by hand
            f"s.sendall(b'CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n')\n"
            f"print(s.recv(100).split(b'\\r\\n')[0].decode())\n"
            f"s.sendall(b'GET /tunnelled HTTP/1.0\\r\\n\\r\\n')\n"
            f"data = b''\n"
            f"while chunk := s.recv(1000):\n    data += chunk\n"
            f"print(b'hello from the host' in data)"
        )
        r = legs.run("code.run", {"code": code})
        assert r.ok and r.data["error"] is None, r.data
        lines = r.data["stdout"].splitlines()
        assert lines[0] == "hello from the host"
        assert [line.split()[0] for line in lines[1:5]] == ["refused"] * 4
        assert lines[5] == "no direct route"
        assert lines[6] == "HTTP/1.1 200 Connection established" and lines[7] == "True"
        assert hits == ["/allowed", "/tunnelled"]
        denied = [d["url"] for d in r.data["network_denied"]]
        assert denied == [
            f"http://127.0.0.1:{port + 1}/other-port",
            "http://10.0.0.1/private",
            "http://169.254.169.254/metadata",
            "https://10.0.0.2:443",
        ]
        assert "[network denied: http://10.0.0.1/private" in r.output


def test_network_true_with_a_remote_engine_is_refused(dirs) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws, state_dir=st, settings={"code": {"docker_host": "tcp://127.0.0.1:9"}}, policy={"code": {"network": True}}
    ) as legs:
        r = legs.run("code.run", {"code": "1"})
        assert r.error.type == "unavailable" and "policy.code.network" in r.error.message


def test_docker_unreachable_is_unavailable(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"docker_host": "unix:///nonexistent/docker.sock"}}) as legs:
        r = legs.run("code.run", {"code": "1"})
        assert r.error.type == "unavailable" and "agent-legs sandbox build" in r.error.hint


def test_missing_image_is_unavailable(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"image": "agent-legs-sandbox:nope"}}) as legs:
        r = legs.run("code.run", {"code": "1"})
        assert r.error.type == "unavailable" and "not built" in r.error.message


def test_orphans_of_dead_processes_are_removed(dirs, sandbox_image) -> None:
    cid = orphan_container(sandbox_image)
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st) as legs:
        assert legs.run("code.run", {"code": "1"}).ok
        assert cid[:12] not in " ".join(sandbox_containers())


def test_close_leaves_nothing(dirs) -> None:
    ws, st = dirs
    before = set(sandbox_containers())
    legs = Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 2}})
    legs.run("code.run", {"code": "1"}, session="a")
    legs.run("code.run", {"code": "1"}, session="b")
    legs.close()  # kills the kernels; their containers are removed in the background
    from agent_legs.actions.code import _reaper

    assert _reaper.drain() == []  # what the process's exit waits for
    assert set(sandbox_containers()) <= before


CRASHING_HOST = """
import os, sys, threading, time
from agent_legs import Legs
legs = Legs(workspace=sys.argv[1], state_dir=sys.argv[2], settings={"code": {"pool_size": 1}})
legs.run("code.run", {"code": "1"}, session="idle")
threading.Thread(target=legs.run, args=("code.run", {"code": "while True: pass", "timeout_s": 600}),
                 kwargs={"session": "busy"}, daemon=True).start()
from agent_legs.actions.code import _reaper
deadline = time.monotonic() + 60  # the idle kernel, the busy one, the pool's refill (it waits for the busy call)
while len(_reaper.owned()) < 3 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)  # the busy call's code running
print(os.getpid(), flush=True)
os.kill(os.getpid(), 9)
"""


def test_a_crashed_host_leaves_nothing_running_and_its_containers_are_swept(tmp_path, dirs) -> None:
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_HOST, str(tmp_path / "w"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    owner = owner_label(int(proc.stdout.strip()))

    def containers(*extra: str) -> list[str]:
        return subprocess.run(
            ["docker", "ps", "-q", *extra, "--filter", f"label={owner}"], capture_output=True, text=True, check=True
        ).stdout.split()

    assert len(containers("-a")) == 3  # the idle kernel, the busy one, the pooled one
    deadline = time.monotonic() + 5
    while containers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert containers() == [], "a kernel kept running after its host died"
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0}}) as legs:
        assert legs.run("code.run", {"code": "1"}).ok  # the service's start sweeps orphans of dead processes
        assert containers("-a") == []


def test_many_legs_on_one_host_start_while_others_remove_their_containers(tmp_path) -> None:
    # Each Legs sweeps orphans when its sandbox starts, while the others create and remove containers:
    # a container removed between listing and inspecting must not fail anyone's start.
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> list[bool]:
        oks = []
        for round_ in range(3):
            with Legs(
                workspace=tmp_path / f"ws{i}", state_dir=tmp_path / f"st{i}-{round_}", settings={"code": {"pool_size": 1}}
            ) as legs:
                oks.append(legs.run("code.run", {"code": "1"}).ok)
        return oks

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert all(all(r) for r in results), results
