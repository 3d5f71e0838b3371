"""Spans exported over OTLP/HTTP to a real backend (Phoenix) and read back from it."""

from __future__ import annotations

import json

from agent_legs import Legs

CANARY = "canary-otlp-7f3a9c2e"


def test_spans_reach_a_real_backend(otlp_backend, tmp_path, monkeypatch, http_server) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_backend.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agent-legs-otlp-test")
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", secrets={"TOKEN": CANARY},
              policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
              settings={"http": {"auth": [{"hosts": [f"127.0.0.1:{http_server.port}"],
                                           "headers": {"Authorization": "Bearer {secret:TOKEN}"}}]}}) as legs:
        ok = legs.run("http.request", {"method": "GET", "url": http_server.url("/redirect?to=/echo")},
                      call_id="call_otlp_1", session="otlp")
        denied = legs.run("files.read", {"path": "../../etc/passwd"}, session="otlp")
        legs.run("files.write", {"path": "c.txt", "content": f"the canary is {CANARY}"}, session="otlp")
    assert ok.ok and "[REDACTED:TOKEN]" in ok.output  # the server echoed the header back

    def complete(spans):
        return {ok.trace_id, denied.trace_id} <= {s["context"]["trace_id"] for s in spans} and len(
            [s for s in spans if s["context"]["trace_id"] == ok.trace_id]) >= 3

    spans = otlp_backend.wait_for(complete)
    by_id = {s["context"]["span_id"]: s for s in spans}

    tool = by_id[ok.span_id]
    assert tool["name"] == "execute_tool http_request" and tool["parent_id"] is None
    attrs = tool["attributes"]
    assert attrs["gen_ai.operation.name"] == "execute_tool" and attrs["gen_ai.tool.name"] == "http_request"
    assert attrs["gen_ai.tool.call.id"] == "call_otlp_1" and attrs["agent_legs.session"] == "otlp"
    assert attrs["agent_legs.decision"] == "allow" and attrs["agent_legs.outcome"] == "ok"
    children = [s for s in spans if s["parent_id"] == ok.span_id]
    assert [c["name"] for c in children] == ["HTTP GET", "HTTP GET"]
    assert sorted(c["attributes"]["http.response.status_code"] for c in children) == [200, 302]

    refused = by_id[denied.span_id]
    assert refused["status_code"] == "ERROR" and refused["attributes"]["error.type"] == "denied"
    assert refused["attributes"]["agent_legs.rule"] == "workspace confinement"

    stored = json.dumps(spans)
    assert CANARY not in stored and "[REDACTED:TOKEN]" in stored
