"""The host<->kernel channel is untrusted, and a sandbox dies with its host (real Docker, real sandbox).

Code in the kernel holds the protocol channel (its process speaks it), so it can write anything
there: forged frames, a huge announced length, a reply with the right id ahead of the real one. The
host must bound what it buffers, keep ``data`` within the policy's caps, and replace a kernel whose
channel is out of step. And when the host process is SIGKILLed, its containers must stop on their
own, whatever the code left running in them.
"""

from __future__ import annotations

import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent_legs import Legs
from agent_legs.actions.code._service import CodeService
from agent_legs_testing.docker import sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")

# the kernel's write end of the channel: the only inherited fd above 2 opened for writing (a pipe)
CHANNEL = """
import fcntl, os, struct, sys
def channel():
    for name in os.listdir('/proc/self/fd'):
        fd = int(name)
        try:
            if fd > 2 and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY \\
                    and os.readlink('/proc/self/fd/%d' % fd).startswith('pipe:'):
                return fd
        except OSError:
            pass
    raise SystemExit('no channel fd found')
def request_id():
    f = sys._getframe()
    while f is not None and not isinstance(f.f_locals.get('req'), dict):
        f = f.f_back
    return f.f_locals['req']['id']
def frame(obj):
    import json
    body = json.dumps(obj).encode()
    return struct.pack('>I', len(body)) + body
"""


def _memory_kb() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    rss, hwm = (int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM"))  # type: ignore[union-attr]
    return rss, hwm


@pytest.fixture
def legs(open_legs):
    return open_legs(settings={"code": {"pool_size": 0}}, policy={"code": {"timeout_s": 30, "max_output_bytes": 1000}})


def run(legs, code, **kw):
    return legs.run("code.run", {"code": code, **kw})


# in the kernel: wait (at most 120 s) for the ``answered`` file the test writes once the host has the call's reply
AFTER_THE_ANSWER = """import os, time
deadline = time.monotonic() + 120
while not os.path.exists('answered') and time.monotonic() < deadline:
    time.sleep(0.01)"""


def answered_then_wait_for_the_channel(legs, ws: Path, what: str, bound_s: float = 90) -> None:
    """Tell the kernel the host has the call's reply (``answered``), then wait until ``what`` the kernel
    writes next has come through the engine to the host: the session's attach connection is readable
    (white-box: the only kernel's socket, polled, nothing read), and nothing waited there before. Not a
    pause: the condition the next call's check needs (it looks for bytes waiting there before sending)."""
    svc = legs._runtime._services[CodeService]
    (kernel,) = svc.kernels.values()
    poller = select.poll()
    poller.register(kernel.channel.sock, select.POLLIN)
    assert not poller.poll(0), f"bytes waited on the channel before the host's answer, not after it: {what}?"
    (ws / "answered").touch()
    if not poller.poll(bound_s * 1000):
        pytest.fail(
            f"{what} did not reach the host within {bound_s} s (its attach connection stayed empty; the kernel waits for {ws / 'answered'})"
        )


def test_a_huge_length_on_the_channel_neither_grows_the_host_nor_desyncs_it(legs) -> None:
    assert run(legs, CHANNEL + "state = 1").ok
    (cid,) = sandbox_containers()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from now on: the peak during the attack
    rss_before, _ = _memory_kb()
    t0 = time.monotonic()
    r = run(
        legs,
        "fd = channel()\nos.write(fd, struct.pack('>I', 2**31 - 1))\nchunk = b'A' * (1 << 20)\n"
        "for _ in range(200):\n    os.write(fd, chunk)\n'done'",
        timeout_s=20,
    )
    elapsed = time.monotonic() - t0
    rss_after, peak = _memory_kb()
    print(f"host RSS {rss_before} kB before, peak {peak} kB, after {rss_after} kB; answered in {elapsed:.2f} s")
    assert peak - rss_before < 40_000, f"the host buffered what the sandbox wrote: +{peak - rss_before} kB"
    assert not r.ok and r.error.type == "failed" and not r.error.retryable
    assert "over the" in r.error.message and "cap" in r.error.message and "may have run in part" in r.error.message
    assert cid not in sandbox_containers(), "the kernel that broke the protocol must be removed"
    r = run(legs, "state")
    assert r.ok and r.data["new_kernel"] and "NameError" in r.data["error"]


def test_a_forged_frame_with_a_wrong_id_fails_the_call_and_replaces_the_kernel(legs) -> None:
    run(legs, CHANNEL)
    (cid,) = sandbox_containers()
    r = run(
        legs, "os.write(channel(), frame({'id': 'forged', 'stdout': 'all fine', 'stdout_bytes': 8}))\nimport time; time.sleep(1)"
    )
    assert not r.ok and r.error.type == "failed" and "does not answer this call" in r.error.message
    assert "all fine" not in r.output
    assert cid not in sandbox_containers()
    r = run(legs, "1 + 1")
    assert r.ok and r.data["value"] == "2" and r.data["new_kernel"]


def test_a_forged_reply_stays_within_the_caps_and_the_real_one_is_caught_next_call(legs, dirs) -> None:
    run(legs, CHANNEL + "kept = 1")
    forged = (
        "rid = request_id()\nos.write(channel(), frame({'id': rid, 'stdout': 'S' * 2_000_000, "
        "'stderr': 'E' * 300_000, 'value': 'V' * 300_000, 'error': 'T' * 300_000, 'stdout_bytes': 3, "
        "'figures': ['f%d.png' % i for i in range(5000)], 'changed': ['c%d' % i for i in range(5000)]}))\n"
        + AFTER_THE_ANSWER  # the code returns (and the driver replies) once the host has the forged reply
    )
    r = run(legs, forged)
    assert r.ok, r.error  # the code itself produced this reply: bounded, it is its output
    for key in ("stdout", "stderr", "value", "error"):
        assert len(r.data[key]) <= 1000, key
    assert len(r.data["figures"]) <= 100 and len(r.output) <= 30_000
    # the driver's real reply comes after the forged one (once the code sees the host's answer): the
    # channel is out of step, caught before anything is sent, and the session gets a fresh kernel
    # (nothing of this call ran on the old one). Had the next call been sent before the real reply
    # came, the id check would fail that call instead (as in the test above): so wait for it.
    answered_then_wait_for_the_channel(legs, dirs[0], "the driver's real reply")
    r = run(legs, "'kept' in globals()")
    assert r.ok and r.data["value"] == "False" and r.data["new_kernel"]
    assert "out of step" in r.data["kernel_replaced"] and "out of step" in r.output


def test_garbage_written_between_calls_replaces_the_kernel_before_the_next_call(legs, dirs) -> None:
    r = run(
        legs,
        CHANNEL
        + "import threading\nfd = channel()\ndef garbage():\n"
        + textwrap.indent(AFTER_THE_ANSWER, "    ")  # between calls: once the host has this call's reply
        + "\n    os.write(fd, b'\\x00\\x00\\x00\\x05hello')\n"
        "threading.Thread(target=garbage).start()",
    )
    assert r.ok and r.data["error"] is None, r
    answered_then_wait_for_the_channel(legs, dirs[0], "the garbage the code's thread writes")
    r = run(legs, "6 * 7")
    assert r.ok and r.data["value"] == "42" and r.data["new_kernel"] and "out of step" in r.data["kernel_replaced"]


GROWING_HOST = """
import os, socket, subprocess, sys, threading, time
from agent_legs import Legs
ws = sys.argv[1]
legs = Legs(workspace=ws, state_dir=sys.argv[2], settings={"code": {"pool_size": 1}})
leave = ("import os, threading, time\\n"
         "def grow():\\n"
         "    while True:\\n"
         "        with open('grow.txt', 'a') as f:\\n"
         "            f.write('x' * 100)\\n"
         "        time.sleep(0.02)\\n"
         "threading.Thread(target=grow).start()\\n"  # non-daemon: it kept the old kernel alive
         "def hog():\\n"
         "    started = time.monotonic()\\n"
         "    while not os.path.exists('answered'):\\n"  # the host has this call's reply (the kernel needs the GIL)
         "        time.sleep(0.01)\\n"
         "    with open('hogging', 'w') as f:\\n"
         "        f.write('%.1f' % (time.monotonic() - started))\\n"
         "    while True:\\n"
         "        7 ** (7 ** 9)\\n"  # holds the GIL for a minute or more at a time: no in-kernel watcher runs
         "threading.Thread(target=hog).start()\\n"
         "'left running'")
r = legs.run("code.run", {"code": leave}, session="grower")
assert r.ok, r
open(os.path.join(ws, "answered"), "w").close()
threading.Thread(target=legs.run, args=("code.run", {"code": "open('busy', 'w').close()\\nwhile True: pass",
                 "timeout_s": 600}), kwargs={"session": "busy"}, daemon=True).start()
answered = time.monotonic()
owner = f"agent-legs.sandbox.owner={socket.gethostname()}:{os.getpid()}"

def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout.split()

def processes():  # every process of every running container of this host, as the host sees them
    return {cid: docker("top", cid, "-eo", "pid")[1:] for cid in docker("ps", "-q", "--filter", f"label={owner}")}

# not a pause but what the test needs: the grower's hog holds its kernel's GIL, the busy kernel runs its loop,
# and the three containers (the grower, the busy one, the pool's refill) each run the driver's two processes
deadline = time.monotonic() + 90
while True:
    waiting = [name for name in ("hogging", "busy") if not os.path.exists(os.path.join(ws, name))]
    seen = processes()
    if not waiting and len(seen) == 3 and all(len(pids) >= 2 for pids in seen.values()):
        break
    if time.monotonic() > deadline:
        sys.exit(f"not ready within 90 s: no {waiting} in the workspace; the containers' processes: {seen}")
    time.sleep(0.1)
with open(os.path.join(ws, "hogging")) as f:
    hog_waited = f.read()
print(f"the hog waited {hog_waited} s for the call's answer, the host {time.monotonic() - answered:.1f} s more for "
      "the rest", file=sys.stderr, flush=True)
print(os.getpid(), *(pid for pids in seen.values() for pid in pids), flush=True)
os.kill(os.getpid(), 9)
"""


def test_containers_die_with_their_host_even_with_threads_left_running(tmp_path) -> None:
    import socket

    ws = tmp_path / "w"
    proc = subprocess.run(
        [sys.executable, "-c", GROWING_HOST, str(ws), str(tmp_path / "s")], capture_output=True, text=True, timeout=240
    )
    killed_at = time.monotonic()
    assert proc.returncode == -9, proc.stderr
    print(proc.stderr.splitlines()[-1])  # how long the host waited for what the test needs
    host_pid, *pids = proc.stdout.split()
    owner = f"agent-legs.sandbox.owner={socket.gethostname()}:{host_pid}"

    def running() -> list[str]:
        return subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label={owner}"], capture_output=True, text=True, check=True
        ).stdout.split()

    def every() -> list[str]:
        return subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={owner}"], capture_output=True, text=True, check=True
        ).stdout.split()

    try:
        assert len(every()) == 3  # the grower, the busy kernel, the pooled one
        while running() and time.monotonic() - killed_at < 10:
            time.sleep(0.2)
        print(f"containers stopped {time.monotonic() - killed_at:.1f} s after the host was killed")
        assert running() == [], "a container outlived its host by more than 10 s"
        assert len(pids) >= 6  # each container: the driver's supervisor and kernel, and more in the busy ones
        assert [p for p in pids if Path(f"/proc/{p}").exists()] == [], "a sandbox process outlived its host"
        size = (ws / "grow.txt").stat().st_size
        assert size > 0
        time.sleep(1.0)
        assert (ws / "grow.txt").stat().st_size == size, "the workspace file still grows"
    finally:
        for cid in every():
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def test_timeout_s_plus_the_queue_timeout_bound_the_container_start(dirs) -> None:
    ws, st = dirs
    policy = {"code": {"queue_timeout_s": 0}}  # getting a kernel may take timeout_s + queue_timeout_s
    with Legs(workspace=ws, state_dir=st, policy=policy, settings={"code": {"pool_size": 0}}) as legs:
        assert legs.run("code.run", {"code": "1"}, session="warm-up").ok  # the engine answers; no pool
        t0 = time.monotonic()
        r = legs.run("code.run", {"code": "open('ran', 'w').close()", "timeout_s": 0.05})
        elapsed = time.monotonic() - t0
        assert r.error is not None and r.error.type == "timeout" and r.error.retryable, r
        assert "ready within 0.05 s" in r.error.message and "nothing ran" in r.error.message, r.error.message
        assert "policy.code.queue_timeout_s" in r.error.message, r.error.message
        assert elapsed < 5, f"{elapsed:.1f} s"
        r = legs.run("code.run", {"code": "import os; os.path.exists('ran')"})
        assert r.ok and r.data["value"] == "False" and r.data["new_kernel"]
    # the container whose start was abandoned is removed too (no_leftover_containers)


def test_the_code_gets_its_whole_timeout_s_after_a_slow_container_start(dirs) -> None:
    """Before: ``timeout_s`` bounded the whole call, so a short limit spent on a container start (slow behind a
    burst of other sessions' starts: 26 first calls failed so at 128 sessions) left the code nothing. Now the
    code's own limit starts when it is sent; the start is bounded by ``timeout_s + policy.code.queue_timeout_s``."""
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0}}) as legs:
        assert legs.run("code.run", {"code": "1"}, session="warm-up").ok  # the engine answers; no pool
        # a new session: its container start alone takes longer than 0.2 s here (docker start), then the code runs
        r = legs.run("code.run", {"code": "import time; time.sleep(0.05); 'done'", "timeout_s": 0.2}, session="new")
        assert r.ok and r.data["value"] == "'done'" and r.data["new_kernel"], r
        # and the code's own limit still holds once it runs: killed at 0.2 s, not at 0.2 s + the queue's 60 s
        t0 = time.monotonic()
        r = legs.run("code.run", {"code": "import time; time.sleep(30)", "timeout_s": 0.2}, session="new")
        assert r.error is not None and r.error.type == "timeout" and "0.2 s timeout and was killed" in r.error.message, r
        assert time.monotonic() - t0 < 10
