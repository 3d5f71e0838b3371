"""code.run against its peers, on the same machine, engine and image (agent-legs-sandbox:latest).

Agent Legs: a warm ``print(1+1)`` (the full ``Legs.run`` pipeline: validation, policy, span, log
line, the hop to the runtime loop and the round trip to the kernel), the first call of a new
session served from the warm pool, a cold start without pool, closing a session, memory per idle
session. Peers: autogen-ext's ``DockerCommandLineCodeExecutor`` and llm-sandbox's
``SandboxSession`` (a ``docker exec`` per call), run side by side: start, warm ``print(1+1)``,
whether state survives between calls, whether a timed-out loop keeps burning CPU, stop time,
idle memory. Ratios are peer / Agent Legs (above 1: Agent Legs is faster or smaller).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._stats import ratio, summarize, time_sync

IMAGE = "agent-legs-sandbox:latest"
PRINT = "print(1+1)"
LOOP = "while True:\n    pass\n"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _docker() -> Any:
    import docker

    return docker.from_env()


def _idle_memory_mb(container_ids: list[str]) -> float | None:
    """Mean memory use of idle containers (cgroup usage minus page cache), in MB."""
    client = _docker()
    values = []
    for cid in container_ids:
        try:
            stats = client.containers.get(cid).stats(stream=False)
        except Exception:
            continue
        mem = stats.get("memory_stats", {})
        detail = mem.get("stats", {})
        cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
        if "usage" in mem:
            values.append((mem["usage"] - cache) / 2**20)
    return round(sum(values) / len(values), 1) if values else None


def _burning(container_id: str) -> list[str]:
    """Processes of a container still running the benchmark's infinite loop."""
    try:
        top = _docker().containers.get(container_id).top(ps_args="-eo pid,pcpu,args")
    except Exception:
        return []  # container gone: nothing burns
    return [
        " ".join(p)
        for p in top.get("Processes") or []
        if "tmp_code" in " ".join(p)
        or "while" in " ".join(p)
        or ("python" in " ".join(p) and "agent-legs-driver" not in " ".join(p) and "sleep" not in " ".join(p))
    ]


@contextlib.contextmanager
def _timed() -> Iterator[list[float]]:
    box: list[float] = []
    t = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - t)


# -- Agent Legs ----------------------------------------------------------------------------------
def bench_agent_legs(iterations: int, first_calls: int) -> dict[str, Any]:
    from agent_legs import Legs
    from agent_legs.actions.code._service import CodeService

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        legs = Legs(workspace=root / "ws", state_dir=root / "st", settings={"code": {"pool_size": 2}})
        try:
            with _timed() as t:
                r = legs.run("code.run", {"code": PRINT}, session="warm")
            assert r.ok and r.data["stdout"] == "2\n", r
            out["first_call_of_process_ms"] = _ms(t[0])  # service start + a container (pool still filling)
            samples = time_sync(lambda: legs.run("code.run", {"code": PRINT}, session="warm"), iterations)
            out["warm_print_1_plus_1"] = summarize(samples)
            svc = legs._runtime._services[CodeService]  # type: ignore[index]

            def pool_ready() -> None:
                deadline = time.monotonic() + 60
                while len(svc.pool) < 2 and time.monotonic() < deadline:  # type: ignore[attr-defined]
                    time.sleep(0.01)

            pooled, closes = [], []
            for i in range(first_calls):
                pool_ready()
                with _timed() as t:
                    r = legs.run("code.run", {"code": PRINT}, session=f"pooled-{i}")
                assert r.ok and r.data["new_kernel"], r
                pooled.append(t[0])
            out["new_session_first_call_pooled"] = summarize(pooled)
            pool_ready()
            kernels = svc.kernels  # type: ignore[attr-defined]
            idle_ids = [k.container.id for s, k in kernels.items() if s.startswith("pooled-")]
            time.sleep(1.0)
            out["idle_session_memory_mb"] = _idle_memory_mb(idle_ids)
            for i in range(first_calls):
                with _timed() as t:
                    legs.close_session(f"pooled-{i}")
                closes.append(t[0])
            out["session_close"] = summarize(closes)
            # a timed-out loop: the container is killed and removed, nothing keeps running
            cid = kernels["warm"].container.id
            with _timed() as t:
                r = legs.run("code.run", {"code": LOOP, "timeout_s": 1}, session="warm")
            out["timeout_1s"] = {
                "error": r.error.type if r.error else None,
                "returned_after_ms": _ms(t[0]),
                "still_burning": _burning(cid),
                "keeps_state_between_calls": _keeps_state(legs),
            }
        finally:
            with _timed() as t:
                legs.close()
            out["legs_close_ms"] = _ms(t[0])

        # cold start: no pool, every new session starts its container in the call
        legs = Legs(workspace=root / "ws2", state_dir=root / "st2", settings={"code": {"pool_size": 0}})
        try:
            legs.run("code.run", {"code": "1"}, session="service-up")
            cold = []
            for i in range(first_calls):
                with _timed() as t:
                    r = legs.run("code.run", {"code": PRINT}, session=f"cold-{i}")
                assert r.ok and r.data["new_kernel"], r
                cold.append(t[0])
                legs.close_session(f"cold-{i}")
            out["new_session_first_call_cold_no_pool"] = summarize(cold)
        finally:
            legs.close()
    return out


def _keeps_state(legs: Any) -> bool:
    legs.run("code.run", {"code": "kept_value = 41"}, session="state")
    r = legs.run("code.run", {"code": "kept_value + 1"}, session="state")
    return bool(r.ok and r.data["value"] == "42")


# -- autogen-ext ---------------------------------------------------------------------------------
def bench_autogen(iterations: int) -> dict[str, Any]:
    from autogen_core import CancellationToken
    from autogen_core.code_executor import CodeBlock
    from autogen_ext.code_executors.docker import DockerCommandLineCodeExecutor

    out: dict[str, Any] = {}

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o777)  # the image's user (uid 1000) runs the code autogen writes here
            ex = DockerCommandLineCodeExecutor(image=IMAGE, work_dir=tmp, timeout=60)
            t = time.perf_counter()
            await ex.start()
            out["start_ms"] = _ms(time.perf_counter() - t)
            token = CancellationToken()

            async def call(code: str) -> Any:
                return await ex.execute_code_blocks([CodeBlock(code=code, language="python")], token)

            r = await call(PRINT)
            assert r.exit_code == 0 and r.output.strip() == "2", r
            samples = []
            for _ in range(5):
                await call(PRINT)
            for _ in range(iterations):
                t = time.perf_counter()
                await call(PRINT)
                samples.append(time.perf_counter() - t)
            out["warm_print_1_plus_1"] = summarize(samples)
            await call("kept_value = 41")
            r = await call("print(kept_value + 1)")
            out["keeps_state_between_calls"] = r.exit_code == 0 and r.output.strip() == "42"
            cid = ex._container.id  # type: ignore[attr-defined, union-attr]
            await asyncio.sleep(1.0)
            out["idle_memory_mb"] = _idle_memory_mb([cid])
            # autogen's timeout is per executor (in seconds); a 1 s one for the loop
            loop_ex_timeout = ex._timeout  # type: ignore[attr-defined]
            ex._timeout = 1  # type: ignore[attr-defined]
            t = time.perf_counter()
            r = await call(LOOP)
            out["timeout_1s"] = {"exit_code": r.exit_code, "returned_after_ms": _ms(time.perf_counter() - t)}
            await asyncio.sleep(0.5)
            out["timeout_1s"]["still_burning"] = _burning(cid)
            ex._timeout = loop_ex_timeout  # type: ignore[attr-defined]
            t = time.perf_counter()
            await ex.stop()
            out["stop_ms"] = _ms(time.perf_counter() - t)

    asyncio.run(main())
    return out


# -- llm-sandbox ---------------------------------------------------------------------------------
def bench_llm_sandbox(iterations: int) -> dict[str, Any]:
    from llm_sandbox import SandboxSession

    out: dict[str, Any] = {}
    # its defaults except what the image needs: a long-running command (the image's own CMD is our
    # driver) and an existing workdir (environment setup, which pip-installs, is skipped: no network)
    session = SandboxSession(
        lang="python",
        image=IMAGE,
        workdir="/tmp",
        skip_environment_setup=True,
        runtime_configs={"command": ["sleep", "infinity"]},
        verbose=False,
    )
    t = time.perf_counter()
    session.open()
    out["start_ms"] = _ms(time.perf_counter() - t)
    try:
        r = session.run(PRINT)
        assert r.exit_code == 0 and r.stdout.strip() == "2", r
        out["warm_print_1_plus_1"] = summarize(time_sync(lambda: session.run(PRINT), iterations, warmup=5))
        session.run("kept_value = 41")
        r = session.run("print(kept_value + 1)")
        out["keeps_state_between_calls"] = r.exit_code == 0 and r.stdout.strip() == "42"
        cid = session.container.id
        time.sleep(1.0)
        out["idle_memory_mb"] = _idle_memory_mb([cid])
        t = time.perf_counter()
        try:
            r = session.run(LOOP, timeout=1)
            outcome = f"exit {r.exit_code}"
        except Exception as exc:
            outcome = type(exc).__name__
        out["timeout_1s"] = {"outcome": outcome, "returned_after_ms": _ms(time.perf_counter() - t)}
        time.sleep(0.5)
        out["timeout_1s"]["still_burning"] = _burning(cid)
    finally:
        t = time.perf_counter()
        session.close()
        out["stop_ms"] = _ms(time.perf_counter() - t)
    return out


def _peer(name: str, fn: Callable[[int], dict[str, Any]], iterations: int) -> dict[str, Any]:
    try:
        return fn(iterations)
    except ImportError as exc:
        return {"error": f"{name} is not installed ({exc}); pip install the bench requirements"}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def run(iterations: int) -> dict[str, Any]:
    from agent_legs.actions.code._sandbox import build_image

    build_image(IMAGE, progress=lambda m: None)  # same image for everyone; a no-op when up to date
    first_calls = max(5, min(iterations // 10, 50))
    peer_iterations = max(10, min(iterations, 100))  # a docker exec per call: ~50-200 ms each
    ours = bench_agent_legs(iterations, first_calls)
    peers = {
        "autogen_ext_DockerCommandLineCodeExecutor": _peer("autogen-ext[docker]", bench_autogen, peer_iterations),
        "llm_sandbox_SandboxSession": _peer("llm-sandbox[docker]", bench_llm_sandbox, peer_iterations),
    }
    warm = ours["warm_print_1_plus_1"]
    ratios: dict[str, Any] = {}
    for name, res in peers.items():
        if "warm_print_1_plus_1" in res:
            ratios[f"{name}_warm_p50_vs_agent_legs"] = ratio(res["warm_print_1_plus_1"], warm)
            ratios[f"{name}_warm_p95_vs_agent_legs"] = ratio(res["warm_print_1_plus_1"], warm, "p95_us")
        if "stop_ms" in res:
            close_ms = ours["session_close"]["p50_us"] / 1000
            ratios[f"{name}_stop_vs_agent_legs_session_close"] = round(res["stop_ms"] / close_ms, 1)
        if "start_ms" in res:
            ratios[f"{name}_start_vs_agent_legs_pooled_first_call"] = round(
                res["start_ms"] * 1000 / ours["new_session_first_call_pooled"]["p50_us"], 1
            )
    targets = {
        "warm_p50_ms<=10": warm["p50_us"] <= 10_000,
        "new_session_pooled_p50_ms<=80": ours["new_session_first_call_pooled"]["p50_us"] <= 80_000,
        "session_close_p95_ms<=1000": ours["session_close"]["p95_us"] <= 1_000_000,
        "warm_p50_5x_faster_than_each_peer": all(v >= 5 for k, v in ratios.items() if k.endswith("_warm_p50_vs_agent_legs"))
        and bool(ratios),
    }
    return {"agent_legs": ours, "peers": peers, "ratios": ratios, "targets": targets, "image": IMAGE}
