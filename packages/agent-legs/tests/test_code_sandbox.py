"""code.run / code.reset against a real Docker engine and the real sandbox image."""

from __future__ import annotations

import subprocess
import time

import pytest

from agent_legs import Legs
from agent_legs_testing.docker import sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")


@pytest.fixture
def legs(dirs, captured_spans):
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, tracer_provider=captured_spans.provider,
              settings={"code": {"pool_size": 1}}, policy={"code": {"timeout_s": 20}}) as legs:
        yield legs


def run(legs, code, **kw):
    return legs.run("code.run", {"code": code, **{k: v for k, v in kw.items() if k != "session"}},
                    session=kw.get("session", "default"))


def test_state_persists_like_a_notebook(legs) -> None:
    r = run(legs, "import math\nx = 20\ndef f(y):\n    return y * 2\nf(x) + 2")
    assert r.ok and r.data["value"] == "42" and r.data["new_kernel"]
    r = run(legs, "print(f(x), math.pi > 3)")
    assert r.ok and r.data["stdout"] == "40 True\n" and not r.data["new_kernel"]


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
    code = ("import matplotlib.pyplot as plt\nimport pandas as pd\n"
            "df = pd.DataFrame({'a': [1, 2, 3]})\n"
            "import os; os.makedirs('report', exist_ok=True); df.to_csv('report/out.csv', index=False)\n"
            "plt.plot(df['a'])\nplt.title('t')")
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


def test_timeout_kills_the_work(legs) -> None:
    run(legs, "state = 1")
    before = set(sandbox_containers())
    t0 = time.monotonic()
    r = run(legs, "while True:\n    pass", timeout_s=1.5)
    assert time.monotonic() - t0 < 10
    assert r.error.type == "timeout" and "lost" in r.error.message
    killed = before - set(sandbox_containers())
    assert len(killed) == 1, "the timed-out container must be removed, not left burning CPU"
    r = run(legs, "state")
    assert r.data["new_kernel"] and "NameError" in r.data["error"]


def test_output_is_truncated(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"code": {"max_output_bytes": 1000}}) as legs:
        r = legs.run("code.run", {"code": "print('x' * 100000)"})
        assert r.ok and len(r.data["stdout"]) == 1000 and r.data["stdout_truncated"]
        assert "truncated: 100001 bytes, limit 1000" in r.output


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


def test_network_true_is_refused_rather_than_unguarded(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"code": {"network": True}}) as legs:
        r = legs.run("code.run", {"code": "1"})
        assert r.error.type == "denied" and "policy.code.network" in r.error.message


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
    import socket

    cid = subprocess.run(
        ["docker", "create", "--label", "agent-legs.sandbox=1", "--label",
         f"agent-legs.sandbox.owner={socket.gethostname()}:999999", sandbox_image], capture_output=True, text=True,
        check=True).stdout.strip()
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
    legs.close()
    assert set(sandbox_containers()) <= before
