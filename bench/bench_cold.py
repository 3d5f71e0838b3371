"""Cold start, measured the way sandbox vendors are compared (create -> first command), and close.

Each case of ``create_to_first_command`` is a whole new Python process, started in alternating rounds:

* ``agent_legs_prestart``: ``from agent_legs import Legs``; ``Legs(ws, st, policy={"allow": ["code.*"]})``
  (``settings.code.prestart = "auto"``: the sandbox starts in the background at once); the first
  ``legs.run("code.run", {"code": "print(1+1)"})``; ``legs.close()``;
* ``agent_legs_no_prestart``: the same with ``prestart = false`` (the first call starts the sandbox);
* ``..._model_think_1s``: both again with a 1 s pause between ``Legs()`` and the first call (an
  agent's model answering first), the pause not counted: what prestarting buys a real agent;
* ``autogen_ext_DockerCommandLineCodeExecutor``: ``start()`` + the first ``execute_code_blocks``, then ``stop()``;
* ``llm_sandbox_SandboxSession``: ``open()`` + the first ``run``, then ``close()``;
* ``floor_docker_py``: the physical floor, the bare minimum any Docker sandbox pays on this engine: docker-py
  connects (one ping naming the API version, as ours does), creates a container of the same image with the
  same runtime and hardening options as ours (non-root user, no network, read-only root, the ``/tmp``
  tmpfs, all capabilities dropped, ``no-new-privileges``, pids/memory/CPU limits, the workspace bind mount,
  no log driver), attaches, starts it running ``python3 -c "print(1+1)"`` and reads ``2`` from it;
* ``floor_docker_py_bare``: the same with no option but the command (what the options cost together).

Every process finds Agent Legs' modules compiled (``_compiled``), as pip leaves an installed package: with an
editable install and ``PYTHONDONTWRITEBYTECODE`` set (as on this project's machines) each new process would
otherwise compile every module it imports from source, which no installed user pays (the peers' bytecode is
in site-packages): measured 2026-12-03, about 150 ms of ``Legs()`` + the first ``code.run`` and 650 ms of
the import.

Agent Legs' figure is also given against the floor of the same round (``vs_floor``): ours minus the floor
is our own overhead, the part we control (``docker start`` itself is the engine's).

The figure of each case (its p50/p95 row) is create -> first command's result, timed inside the process
after the imports: for Agent Legs ``Legs()`` + the first ``code.run``, for a peer its start + its
first command. Beside it: the import, ``Legs()`` alone, the first call alone, close/stop, and the
whole process's wall time seen from outside (interpreter start-up, imports, and the exit, which for
Agent Legs waits for the containers' removal). Same engine and image for all (agent-legs-sandbox:latest).

``close_repeated``: in one process, ``Legs()`` + a first ``code.run`` + ``close()`` again and again:
``close()`` p50/p95 (kernels killed, containers removed in the background) and, once all those
removals are done, how many of the process's containers are left (must be 0).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._stats import summarize

IMAGE = "agent-legs-sandbox:latest"
THINK_S = 1.0  # the "model_think" cases: a pause between Legs() and the first code.run, not counted

OURS = """
import json, sys, time
t0 = time.perf_counter()
from agent_legs import Legs
t1 = time.perf_counter()
prestart = sys.argv[3] == "auto" and "auto"
legs = Legs(sys.argv[1], sys.argv[2], policy={"allow": ["code.*"]}, settings={"code": {"prestart": prestart}})
t2 = time.perf_counter()
time.sleep(float(sys.argv[4]))  # the agent's model answering before its first code.run (0 or 1 s): not counted
t2b = time.perf_counter()
r = legs.run("code.run", {"code": "print(1+1)"})
t3 = time.perf_counter()
assert r.ok and r.data["stdout"] == "2\\n", r
legs.close()
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "create_s": t2 - t1, "first_s": t3 - t2b, "close_s": t4 - t3}))
"""

AUTOGEN = """
import asyncio, json, os, sys, tempfile, time
t0 = time.perf_counter()
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from autogen_ext.code_executors.docker import DockerCommandLineCodeExecutor
t1 = time.perf_counter()
out = {"import_s": t1 - t0}

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        t = time.perf_counter()
        ex = DockerCommandLineCodeExecutor(image=sys.argv[1], work_dir=tmp, timeout=60)
        await ex.start()
        t2 = time.perf_counter()
        r = await ex.execute_code_blocks([CodeBlock(code="print(1+1)", language="python")], CancellationToken())
        t3 = time.perf_counter()
        assert r.exit_code == 0 and r.output.strip() == "2", r
        await ex.stop()
        out.update(create_s=t2 - t, first_s=t3 - t2, close_s=time.perf_counter() - t3)

asyncio.run(main())
print(json.dumps(out))
"""

LLM_SANDBOX = """
import json, sys, time
t0 = time.perf_counter()
from llm_sandbox import SandboxSession
t1 = time.perf_counter()
t = time.perf_counter()
s = SandboxSession(lang="python", image=sys.argv[1], workdir="/tmp", skip_environment_setup=True,
                   runtime_configs={"command": ["sleep", "infinity"]}, verbose=False)
s.open()
t2 = time.perf_counter()
r = s.run("print(1+1)")
t3 = time.perf_counter()
assert r.exit_code == 0 and r.stdout.strip() == "2", r
s.close()
print(json.dumps({"import_s": t1 - t0, "create_s": t2 - t, "first_s": t3 - t2, "close_s": time.perf_counter() - t3}))
"""


FLOOR = """
import json, os, sys, tempfile, time
t0 = time.perf_counter()
import docker
t1 = time.perf_counter()
out = {"import_s": t1 - t0}
bare = sys.argv[2] == "bare"
with tempfile.TemporaryDirectory() as ws:
    os.chmod(ws, 0o777)
    t = time.perf_counter()
    client = docker.from_env(version=docker.constants.MINIMUM_DOCKER_API_VERSION)
    reply = client.api._get(client.api._url("/_ping"))  # the ping names the API version (no /version probe)
    client.api._version = reply.headers["Api-Version"]
    options = {} if bare else dict(
        user="1000:1000", network_mode="none", read_only=True,
        tmpfs={"/tmp": "size=256m,mode=1777,nosuid,nodev"}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        pids_limit=256, mem_limit="512m", memswap_limit="512m", nano_cpus=10**9, hostname="sandbox",
        working_dir="/workspace", volumes={ws: {"bind": "/workspace", "mode": "rw"}}, runtime="runc",
        log_config={"type": "none"}, labels={"agent-legs.bench-floor": "1"},
    )
    c = client.containers.create(sys.argv[1], command=["python3", "-c", "print(1+1)"], stdin_open=True, **options)
    try:
        sock = c.attach_socket(params={"stdout": 1, "stderr": 1, "stream": 1})
        c.start()
        data = b""
        while b"2\\n" not in data:
            chunk = sock._sock.recv(4096)
            if not chunk:
                break
            data += chunk
        t2 = time.perf_counter()
        assert data.endswith(b"2\\n"), data
        out.update(create_s=0.0, first_s=t2 - t)
    finally:
        t3 = time.perf_counter()
        c.remove(force=True)
        out["close_s"] = time.perf_counter() - t3
print(json.dumps(out))
"""


def _process(code: str, *args: str) -> dict[str, float]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-800:])
    out: dict[str, float] = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def _cases(tmp: Path) -> dict[str, Any]:
    def ours(prestart: str, think_s: float = 0.0) -> Any:
        def go(i: int) -> dict[str, float]:
            where = f"{prestart}-{think_s}-{i}"
            return _process(OURS, str(tmp / f"ws-{where}"), str(tmp / f"st-{where}"), prestart, str(think_s))

        return go

    return {
        "agent_legs_prestart": ours("auto"),
        "agent_legs_no_prestart": ours("false"),
        "agent_legs_prestart_model_think_1s": ours("auto", THINK_S),
        "agent_legs_no_prestart_model_think_1s": ours("false", THINK_S),
        "autogen_ext_DockerCommandLineCodeExecutor": lambda i: _process(AUTOGEN, IMAGE),
        "llm_sandbox_SandboxSession": lambda i: _process(LLM_SANDBOX, IMAGE),
        "floor_docker_py": lambda i: _process(FLOOR, IMAGE, "options"),
        "floor_docker_py_bare": lambda i: _process(FLOOR, IMAGE, "bare"),
    }


def _compiled() -> None:
    """Agent Legs' bytecode written once before the rounds (what ``pip install`` does for a wheel)."""
    import compileall

    import agent_legs

    compileall.compile_dir(str(Path(agent_legs.__file__).parent), quiet=1)


def create_to_first_command(rounds: int) -> dict[str, Any]:
    _compiled()
    samples: dict[str, list[dict[str, float]]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(Path(tmp))
        for i in range(rounds):
            for name, case in cases.items():
                if name in errors:
                    continue
                try:
                    samples.setdefault(name, []).append(case(i))
                except Exception as exc:  # a peer not installed (or failing) does not cost the others
                    errors[name] = f"{type(exc).__name__}: {str(exc)[-300:]}"
    first = {n: summarize([s["create_s"] + s["first_s"] for s in v]) for n, v in samples.items() if v}
    parts = {
        n: {k: summarize([s[k] for s in v]) for k in ("import_s", "create_s", "first_s", "close_s", "process_s")}
        for n, v in samples.items()
        if v
    }
    out: dict[str, Any] = {"create_plus_first_command": first, "parts": parts}
    # ours against the floor of the same round: the ratio, and what is above it (our own overhead)
    floor = [s["first_s"] for s in samples.get("floor_docker_py", [])]
    if floor:
        vs: dict[str, Any] = {"floor_p50_ms": round(statistics.median(floor) * 1000, 1)}
        for name in ("agent_legs_prestart", "agent_legs_no_prestart"):
            ours = [s["create_s"] + s["first_s"] for s in samples.get(name, [])]
            if len(ours) == len(floor):
                vs[name] = {
                    "ratio_p50": round(statistics.median(o / f for o, f in zip(ours, floor, strict=True)), 3),
                    "overhead": summarize([o - f for o, f in zip(ours, floor, strict=True)]),
                }
        out["vs_floor"] = vs
    return {**out, **({"errors": errors} if errors else {})}


def close_repeated(n: int) -> dict[str, Any]:
    from agent_legs import Legs
    from agent_legs.actions.code import _reaper

    closes, firsts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            t = time.perf_counter()
            legs = Legs(Path(tmp) / f"ws{i}", Path(tmp) / f"st{i}", policy={"allow": ["code.*"]})
            r = legs.run("code.run", {"code": "print(1+1)"})
            firsts.append(time.perf_counter() - t)
            assert r.ok, r
            t = time.perf_counter()
            legs.close()
            closes.append(time.perf_counter() - t)
        t = time.perf_counter()
        left = _reaper.drain()
        drained = time.perf_counter() - t
    return {
        "legs_close": summarize(closes),
        "legs_plus_first_call_in_process": summarize(firsts),
        "removals_waited_at_the_end_ms": round(drained * 1000, 1),
        "containers_left_after_drain": len(left),
    }


def run(iterations: int, smoke: bool = False) -> dict[str, Any]:
    from agent_legs.actions.code._sandbox import build_image

    build_image(IMAGE, progress=lambda m: None)  # same image for everyone; a no-op when up to date
    rounds = 1 if smoke else max(3, min(iterations // 100, 7))
    result: dict[str, Any] = {"new_process": create_to_first_command(rounds)}
    result["close_repeated"] = close_repeated(3 if smoke else max(10, min(iterations // 25, 20)))
    ours = result["new_process"]["create_plus_first_command"].get("agent_legs_prestart")
    close = result["close_repeated"]["legs_close"]
    result["targets"] = {
        "legs_plus_first_code_run_new_process_p50_ms<=300": bool(ours) and ours["p50_us"] <= 300_000,
        "legs_close_p95_ms<=100": close["p95_us"] <= 100_000,
        "no_container_left": result["close_repeated"]["containers_left_after_drain"] == 0,
    }
    result["notes"] = (
        "whole new processes in alternating rounds; create_plus_first_command: Legs() + the first code.run "
        "(after the import), or a peer's start + its first command; parts: import, create, first command, "
        "close/stop, and the whole process wall time from outside (start-up, imports, exit); Agent Legs' bytecode "
        "compiled before the rounds, as pip leaves an installed package; floor_docker_py: docker-py "
        "connect + create (our options) + attach + start of python3 -c, the physical floor; vs_floor: ours against it, "
        "per round"
    )
    return result
