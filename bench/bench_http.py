"""http.request on a 1 KB local response against raw httpx and LangChain's RequestsGetTool.

Sequential p50 (agent-legs vs a pooled raw ``httpx.AsyncClient``) and throughput at 50 concurrent
calls (agent-legs vs LangChain's async ``RequestsGetTool``, which uses aiohttp), same server, same run.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agent_legs import Legs

from ._stats import ratio, summarize, time_async


async def _throughput(call: Any, total: int, concurrency: int = 50) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return round(total / (time.perf_counter() - t0), 1)


def _serve(port_queue: Any) -> None:
    """A fast aiohttp server with a 1 KB response, so the server is not what is measured."""
    from aiohttp import web

    body = b"x" * 1024

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/1kb", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def run(iterations: int) -> dict[str, Any]:
    import multiprocessing

    from langchain_community.tools.requests.tool import RequestsGetTool
    from langchain_community.utilities.requests import TextRequestsWrapper

    # The server runs in its own process: in-process it would compete with the clients for the GIL.
    queue: Any = multiprocessing.get_context("fork").Queue()
    proc = multiprocessing.get_context("fork").Process(target=_serve, args=(queue,), daemon=True)
    proc.start()
    port = queue.get(timeout=30)
    url = f"http://127.0.0.1:{port}/1kb"
    lc_tool = RequestsGetTool(requests_wrapper=TextRequestsWrapper(), allow_dangerous_requests=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, Legs(
            workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st",
            policy={"network": {"allow_hosts": [f"127.0.0.1:{port}"]}},
        ) as legs:
            async def main() -> dict[str, Any]:
                async with httpx.AsyncClient() as raw:
                    async def legs_call() -> None:
                        r = await legs.arun("http.request", {"method": "GET", "url": url})
                        assert r.ok, r.output

                    async def raw_call() -> None:
                        (await raw.get(url)).raise_for_status()

                    async def lc_call() -> None:
                        await lc_tool.ainvoke({"url": url})

                    seq: dict[str, list[float]] = {"agent_legs": [], "raw_httpx": [], "langchain_requests_get": []}
                    for _ in range(5):  # alternate in rounds so drift hits all equally
                        seq["agent_legs"] += await time_async(legs_call, iterations // 5)
                        seq["raw_httpx"] += await time_async(raw_call, iterations // 5)
                        seq["langchain_requests_get"] += await time_async(lc_call, iterations // 5)
                    sequential = {k: summarize(v) for k, v in seq.items()}
                    total = max(200, iterations * 2)
                    conc = {
                        "agent_legs_req_s": await _throughput(legs_call, total),
                        "raw_httpx_req_s": await _throughput(raw_call, total),
                        "langchain_requests_get_req_s": await _throughput(lc_call, total),
                    }
                return {"sequential": sequential, "concurrent_50": conc}

            result = asyncio.run(main())
    finally:
        proc.kill()
    seq, conc = result["sequential"], result["concurrent_50"]
    result["ratios"] = {
        "sequential_vs_raw_httpx": ratio(seq["agent_legs"], seq["raw_httpx"]),
        "concurrent_throughput_vs_langchain": round(conc["agent_legs_req_s"] / conc["langchain_requests_get_req_s"], 3),
    }
    result["targets"] = {
        "sequential p50 <= 1.15x raw httpx": result["ratios"]["sequential_vs_raw_httpx"] <= 1.15,
        "50-concurrent throughput >= 2x LangChain": result["ratios"]["concurrent_throughput_vs_langchain"] >= 2,
    }
    result["notes"] = ("the local server is Python's ThreadingHTTPServer, which bounds every client's throughput; "
                       "agent-legs includes validation, policy, guard, one span and one log line per call")
    return result
