"""Exactly one span and one action-log line per call, with the contract's attributes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from core_test_actions import registry
from opentelemetry.trace import SpanKind, StatusCode

from agent_legs import Legs

POLICY = {
    "allow": ["test.*"],
    "deny": ["test.boom"],
    "require_approval": ["mail.*"],
    "budgets": [{"actions": "test.fail", "limit": 1, "per": "total"}],
}
SECRET = "canary-5ecret-value-42"


@pytest.fixture
def legs(dirs, captured_spans):
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=POLICY,
        registry=registry,
        secrets={"CANARY": SECRET},
        tracer_provider=captured_spans.provider,
        approver=lambda r: False,
    ) as legs:
        yield legs


def test_one_span_per_call_whatever_happens(legs, captured_spans, read_log) -> None:
    legs.run("test.echo", {"text": "a"}, call_id="call_1")  # allow / ok
    legs.run("test.echo", {"nope": 1})  # invalid
    legs.run("test.boom", {})  # deny
    legs.run("mail.send", {"text": "x"})  # rejected
    legs.run("test.fail", {"text": "x"})  # ok decision, not_found
    legs.run("test.fail", {"text": "y"})  # budget_exceeded
    legs.run("test.sleep", {"seconds": 5})  # timeout
    spans = captured_spans.tool_spans()
    assert len(spans) == 7 and len(captured_spans.spans) == 7
    got = [(s.name, s.attributes["agent_legs.decision"], s.attributes["agent_legs.outcome"]) for s in spans]
    assert got == [
        ("execute_tool test_echo", "allow", "ok"),
        ("execute_tool test_echo", "invalid", "invalid_input"),
        ("execute_tool test_boom", "deny", "denied"),
        ("execute_tool mail_send", "rejected", "approval_denied"),
        ("execute_tool test_fail", "allow", "not_found"),
        ("execute_tool test_fail", "budget_exceeded", "budget_exceeded"),
        ("execute_tool test_sleep", "allow", "timeout"),
    ]
    log = read_log()
    assert [(e["action"], e["decision"], e["outcome"]) for e in log] == [
        (a.attributes["agent_legs.action"], d, o) for a, (_, d, o) in zip(spans, got, strict=True)
    ]
    for span, entry in zip(spans, log, strict=True):
        assert entry["trace_id"] == f"{span.context.trace_id:032x}"
        assert entry["span_id"] == f"{span.context.span_id:016x}"
        assert {"time", "session", "call_id", "duration_ms", "error"} <= set(entry)


def test_span_attributes(legs, captured_spans) -> None:
    r = legs.run("test.echo", {"text": "hello"}, session="thread-9", call_id="call_abc")
    (span,) = captured_spans.tool_spans()
    a = span.attributes
    assert span.kind == SpanKind.INTERNAL
    assert a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "test_echo" and a["gen_ai.tool.type"] == "function"
    assert a["gen_ai.tool.call.id"] == "call_abc"
    assert a["agent_legs.action"] == "test.echo" and a["agent_legs.session"] == "thread-9"
    assert json.loads(a["gen_ai.tool.call.arguments"]) == {"text": "hello"}
    assert a["gen_ai.tool.call.result"] == r.output == "hello"  # the text the model reads, not a JSON string
    assert a["gen_ai.tool.description"] == "Echo the text."
    assert span.status.status_code != StatusCode.ERROR
    assert r.trace_id == f"{span.context.trace_id:032x}"


def test_the_arguments_attribute_is_compact_json_and_a_lone_surrogate_still_gives_json(legs, captured_spans) -> None:
    """Issue 20, round 5: the arguments' JSON is written by orjson (compact; the stdlib encoder cost ~6 us
    per recorded call); what orjson refuses (a lone surrogate) is written by the stdlib's, still redacted."""
    legs.run("test.echo", {"text": f"héllo {SECRET}"})
    legs.run("test.echo", {"text": "half \ud800 pair"})
    first, second = captured_spans.tool_spans()
    assert first.attributes["gen_ai.tool.call.arguments"] == '{"text":"héllo [REDACTED:CANARY]"}'
    assert json.loads(second.attributes["gen_ai.tool.call.arguments"]) == {"text": "half \ud800 pair"}


def test_failure_status_and_rule(legs, captured_spans) -> None:
    legs.run("test.boom", {})
    (span,) = captured_spans.tool_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "denied"
    assert span.attributes["agent_legs.rule"] == "policy.deny['test.boom']"
    assert "policy.deny['test.boom']" in span.status.description


def test_operation_name_set_at_creation(legs, captured_spans) -> None:
    # Samplers see attributes given at creation: the GenAI operation must be one of them.
    from opentelemetry.sdk.trace import SpanProcessor

    seen = {}

    class OnStart(SpanProcessor):
        def on_start(self, span, parent_context=None):
            seen.update(span.attributes or {})

    captured_spans.provider.add_span_processor(OnStart())
    legs.run("test.echo", {"text": "a"})
    assert seen["gen_ai.operation.name"] == "execute_tool" and seen["gen_ai.tool.name"] == "test_echo"


def test_nested_under_caller_span_sync_and_async(legs, captured_spans) -> None:
    tracer = captured_spans.provider.get_tracer("agent")
    with tracer.start_as_current_span("agent run") as parent:
        legs.run("test.echo", {"text": "a"})

    async def go():
        with tracer.start_as_current_span("async agent run"):
            await asyncio.gather(legs.arun("test.echo", {"text": "b"}), legs.arun("test.child", {}))

    asyncio.run(go())
    spans = {s.name: s for s in captured_spans.spans}
    tool = list(captured_spans.tool_spans())
    assert tool[0].parent.span_id == parent.get_span_context().span_id
    async_parent = spans["async agent run"]
    for s in tool[1:]:
        assert s.parent.span_id == async_parent.context.span_id
        assert s.context.trace_id == async_parent.context.trace_id
    child_step = spans["test child step"]
    assert child_step.parent.span_id == spans["execute_tool test_child"].context.span_id


def test_secrets_never_in_spans_or_log(legs, captured_spans, dirs) -> None:
    legs.run("test.echo", {"text": f"token={SECRET}"})
    legs.run("test.fail", {"text": SECRET})
    legs.run("test.echo", {"text": SECRET, "bad": SECRET})
    blob = json.dumps(
        [dict(s.attributes) for s in captured_spans.spans] + [s.status.description for s in captured_spans.spans], default=str
    )
    assert SECRET not in blob and "[REDACTED:CANARY]" in blob
    logtext = (dirs[1] / "actions.jsonl").read_text()
    assert SECRET not in logtext and "[REDACTED:CANARY]" in logtext


def test_results_scrubbed(legs) -> None:
    r = legs.run("test.fail", {"text": SECRET})
    assert SECRET not in r.model_dump_json()
    r = legs.run("test.echo", {"text": SECRET})
    assert r.output == "[REDACTED:CANARY]" and r.data["text"] == "[REDACTED:CANARY]"


def test_capture_content_off(dirs, captured_spans, read_log) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=POLICY,
        registry=registry,
        settings={"telemetry": {"capture_content": False}},
        tracer_provider=captured_spans.provider,
    ) as legs:
        legs.run("test.echo", {"text": "private words"})
    (span,) = captured_spans.tool_spans()
    assert "gen_ai.tool.call.arguments" not in span.attributes
    assert "gen_ai.tool.call.result" not in span.attributes
    assert "arguments" not in read_log()[0]


def test_action_log_lines_survive_crash(dirs, read_log) -> None:
    # Flushed per action: readable while the Legs is still open (a crash now loses nothing).
    ws, st = dirs
    legs = Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry)
    try:
        for i in range(5):
            legs.run("test.echo", {"text": str(i)})
        assert len(read_log()) == 5
    finally:
        legs.close()


def test_action_log_rotation_keeps_every_line(tmp_path: Path) -> None:
    from agent_legs._telemetry import ActionLog

    log = ActionLog(tmp_path / "actions.jsonl", max_bytes=2000, backups=50)
    for i in range(300):
        log.write({"i": i, "pad": "x" * 50})
    log.close()
    lines = []
    for p in sorted(tmp_path.glob("actions.jsonl.*"), key=lambda p: -int(p.suffix[1:])):
        lines += p.read_text().splitlines()
    lines += (tmp_path / "actions.jsonl").read_text().splitlines()
    assert [json.loads(x)["i"] for x in lines] == list(range(300))


def test_dead_collector_warns_once_and_changes_nothing(dirs, monkeypatch, caplog, read_log) -> None:
    import logging

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    ws, st = dirs
    caplog.set_level(logging.WARNING, logger="agent_legs")
    legs = Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry)
    try:
        for i in range(3):
            assert legs.run("test.echo", {"text": str(i)}).ok
            legs._telemetry._own_provider.force_flush(3000)  # each flush is a failed export
    finally:
        legs.close()
    ours = [r for r in caplog.records if r.name == "agent_legs" and "exporting spans" in r.getMessage()]
    assert len(ours) == 1 and "127.0.0.1:9" in ours[0].getMessage()
    assert len(read_log()) == 3


def test_default_provider_exports_otlp_when_env_set(dirs, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    ws, st = dirs
    legs = Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry)
    provider = legs._telemetry._own_provider
    assert provider is not None
    assert "BatchSpanProcessor" in repr(provider._active_span_processor._span_processors)
    import time

    t0 = time.monotonic()
    assert legs.run("test.echo", {"text": "a"}).ok
    legs.close()  # a dead collector must not hang close()
    assert time.monotonic() - t0 < 15
