"""The two contracted spans of one ``http.request`` call, made by hand on an SDK tracer.

``DESIGN.md`` contracts, per call, an ``execute_tool <tool>`` span (its attributes at creation and at the
end) and a child span per HTTP exchange. What the OpenTelemetry SDK charges for that pair is the price
any client recording the same spans pays, whoever makes them: ``same_spans`` wraps a peer's call in the
pair (names, kinds, parent and attribute values as ``Telemetry`` and the handler give them), so a peer
"with the same spans" is measured beside ``http.request`` with spans recorded (``bench_http``), and
``ab_spans`` compares our making of the pair against the SDK's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

__all__ = ["call_attributes", "end_attributes", "request_attributes", "same_spans"]


def call_attributes(description: str) -> dict[str, Any]:
    """The call span's attributes at its start, as ``Telemetry.start`` gives them."""
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "http_request",
        "gen_ai.tool.type": "function",
        "agent_legs.action": "http.request",
        "agent_legs.session": "default",
        "gen_ai.tool.description": description,
    }


def request_attributes(url: str, port: int) -> dict[str, Any]:
    """The handler's child ``HTTP GET`` span's attributes at its start."""
    return {"http.request.method": "GET", "url.full": url, "server.address": "127.0.0.1", "server.port": port}


def end_attributes(arguments: str, result: str) -> dict[str, Any]:
    """The call span's attributes at its end."""
    return {
        "agent_legs.decision": "allow",
        "agent_legs.outcome": "ok",
        "gen_ai.tool.call.arguments": arguments,
        "gen_ai.tool.call.result": result,
    }


def same_spans(
    call: Callable[[], Awaitable[str]], tracer: trace.Tracer, description: str, url: str, port: int
) -> Callable[[], Awaitable[None]]:
    """``call`` (returning the text a model would read) inside the contracted pair of spans."""
    arguments = '{"method":"GET","url":"' + url + '","headers":{},"params":{},"json":null,"body":null,"timeout_s":null}'

    async def spanned() -> None:
        span = tracer.start_span("execute_tool http_request", kind=SpanKind.INTERNAL, attributes=call_attributes(description))
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            child = tracer.start_span("HTTP GET", kind=SpanKind.CLIENT, attributes=request_attributes(url, port))
            try:
                result = await call()
                child.set_attribute("http.response.status_code", 200)
            finally:
                child.end()
        finally:
            otel_context.detach(token)
        span.set_attributes(end_attributes(arguments, result))
        span.end()

    return spanned
