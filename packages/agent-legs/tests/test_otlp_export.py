"""OTLP/HTTP export: to a real backend (Phoenix) and read back from it; the standard variables; a dead,
slow or failing collector changes nothing for the agent."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agent_legs import Legs

CANARY = "canary-otlp-7f3a9c2e"

_OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
)


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch) -> None:
    for name in _OTEL_VARS:  # whatever the developer's shell exports must not change these tests
        monkeypatch.delenv(name, raising=False)


def _legs(tmp_path, **kwargs) -> Legs:
    return Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", **kwargs)


# -- a real backend ------------------------------------------------------------------------------


def test_spans_reach_a_real_backend(otlp_backend, tmp_path, monkeypatch, http_server) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_backend.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agent-legs-otlp-test")
    with _legs(
        tmp_path,
        secrets={"TOKEN": CANARY},
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
        settings={
            "http": {
                "auth": [{"hosts": [f"127.0.0.1:{http_server.port}"], "headers": {"Authorization": "Bearer {secret:TOKEN}"}}]
            }
        },
    ) as legs:
        ok = legs.run(
            "http.request", {"method": "GET", "url": http_server.url("/redirect?to=/echo")}, call_id="call_otlp_1", session="otlp"
        )
        denied = legs.run("files.read", {"path": "../../etc/passwd"}, session="otlp")
        legs.run("files.write", {"path": "c.txt", "content": f"the canary is {CANARY}"}, session="otlp")
    assert ok.ok and "[REDACTED:TOKEN]" in ok.output  # the server echoed the header back

    def complete(spans):
        return {ok.trace_id, denied.trace_id} <= {s["context"]["trace_id"] for s in spans} and len(
            [s for s in spans if s["context"]["trace_id"] == ok.trace_id]
        ) >= 3

    spans = otlp_backend.wait_for(complete)
    by_id = {s["context"]["span_id"]: s for s in spans}

    tool = by_id[ok.span_id]
    assert tool["name"] == "execute_tool http_request" and tool["parent_id"] is None
    assert tool["status_code"] != "ERROR"  # (Phoenix shows its own kind, "TOOL", not the OTel kind)
    attrs = tool["attributes"]
    assert attrs["gen_ai.operation.name"] == "execute_tool" and attrs["gen_ai.tool.name"] == "http_request"
    assert attrs["gen_ai.tool.type"] == "function" and attrs["agent_legs.action"] == "http.request"
    assert attrs["gen_ai.tool.call.id"] == "call_otlp_1" and attrs["agent_legs.session"] == "otlp"
    assert attrs["agent_legs.decision"] == "allow" and attrs["agent_legs.outcome"] == "ok"
    assert json.loads(attrs["gen_ai.tool.call.arguments"])["url"].endswith("/redirect?to=/echo")
    children = [s for s in spans if s["parent_id"] == ok.span_id]
    assert [c["name"] for c in children] == ["HTTP GET", "HTTP GET"]
    assert sorted(c["attributes"]["http.response.status_code"] for c in children) == [200, 302]
    assert all(c["context"]["trace_id"] == ok.trace_id for c in children)

    refused = by_id[denied.span_id]
    assert refused["status_code"] == "ERROR" and refused["attributes"]["error.type"] == "denied"
    assert refused["attributes"]["agent_legs.rule"] == "workspace confinement"
    assert refused["attributes"]["agent_legs.decision"] == "allow"  # the policy allowed; the workspace refused

    stored = json.dumps(spans)
    assert CANARY not in stored and "[REDACTED:TOKEN]" in stored


def test_callers_provider_nests_under_the_agent_span_in_the_backend(otlp_backend, tmp_path) -> None:
    # The caller's own provider (as an app already set up for its agent) and its spans: ours are children.
    provider = TracerProvider(resource=Resource.create({"service.name": "my-agent"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_backend.endpoint + "/v1/traces")))
    tracer = provider.get_tracer("my-agent")
    try:
        with (
            _legs(
                tmp_path, tracer_provider=provider, secrets={"K": CANARY}, settings={"telemetry": {"capture_content": False}}
            ) as legs,
            tracer.start_as_current_span("agent turn") as turn,
        ):
            written = legs.run("files.write", {"path": "n.txt", "content": CANARY}, session="t1")

            async def parallel():
                with tracer.start_as_current_span("async step"):
                    return await asyncio.gather(
                        legs.arun("files.read", {"path": "n.txt"}, session="t1"), legs.arun("files.list", {}, session="t1")
                    )

            read, listed = asyncio.run(parallel())
    finally:
        provider.shutdown()
    trace_id = f"{turn.get_span_context().trace_id:032x}"
    spans = otlp_backend.wait_for(lambda ss: len([s for s in ss if s["context"]["trace_id"] == trace_id]) >= 5)
    mine = {s["context"]["span_id"]: s for s in spans if s["context"]["trace_id"] == trace_id}
    by_name = {s["name"]: s for s in mine.values()}
    turn_id = f"{turn.get_span_context().span_id:016x}"
    assert by_name["agent turn"]["parent_id"] is None
    assert mine[written.span_id]["parent_id"] == turn_id
    step_id = by_name["async step"]["context"]["span_id"]
    assert by_name["async step"]["parent_id"] == turn_id
    assert mine[read.span_id]["parent_id"] == step_id and mine[listed.span_id]["parent_id"] == step_id
    assert {mine[r.span_id]["name"] for r in (written, read, listed)} == {
        "execute_tool files_write",
        "execute_tool files_read",
        "execute_tool files_list",
    }
    # content capture off: no arguments or results went out, so the canary content could not either
    assert not any("gen_ai.tool.call.arguments" in s["attributes"] for s in mine.values())
    assert CANARY not in json.dumps(list(mine.values()))


# -- the standard variables ----------------------------------------------------------------------


def test_standard_variables(otlp_receiver, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_receiver.endpoint + "/custom/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # the per-signal variable wins
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k3y,x-tenant=acme")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-agent")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,service.name=overridden")
    with _legs(tmp_path, settings={"telemetry": {"service_name": "from-settings"}}) as legs:
        legs.run("files.list", {})
    otlp_receiver.wait_for_spans(1)
    (req,) = otlp_receiver.requests
    assert req.path == "/custom/traces"
    assert req.headers["x-api-key"] == "k3y" and req.headers["x-tenant"] == "acme"
    assert req.headers["content-type"] == "application/x-protobuf"
    res = req.resource_attributes
    assert res["service.name"] == "billing-agent" and res["deployment.environment"] == "staging"
    assert "agent_legs.version" in res
    assert req.span_names == ["execute_tool files_list"]


def test_base_endpoint_and_resource_attributes_service_name(otlp_receiver, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint + "/")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource-attrs")
    with _legs(tmp_path) as legs:
        legs.run("files.list", {})
    otlp_receiver.wait_for_spans(1)
    (req,) = otlp_receiver.requests
    assert req.path == "/v1/traces" and req.resource_attributes["service.name"] == "from-resource-attrs"


def test_settings_endpoint_and_service_name(otlp_receiver, tmp_path) -> None:
    with _legs(
        tmp_path,
        settings={
            "telemetry": {
                "otlp_endpoint": otlp_receiver.endpoint,
                "service_name": "from-settings",
                "span_name_prefix": "agent_legs",
            }
        },
    ) as legs:
        legs.run("files.list", {})
    otlp_receiver.wait_for_spans(1)
    (req,) = otlp_receiver.requests
    assert req.path == "/v1/traces" and req.resource_attributes["service.name"] == "from-settings"
    assert req.span_names == ["agent_legs files_list"]


@pytest.mark.parametrize("var,value", [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")])
def test_export_switched_off(otlp_receiver, tmp_path, monkeypatch, var, value) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv(var, value)
    with _legs(tmp_path) as legs:
        assert legs.run("files.list", {}).ok
        assert legs._telemetry._exporter is None
    time.sleep(0.2)
    assert otlp_receiver.attempts == 0
    assert len((tmp_path / "st/actions.jsonl").read_text().splitlines()) == 1  # the log is independent


# -- a sick collector changes nothing for the agent ----------------------------------------------


@pytest.mark.parametrize("sickness", ["slow", "503", "400"])
def test_sick_collector_changes_nothing(otlp_receiver, tmp_path, monkeypatch, caplog, sickness) -> None:
    if sickness == "slow":
        otlp_receiver.delay_s = 60  # accepts the connection, never answers in time
    else:
        otlp_receiver.status = int(sickness)  # 503 is retried with back-off, 400 is not
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # export while the actions run, not only at close
    caplog.set_level(logging.INFO)
    legs = _legs(tmp_path)
    latencies = []
    try:
        for i in range(40):
            t0 = time.perf_counter()
            assert legs.run("files.write", {"path": f"f{i}.txt", "content": "x"}).ok
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while otlp_receiver.attempts < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        t0 = time.monotonic()
        legs.close()
        close_s = time.monotonic() - t0
    assert otlp_receiver.attempts >= 2, "exports were attempted during the run"
    # An export waiting on the collector takes >= 1 s (its timeout): no action waited for one.
    assert max(latencies) < 0.5, sorted(latencies)[-5:]
    assert close_s < 2.0  # the collector is known to be failing: close() does not wait for it
    lines = (tmp_path / "st/actions.jsonl").read_text().splitlines()
    assert len(lines) == 40 and all(json.loads(x)["outcome"] == "ok" for x in lines)
    ours = [r for r in caplog.records if r.name == "agent_legs" and r.levelno >= logging.WARNING]
    # One warning when exports start failing, one at close with the number of spans lost (none per batch).
    assert len(ours) == 2 and "exporting spans to http://127.0.0.1" in ours[0].getMessage(), ours
    assert f"{legs.spans_dropped} span(s) were dropped" in ours[1].getMessage() and legs.spans_dropped > 0
    noise = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
    assert noise == [], [r.getMessage() for r in noise]


def test_close_is_bounded_when_the_collector_hangs(otlp_receiver, tmp_path, monkeypatch, caplog) -> None:
    # Nothing failed yet (the spans wait in the batch queue), the collector hangs, the exporter's own
    # timeout is the default 10 s: close() still returns within 2 s, and says how many spans were lost.
    otlp_receiver.delay_s = 60
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    caplog.set_level(logging.WARNING, logger="agent_legs")
    legs = _legs(tmp_path)
    for i in range(5):
        assert legs.run("files.write", {"path": f"f{i}.txt", "content": "x"}).ok
    t0 = time.monotonic()
    legs.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed
    assert legs.spans_dropped == 5
    assert any("5 span(s) were dropped" in r.getMessage() for r in caplog.records if r.name == "agent_legs")
    assert len((tmp_path / "st/actions.jsonl").read_text().splitlines()) == 5


def test_healthy_collector_gets_every_span_at_close(otlp_receiver, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    with _legs(tmp_path) as legs:  # default 5 s schedule delay: only close() flushes these
        for i in range(30):
            legs.run("files.write", {"path": f"f{i}.txt", "content": "x"})
    assert len(otlp_receiver.span_names()) == 30  # flushed by close(), nothing left behind


@pytest.mark.parametrize("order", ["shutdown_then_abandon", "abandon_then_shutdown", "shutdown_twice"])
def test_the_wrapped_exporter_is_shut_down_once_whatever_the_order(caplog, order) -> None:
    """Seen once in a full run: close() shut the exporter down and then gave it up (or the reverse), and the
    OTLP exporter logged "Exporter already shutdown, ignoring call" on the application's log."""
    from agent_legs._telemetry._export import GuardedExporter

    caplog.set_level(logging.INFO)
    guarded = GuardedExporter(OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces"), "http://127.0.0.1:9")
    first, second = {
        "shutdown_then_abandon": (guarded.shutdown, guarded.abandon),
        "abandon_then_shutdown": (guarded.abandon, guarded.shutdown),
        "shutdown_twice": (guarded.shutdown, guarded.shutdown),
    }[order]
    first()
    second()
    noise = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
    assert noise == []
