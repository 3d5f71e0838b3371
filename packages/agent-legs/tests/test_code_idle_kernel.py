"""What an idle sandbox kernel holds, and the driver's paths that load late (round 5 of issue 20's memory
target): real Docker, the real sandbox image.

An idle container's memory is the driver's two Python processes. The kernel loads no module before code
needs it (``traceback`` at the first error, ``socket`` only with guarded network), bash runs through
``posix_spawn`` instead of ``subprocess``, and the objects made before the fork are frozen (``gc.freeze``)
so neither process's collector copies the pages both share. These tests pin each of those, and that the
late paths keep what the early ones gave: the error report, bash's signals and fds, the workspace's modules.
"""

from __future__ import annotations

import pytest

from agent_legs import Legs

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")

# modules the driver used to load before any code ran (~3 MB of every idle container with the fork's copies)
LATE = ("json", "re", "enum", "subprocess", "socket", "threading", "ast", "traceback", "signal", "selectors")


@pytest.fixture
def legs(open_legs) -> Legs:
    return open_legs(settings={"code": {"pool_size": 1}}, policy={"code": {"timeout_s": 20}})


def run(legs, code, **kw):
    return legs.run("code.run", {"code": code, **kw}, session="default")


def test_an_idle_kernel_has_loaded_nothing_before_the_code_needs_it(legs) -> None:
    r = run(legs, f"import sys, gc\n[m for m in {LATE!r} if m in sys.modules], gc.get_freeze_count() > 0")
    assert r.ok and r.data["new_kernel"], r
    assert r.data["value"] == "([], True)"  # nothing of LATE; the pre-fork objects are frozen


def test_the_first_error_loads_the_standard_librarys_traceback_not_the_workspaces(legs, dirs) -> None:
    """``traceback`` (and what it imports) is loaded at the first error, after the working directory is back
    on ``sys.path``: the driver imports it from its own path, so workspace files named like them never run."""
    for name in ("traceback", "linecache", "textwrap", "re", "enum", "contextlib"):
        (dirs[0] / f"{name}.py").write_text("raise SystemExit('the workspace file ran')\n")
    r = run(legs, "def g():\n    return 1 / 0\ng()")
    assert r.ok, r.error
    assert 'File "<cell>", line 3' in r.data["error"] and "ZeroDivisionError: division by zero" in r.data["error"]
    assert "workspace file ran" not in r.data["error"]
    r = run(legs, "import sys\nsys.modules['traceback'].__file__.startswith('/usr/lib/python3')")
    assert r.data["value"] == "True"


def test_an_error_is_still_reported_when_the_code_broke_what_traceback_needs(legs, dirs) -> None:
    (dirs[0] / "linecache.py").write_text("X = 1\n")  # no getline, checkcache...: traceback cannot print lines
    r = run(legs, "import linecache\nlinecache.X")
    assert r.ok and r.data["value"] == "1"
    r = run(legs, "def g():\n    raise KeyError('missing')\ng()")
    assert r.ok, r.error
    assert 'File "<cell>", line 3, in <module>' in r.data["error"] and 'File "<cell>", line 2, in g' in r.data["error"]
    assert r.data["error"].endswith("KeyError: 'missing'\n")
    r = run(legs, "x = 40 + 2\nx")  # the kernel carries on
    assert r.ok and r.data["value"] == "42" and not r.data["new_kernel"]


def test_the_code_imports_workspace_modules_named_like_ones_the_driver_no_longer_preloads(legs, dirs) -> None:
    """As under ``python3 -c`` in the workspace: the working directory comes first for the code's imports.
    (Before, the driver had loaded the standard library's ``json`` and ``subprocess`` first, so the code got
    those instead of its own files.) The driver's protocol does not use the code's modules."""
    (dirs[0] / "json.py").write_text("SOURCE = 'workspace'\n")
    (dirs[0] / "subprocess.py").write_text("SOURCE = 'workspace'\n")
    r = run(legs, "import json, subprocess\njson.SOURCE, subprocess.SOURCE")
    assert r.ok and r.data["value"] == "('workspace', 'workspace')", r
    r = run(legs, "{'still': 'answered'}")
    assert r.ok and r.data["value"] == "{'still': 'answered'}" and not r.data["new_kernel"]


def test_bash_gets_default_signals_and_no_fd_of_the_driver(legs) -> None:
    """bash runs through posix_spawn: SIGPIPE back to its default (Python ignores it), stdin /dev/null,
    nothing open but 0-2 (the protocol's fds are close-on-exec), and a signal's death as -N.

    The probe lists bash's fds from a child (``ls``) that bash forks as a simple command and waits for, so
    bash holds nothing of its own meanwhile. (It was ``ls /proc/$$/fd | tr ...``: bash keeps its pipeline's
    pipe open (fds 3, 4) until it has forked the pipeline's last command, and under load ``ls`` listed them
    first: one failure in a CI run, half of the runs with busy loops on both cores.) ``ls`` is not bash's last
    command, which bash would exec in place of itself: ``$$`` would then be ``ls``, listing its own directory."""
    r = run(
        legs,
        "yes abc | head -c 3; s=${PIPESTATUS[0]}; echo; echo $s; ls -m /proc/$$/fd; ls -m /proc/$PPID/fd; readlink /proc/$$/fd/0",
        language="bash",
    )
    assert r.ok and r.data["exit_code"] == 0, r
    lines = r.data["stdout"].splitlines()
    assert lines[:2] == ["abc", "141"]  # yes died of SIGPIPE (128 + 13), not of EPIPE with a message
    assert lines[2].split(", ") == ["0", "1", "2"]
    assert len(lines[3].split(", ")) > 3  # the driver's kernel (bash's parent) holds fds bash could have got
    assert lines[4] == "/dev/null" and r.data["stderr"] == ""
    r = run(legs, "kill -KILL $$", language="bash")
    assert r.ok and r.data["exit_code"] == -9
