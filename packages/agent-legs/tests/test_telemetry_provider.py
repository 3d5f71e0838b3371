"""Spans go where the application's spans go.

``Legs()`` without ``tracer_provider=`` uses the provider the application installed globally
(``trace.set_tracer_provider``: Phoenix, Logfire, Langfuse, ...), also when it is installed after
``Legs()`` was built; only without one does it keep its own provider (OTLP by environment, else
nothing recorded). The action log is written in every case, and ``ActionResult.trace_id`` always
names the call's action-log line. The global provider can be set once per process: each case runs in
a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from agent_legs import Legs

mode, ws, st = sys.argv[1:4]
app_exporter, own_exporter = InMemorySpanExporter(), InMemorySpanExporter()
app_provider, own_provider = TracerProvider(), TracerProvider()
app_provider.add_span_processor(SimpleSpanProcessor(app_exporter))
own_provider.add_span_processor(SimpleSpanProcessor(own_exporter))
if mode in ("before", "explicit"):
    trace.set_tracer_provider(app_provider)
if mode == "wrapped":  # a library's own provider class over an SDK one, as Logfire installs
    class LibraryProvider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return app_provider.get_tracer(*args, **kwargs)
    trace.set_tracer_provider(LibraryProvider())
legs = Legs(workspace=ws, state_dir=st, tracer_provider=own_provider if mode == "explicit" else None)
if mode == "after":
    trace.set_tracer_provider(app_provider)
tracer = trace.get_tracer("app")
with tracer.start_as_current_span("agent run") as app_span:
    ctx = app_span.get_span_context()
    results = [legs.run("files.write", {"path": "a.txt", "content": "hi \"there\""}, call_id="c1")]
results.append(legs.run("files.read", {"path": "a.txt"}))
provider = getattr(legs._telemetry, "provider", None)
# whether a handler's child span may be the invalid span (nobody could read it): only with nothing recording
records_nothing = getattr(legs._telemetry.tracer, "records_nothing", lambda: "no such check")()
legs.close()
with tracer.start_as_current_span("after close"):  # close() must leave the application's provider working
    pass

def dump(exporter):
    return [{"name": s.name, "trace_id": f"{s.context.trace_id:032x}", "span_id": f"{s.context.span_id:016x}",
             "parent": f"{s.parent.span_id:016x}" if s.parent else None, "attributes": dict(s.attributes)}
            for s in exporter.get_finished_spans()]

print(json.dumps({"provider": provider, "records_nothing": records_nothing, "app_span": f"{ctx.span_id:016x}", "app_trace": f"{ctx.trace_id:032x}",
                  "app_valid": ctx.is_valid, "results": [r.model_dump(mode="json") for r in results],
                  "app_spans": dump(app_exporter), "own_spans": dump(own_exporter)}))
"""


def run_case(mode: str, tmp_path: Path) -> dict:
    ws, st = tmp_path / "ws", tmp_path / "st"
    env = {
        k: v for k, v in __import__("os").environ.items() if not k.startswith(("OTEL_", "AGENT_LEGS_"))
    }  # no collector: the internal provider records nothing
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(ws), str(st)], capture_output=True, text=True, timeout=120, env=env
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["log"] = [json.loads(line) for line in (st / "actions.jsonl").read_text().splitlines()]
    return out


def tool_spans(spans: list[dict]) -> list[dict]:
    return [s for s in spans if s["name"].startswith("execute_tool ")]


@pytest.mark.parametrize("mode", ["before", "after", "wrapped"])
def test_spans_go_to_the_applications_global_provider(mode: str, tmp_path: Path) -> None:
    out = run_case(mode, tmp_path)
    write, read = tool_spans(out["app_spans"])
    assert [write["name"], read["name"]] == ["execute_tool files_write", "execute_tool files_read"]
    # Nested under the application's current span, in its trace.
    assert write["parent"] == out["app_span"] and write["trace_id"] == out["app_trace"]
    assert read["parent"] is None
    assert out["app_spans"][-1]["name"] == "after close"
    # The ids the caller gets and the action log holds are the exported spans'.
    for result, span, entry in zip(out["results"], (write, read), out["log"], strict=True):
        assert (result["trace_id"], result["span_id"]) == (span["trace_id"], span["span_id"])
        assert (entry["trace_id"], entry["span_id"]) == (span["trace_id"], span["span_id"])
    a = write["attributes"]
    assert a["gen_ai.tool.name"] == "files_write" and a["gen_ai.tool.call.id"] == "c1"
    assert a["gen_ai.tool.description"].startswith("Write")
    assert a["gen_ai.tool.call.result"] == out["results"][0]["output"]  # the text itself, not '"Wrote ..."'
    assert json.loads(a["gen_ai.tool.call.arguments"]) == {"path": "a.txt", "content": 'hi "there"', "mode": "overwrite"}
    assert read["attributes"]["gen_ai.tool.call.result"] == 'hi "there"'
    assert out["provider"] == "application"
    assert out["records_nothing"] is False


def test_an_explicit_provider_wins_over_the_global_one(tmp_path: Path) -> None:
    out = run_case("explicit", tmp_path)
    assert tool_spans(out["app_spans"]) == []
    write, _read = tool_spans(out["own_spans"])
    assert write["parent"] == out["app_span"]  # the caller's current span, whatever provider made it
    assert out["results"][0]["trace_id"] == write["trace_id"] == out["log"][0]["trace_id"]
    assert out["provider"] == "explicit"
    assert out["records_nothing"] is False


def test_without_any_provider_the_action_log_still_names_every_call(tmp_path: Path) -> None:
    # Nothing records spans (no global provider, no OTLP endpoint): the trace ids stay real ids, each
    # naming its call's action-log line (agent-legs log --trace ID); nothing is exported anywhere.
    out = run_case("none", tmp_path)
    assert not out["app_valid"]
    assert out["app_spans"] == [] and out["own_spans"] == []
    assert len(out["log"]) == 2
    for result, entry in zip(out["results"], out["log"], strict=True):
        assert result["trace_id"] and result["trace_id"] == entry["trace_id"]
        assert result["span_id"] == entry["span_id"]
    assert out["provider"] == "internal"
    assert out["records_nothing"] is True  # the request's child span is then made for nothing (issue 20)
