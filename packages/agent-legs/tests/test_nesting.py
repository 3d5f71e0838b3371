"""Our ``execute_tool`` span sits under whatever span the caller is in: plain OpenTelemetry (sync, async,
other threads), OpenInference's LangChain and LlamaIndex tool spans, OpenLLMetry's LangChain tool spans;
executors' step spans sit under ours. Real instrumentors, real tool calls (no model needed to call a tool)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from agent_legs import Legs


@pytest.fixture
def legs(open_legs, captured_spans) -> Legs:
    return open_legs(tracer_provider=captured_spans.provider)


def _ours(captured) -> list[ReadableSpan]:
    return [
        s
        for s in captured.spans
        if s.instrumentation_scope
        and s.instrumentation_scope.name == "agent_legs"
        and (s.attributes or {}).get("agent_legs.action")
    ]


def _child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        span.parent is not None
        and span.parent.span_id == parent.context.span_id
        and span.context.trace_id == parent.context.trace_id
    )


# -- plain OpenTelemetry ---------------------------------------------------------------------------


def test_sync_calls_from_other_threads_nest_under_their_own_spans(legs, captured_spans) -> None:
    tracer = captured_spans.provider.get_tracer("agent")

    def worker(i: int) -> str:
        with tracer.start_as_current_span(f"worker {i}"):
            return legs.run("files.write", {"path": f"w{i}.txt", "content": "x"}).span_id

    with ThreadPoolExecutor(4) as pool:
        span_ids = list(pool.map(worker, range(8)))
    by_id = {f"{s.context.span_id:016x}": s for s in captured_spans.spans}
    for i, sid in enumerate(span_ids):
        assert _child_of(by_id[sid], captured_spans.by_name(f"worker {i}")[0])


def test_async_tasks_keep_their_own_parents(legs, captured_spans) -> None:
    tracer = captured_spans.provider.get_tracer("agent")

    async def step(i: int) -> str:
        with tracer.start_as_current_span(f"step {i}"):
            await asyncio.sleep(0.001 * (5 - i))  # interleave the tasks
            return (await legs.arun("files.list", {})).span_id

    async def main() -> list[str]:
        with tracer.start_as_current_span("turn"):
            return list(await asyncio.gather(*(step(i) for i in range(5))))

    span_ids = asyncio.run(main())
    by_id = {f"{s.context.span_id:016x}": s for s in captured_spans.spans}
    for i, sid in enumerate(span_ids):
        assert _child_of(by_id[sid], captured_spans.by_name(f"step {i}")[0])


def test_no_current_span_makes_a_root(legs, captured_spans) -> None:
    legs.run("files.list", {})
    (span,) = _ours(captured_spans)
    assert span.parent is None


def test_executor_step_spans_under_ours(tmp_path, captured_spans, http_server) -> None:
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        tracer_provider=captured_spans.provider,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
    ) as legs:
        r = legs.run("http.request", {"method": "GET", "url": http_server.url("/json")})
    assert r.ok
    (tool,) = _ours(captured_spans)
    (request,) = captured_spans.by_name("HTTP GET")
    assert _child_of(request, tool)


# -- parent hooks (the core's one mechanism; the framework-specific hooks live in the adapters) ---------


@pytest.fixture
def parent_hook():
    """Register a hook for the duration of a test (the registry is per process)."""
    from agent_legs._telemetry import _spans, register_parent_hook

    added: list[tuple[str, object]] = []

    def add(trigger: str, hook) -> None:
        register_parent_hook(trigger, hook)
        added.append((trigger, hook))

    yield add
    with _spans._hooks_lock:
        _spans._hooks = tuple(h for h in _spans._hooks if h not in added)


def test_a_parent_hook_names_the_parent_when_its_module_is_imported(legs, captured_spans, parent_hook) -> None:
    tracer = captured_spans.provider.get_tracer("framework")
    run_span = tracer.start_span("framework tool run")  # opened, never made current (as OpenInference does)
    parent_hook(__name__, lambda: run_span)
    legs.run("files.list", {})
    run_span.end()
    (ours,) = _ours(captured_spans)
    assert _child_of(ours, captured_spans.by_name("framework tool run")[0])


def test_a_span_the_caller_opened_inside_the_run_stays_the_parent(legs, captured_spans, parent_hook) -> None:
    tracer = captured_spans.provider.get_tracer("framework")
    run_span = tracer.start_span("framework tool run")
    parent_hook(__name__, lambda: run_span)
    with tracer.start_as_current_span("the caller's own step"):
        legs.run("files.list", {})
    run_span.end()
    (ours,) = _ours(captured_spans)
    assert _child_of(ours, captured_spans.by_name("the caller's own step")[0])


def test_a_hook_is_not_consulted_before_its_module_is_imported(legs, captured_spans, parent_hook) -> None:
    calls: list[int] = []
    parent_hook("agent_legs_tests_module_nobody_imports", lambda: calls.append(1))
    legs.run("files.list", {})
    (ours,) = _ours(captured_spans)
    assert calls == [] and ours.parent is None


def test_a_failing_hook_changes_nothing_but_the_parent(legs, captured_spans, parent_hook) -> None:
    def broken():
        raise AttributeError("another version's API")

    parent_hook(__name__, broken)
    parent_hook(__name__, lambda: object())  # not even a span
    r = legs.run("files.write", {"path": "x.txt", "content": "x"})
    assert r.ok, r.error
    (ours,) = _ours(captured_spans)
    assert ours.parent is None


# -- OpenInference: LangChain ----------------------------------------------------------------------


@pytest.fixture
def openinference_langchain(captured_spans):
    from openinference.instrumentation.langchain import LangChainInstrumentor

    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=captured_spans.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def _oi_tool_spans(captured) -> list[ReadableSpan]:
    return [s for s in captured.spans if (s.attributes or {}).get("openinference.span.kind") == "TOOL"]


def _tool_call(name: str, args: dict, call_id: str = "call_1") -> dict:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def test_own_langchain_tool_under_openinference_tool_span(legs, captured_spans, openinference_langchain) -> None:
    # A user's own LangChain tool that calls Agent Legs: OpenInference never makes its tool span current.
    from langchain_core.tools import tool

    @tool
    def save_note(text: str) -> str:
        """Save a note."""
        return legs.run("files.write", {"path": "note.txt", "content": text}).output

    @tool
    async def list_notes() -> str:
        """List the notes."""
        return (await legs.arun("files.list", {})).output

    save_note.invoke(_tool_call("save_note", {"text": "hi"}))
    asyncio.run(list_notes.ainvoke(_tool_call("list_notes", {}, "call_2")))
    tool_spans = {s.name: s for s in _oi_tool_spans(captured_spans)}
    ours = {s.name: s for s in _ours(captured_spans)}
    assert _child_of(ours["execute_tool files_write"], tool_spans["save_note"])
    assert _child_of(ours["execute_tool files_list"], tool_spans["list_notes"])


def test_span_opened_inside_the_tool_stays_the_parent(legs, captured_spans, openinference_langchain) -> None:
    from langchain_core.tools import tool

    tracer = captured_spans.provider.get_tracer("user")

    @tool
    def step(text: str) -> str:
        """A step."""
        with tracer.start_as_current_span("inside the tool"):
            return legs.run("files.write", {"path": "s.txt", "content": text}).output

    step.invoke(_tool_call("step", {"text": "x"}))
    (inner,) = captured_spans.by_name("inside the tool")
    (ours,) = _ours(captured_spans)
    assert _child_of(ours, inner)  # not moved up to OpenInference's tool span


def test_adapter_tools_under_openinference_in_an_agent(legs, captured_spans, openinference_langchain) -> None:
    from langchain.agents import create_agent

    from agent_legs_testing.agents import ScriptedChatModel
    from langchain_agent_legs import AgentLegsToolkit

    model = ScriptedChatModel(
        steps=[[("files_write", {"path": "a.txt", "content": "x"})], [("files_read", {"path": "a.txt"})], "done"]
    )
    create_agent(model, AgentLegsToolkit(legs=legs).get_tools()).invoke({"messages": [("user", "go")]})
    tool_spans = {s.name: s for s in _oi_tool_spans(captured_spans)}
    ours = {s.name: s for s in _ours(captured_spans)}
    assert set(ours) == {"execute_tool files_write", "execute_tool files_read"}
    assert _child_of(ours["execute_tool files_write"], tool_spans["files_write"])
    assert _child_of(ours["execute_tool files_read"], tool_spans["files_read"])
    # the whole agent run is one trace
    assert len({s.context.trace_id for s in captured_spans.spans}) == 1


def test_no_openinference_span_outside_a_langchain_run(legs, captured_spans, openinference_langchain) -> None:
    legs.run("files.list", {})
    (span,) = _ours(captured_spans)
    assert span.parent is None


# -- OpenInference: LlamaIndex ---------------------------------------------------------------------


@pytest.fixture
def openinference_llama_index(captured_spans):
    from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=captured_spans.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def test_llama_index_tools_under_openinference_spans(legs, captured_spans, openinference_llama_index) -> None:
    from llama_index.core.tools import FunctionTool

    from llama_index.tools.agent_legs import AgentLegsToolSpec

    def save_note(text: str) -> str:
        """Save a note."""
        return legs.run("files.write", {"path": "note.txt", "content": text}).output

    FunctionTool.from_defaults(fn=save_note).call(text="hi")
    (listing,) = AgentLegsToolSpec(legs, include=["files.list"]).to_tool_list()
    asyncio.run(listing.acall())
    ours = {s.name: s for s in _ours(captured_spans)}
    assert set(ours) == {"execute_tool files_write", "execute_tool files_list"}
    by_span_id = {s.context.span_id: s for s in captured_spans.spans}
    for span in ours.values():
        parent = by_span_id.get(span.parent.span_id) if span.parent else None
        assert parent is not None, f"{span.name} has no parent among {[s.name for s in captured_spans.spans]}"
        assert (parent.attributes or {}).get("openinference.span.kind") == "TOOL", parent.name


# -- OpenLLMetry (Traceloop) -----------------------------------------------------------------------
# Its uninstrument() leaves LangChain/LangGraph wrappers behind (re-exported names stay wrapped and keep
# opening spans on a shut-down provider), which would reparent every later test's spans: it runs in a
# child process of its own.

_OPENLLMETRY_PROBE = r"""
import json, sys
from pathlib import Path
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from agent_legs import Legs
from langchain_agent_legs import AgentLegsToolkit

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
LangchainInstrumentor().instrument(tracer_provider=provider)
base, prefix = Path(sys.argv[1]), sys.argv[2]
with Legs(workspace=base / "ws", state_dir=base / prefix, tracer_provider=provider,
          settings={"telemetry": {"span_name_prefix": prefix}}) as legs:
    (write,) = AgentLegsToolkit(legs=legs, include=["files.write"]).get_tools()
    write.invoke({"name": "files_write", "args": {"path": "a.txt", "content": "x"}, "id": "call_1", "type": "tool_call"})
print(json.dumps([{"name": s.name, "scope": s.instrumentation_scope.name, "span_id": s.context.span_id,
                   "trace_id": s.context.trace_id, "parent": s.parent.span_id if s.parent else None,
                   "attributes": {k: str(v) for k, v in (s.attributes or {}).items()}}
                  for s in exporter.get_finished_spans()]))
"""


@pytest.mark.parametrize("prefix", ["execute_tool", "agent_legs"])
def test_openllmetry_execute_tool_span_and_ours_are_distinguishable(tmp_path, prefix: str) -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _OPENLLMETRY_PROBE, str(tmp_path), prefix], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    spans = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [s for s in spans if s["scope"] == "agent_legs" and "agent_legs.action" in s["attributes"]]
    assert len(ours) == 1, [s["name"] for s in spans]
    (ours_span,) = ours
    theirs = [s for s in spans if s is not ours_span and s["name"].endswith("files_write")]
    assert len(theirs) == 1, [s["name"] for s in spans]
    (theirs_span,) = theirs
    assert theirs_span["name"] == "execute_tool files_write"  # OpenLLMetry's own name for a tool span
    assert ours_span["parent"] == theirs_span["span_id"] and ours_span["trace_id"] == theirs_span["trace_id"]
    assert ours_span["name"] == f"{prefix} files_write"
    # what tells ours apart whatever the name: our scope and our attributes
    assert theirs_span["scope"] != "agent_legs"
    assert ours_span["attributes"]["agent_legs.action"] == "files.write"
    assert not any(k.startswith("agent_legs.") for k in theirs_span["attributes"])
