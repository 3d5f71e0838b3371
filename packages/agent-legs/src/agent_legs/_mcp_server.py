"""``agent-legs mcp``: the governed actions served to any MCP client (stdio, or streamable HTTP).

Invariants:

* One MCP tool per action the adapters would offer (``offered_actions``): the same tool names,
  descriptions and model-facing input schemas (``tool_schema``), generated from the registry with
  no per-action code. A call to a registered action that is not offered (denied, not configured)
  still goes through ``Legs.arun``: the client gets the denial with its rule, the log gets its line.
* Every tool call is one ``Legs.arun`` call: one span, one action-log line. Its ``call_id`` is
  ``<session>:<MCP request id>`` (unique per client session: ``email.send``'s ledger treats the call id
  as an idempotency key, and request ids restart at 1 in every client).
* A result carries the text output (``result_content``), the ``ActionResult`` as
  ``structuredContent``, ``isError`` when ``ok`` is false, and image artifacts (screenshots, figures)
  as base64 ``image`` content, bounded as the adapters bound them.
* Sessions: one Agent Legs session per MCP client session, never shared. Over stdio the process
  serves exactly one client: one fresh session id per process. Over HTTP the session is derived
  from the transport's ``Mcp-Session-Id`` (random, issued by the server per client); a request
  without one (the stateless 2026 protocol era) is its own session. When the MCP session closes,
  its Agent Legs session is closed (kernels, browser contexts released).
* Approvals: a call the policy sends to approval asks the client by MCP elicitation (a yes/no form
  naming the action, the redacted arguments and the rule) when the client declared the capability
  and the connection can carry a server-to-client request; anything but an explicit "accept" with
  ``approve = true`` is a rejection. A client on the 2026-07-28 protocol, which forbids
  server-to-client requests, is asked the same question inside an ``InputRequiredResult``; its
  answer counts only on the retry of exactly that call (same tool, same arguments) carrying the
  single-use ``request_state`` the server issued. Otherwise the ``fallback`` approver decides, and
  without one the call ends ``approval_denied`` naming the rule. No elicitation waits longer than
  ``ELICITATION_TIMEOUT_S``; an unanswered ``request_state`` expires after as long.
* Unknown tools and bad arguments are ``isError`` results (``invalid_input``) that say what is
  wrong, each with its span and log line (an unknown tool's with decision ``invalid``); nothing the
  client sends crashes the server.

HTTP threat model (``serve_http``): any web page the user opens can send requests to a loopback
port, and DNS rebinding can make them look same-origin. So: bound to loopback unless the caller
explicitly allows otherwise; the ``Host`` header must name this server (421 otherwise); an
``Origin`` header, when present, must be this server's own origin or one explicitly allowed (403
otherwise); every request carries ``Authorization: Bearer <token>`` compared in constant time
(401 otherwise), checked before the SDK's app sees the request. The SDK's own DNS-rebinding
protection is on as well, with the same lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import ipaddress
import json
import logging
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from ._models import ActionResult, ApprovalRequest
from ._telemetry._semconv import AGENT_LEGS_SESSION
from ._toolset import offered_actions, result_content, tool_schema

if TYPE_CHECKING:
    from ._legs import Approver, Legs
    from ._registry import ActionSpec

__all__ = [
    "ELICITATION_TIMEOUT_S",
    "TOKEN_ENV",
    "HttpGuard",
    "McpApprovals",
    "build_server",
    "is_loopback",
    "parse_host_port",
    "serve_http",
    "serve_stdio",
]

log = logging.getLogger("agent_legs")

TOKEN_ENV = "AGENT_LEGS_MCP_TOKEN"  # noqa: S105  (the variable's name, not a token)
ELICITATION_TIMEOUT_S = 600.0
_MAX_ELICIT_ARGS_CHARS = 2000
_MAX_UNKNOWN_NAME = 100  # characters of an unknown tool's name kept in the reply, span and log
_INSTRUCTIONS = (
    "Agent Legs: permissioned, logged, bounded actions (files, http, browser, code sandbox, email). "
    "Every call is checked by the policy and logged; a failure comes back as isError with the rule "
    "and a hint. Files live in the server's workspace; code.run keeps variables per session."
)

Ask = Callable[[ApprovalRequest], Awaitable[bool]]


# -- approvals ---------------------------------------------------------------------------------------
class McpApprovals:
    """The ``Legs`` approver while serving MCP: per call, the client's elicitation if it can ask,
    else ``fallback`` (the approver the server was given), else a rejection.

    ``Legs`` calls its approver on its own loop with the ``ApprovalRequest`` (session, call id); the
    call handler registers how to ask its client under that (session, call id) for the duration of
    the call, so concurrent calls of different clients never answer for each other.
    """

    def __init__(self, fallback: Approver | None = None) -> None:
        self.fallback = fallback
        self._asking: dict[tuple[str, str | None], Ask] = {}

    @contextlib.contextmanager
    def asking(self, session: str, call_id: str, ask: Ask) -> Iterator[None]:
        key = (session, call_id)
        self._asking[key] = ask
        try:
            yield
        finally:
            self._asking.pop(key, None)

    async def approve(self, request: ApprovalRequest) -> Any:
        ask = self._asking.get((request.session, request.call_id))
        if ask is not None:
            return await ask(request)
        if self.fallback is None:
            return False
        if inspect.iscoroutinefunction(self.fallback):
            return await self.fallback(request)
        answer = await asyncio.to_thread(self.fallback, request)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer


def _elicitation_message(request: ApprovalRequest) -> str:
    arguments = json.dumps(request.arguments, ensure_ascii=False, default=str)
    if len(arguments) > _MAX_ELICIT_ARGS_CHARS:
        arguments = arguments[:_MAX_ELICIT_ARGS_CHARS] + f"... [{len(arguments) - _MAX_ELICIT_ARGS_CHARS} more characters]"
    return (
        f"Agent Legs asks for approval: {request.action} (tool {request.tool_name}).\n"
        f"Arguments (secrets redacted): {arguments}\n"
        f"Reason: {request.reason}\n"
        "Approve this call?"
    )


_APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approve": {
            "type": "boolean",
            "title": "Approve",
            "description": "true runs the action once; false refuses it",
            "default": False,
        },
    },
    "required": ["approve"],
}


def _can_elicit(ctx: Any) -> bool:
    session = ctx.session
    caps = getattr(session, "client_capabilities", None)
    elicitation = getattr(caps, "elicitation", None)
    if elicitation is None or not getattr(session, "can_send_request", False):
        return False
    # An empty capability object (the 2025-06 form) means form mode; otherwise form must be declared.
    return elicitation.form is not None or elicitation.url is None


def _declares_elicitation(ctx: Any) -> bool:
    elicitation = getattr(getattr(ctx.session, "client_capabilities", None), "elicitation", None)
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


class _PendingApprovals:
    """Questions asked inside an ``InputRequiredResult`` (2026-07-28 protocol), awaiting the retry.

    Keyed by a random single-use ``request_state``; bound to the tool and the exact arguments asked
    about; bounded in number and age. A response without a matching state is no answer (asked anew).
    """

    MAX = 1024

    def __init__(self) -> None:
        self._states: dict[str, tuple[str, str, float]] = {}

    @staticmethod
    def _canonical(arguments: Any) -> str:
        return json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)

    def issue(self, tool: str, arguments: Any) -> str:
        import time

        now = time.monotonic()
        for key in [k for k, (_, _, expiry) in self._states.items() if expiry < now]:
            del self._states[key]
        while len(self._states) >= self.MAX:
            del self._states[next(iter(self._states))]
        state = "agent-legs-approval-" + secrets.token_urlsafe(24)
        self._states[state] = (tool, self._canonical(arguments), now + ELICITATION_TIMEOUT_S)
        return state

    def answer(self, tool: str, arguments: Any, state: str | None, responses: Any) -> bool | None:
        """``True``/``False`` when this retry answers a question asked about this very call, else ``None``."""
        import time

        entry = self._states.pop(state, None) if state else None
        if entry is None or entry[0] != tool or entry[1] != self._canonical(arguments) or entry[2] < time.monotonic():
            return None
        response = (responses or {}).get("approve")
        if response is None:
            return None
        content = getattr(response, "content", None)
        return getattr(response, "action", None) == "accept" and isinstance(content, dict) and content.get("approve") is True


# -- the server --------------------------------------------------------------------------------------
def build_server(legs: Legs, approvals: McpApprovals, *, session: str | None = None) -> Any:
    """The low-level MCP ``Server`` over ``legs`` (``legs.approver`` must be ``approvals.approve``).

    ``session`` fixes the Agent Legs session (stdio: one client per process); without it each
    HTTP client session gets its own (see the module docstring).
    """
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS
    from pydantic import ValidationError

    from ._arguments import scrubbed_args as _scrubbed_args
    from ._policy import PolicyEngine
    from ._secrets import Redactor
    from ._version import __version__

    engine = PolicyEngine(legs.policy)
    pending = _PendingApprovals()

    offered = offered_actions(legs)  # ConfigError when nothing can be offered: before anything starts
    tools = [
        types.Tool(
            name=spec.tool_name,
            description=spec.description,
            input_schema=tool_schema(legs, spec),
            annotations=types.ToolAnnotations(read_only_hint=spec.read_only, destructive_hint=not spec.read_only),
        )
        for spec in offered
    ]
    by_tool: dict[str, ActionSpec] = {}
    for spec in legs.actions:
        by_tool.setdefault(spec.tool_name, spec)
        by_tool.setdefault(spec.name, spec)

    async def on_list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=tools)

    def session_for(ctx: Any) -> str:
        if session is not None:
            return session
        request = ctx.request
        sid = request.headers.get("mcp-session-id") if request is not None else None
        if sid:
            # Derived, not stored: the transport's id is random per client session (and unknown ids are
            # refused by the transport), so the derived one is too; nothing grows with the sessions.
            return "mcp-" + hashlib.sha256(sid.encode()).hexdigest()[:16]
        return "mcp-" + secrets.token_hex(8)  # stateless request: a session of its own

    def release_on_close(ctx: Any, name: str) -> None:
        """Close the Agent Legs session when the MCP connection closes (once per connection)."""
        connection = getattr(ctx.session, "_connection", None)  # the SDK exposes no public handle yet
        state = getattr(connection, "state", None)
        if connection is None or not isinstance(state, dict) or state.get(AGENT_LEGS_SESSION) == name:
            return
        state[AGENT_LEGS_SESSION] = name  # the key: the attribute naming the session

        async def release() -> None:
            try:
                await legs.aclose_session(name)
            except Exception as exc:  # closing must not raise into the transport
                log.info("closing session %s failed: %s", name, exc)

        connection.exit_stack.push_async_callback(release)

    def approval_request(spec: ActionSpec, arguments: Any, name: str) -> ApprovalRequest | None:
        """What the approver would be shown (secrets redacted); ``None`` when the arguments are invalid
        (``Legs`` then reports them, and nobody is asked about a call that cannot run)."""
        try:
            args = spec.input_model.model_validate(arguments)
        except (ValidationError, ValueError, TypeError):
            return None
        redactor = Redactor(legs.secrets)
        summary = spec.summarize(_scrubbed_args(args, redactor)) if spec.summarize else ""
        rule = engine.decide(spec.name).rule
        return ApprovalRequest(
            action=spec.name,
            tool_name=spec.tool_name,
            session=name,
            arguments=redactor.data(args.model_dump(mode="json")),
            reason=redactor.text(f"{rule}. {summary}".strip()),
        )

    def log_unknown(tool: str, name: str, call_id: str, arguments: Any, message: str) -> None:
        """A call of a tool that names no action still leaves its span and log line (a model probing
        for tools it was not given is worth seeing): decision ``invalid``, outcome ``invalid_input``."""
        from ._telemetry import CallRecord

        label = tool[:_MAX_UNKNOWN_NAME]
        telemetry = legs._telemetry
        try:
            span = telemetry.start(label, label, name, call_id, None)
            telemetry.finish(
                span, CallRecord(label, label, name, call_id, "invalid", "invalid_input", 0.0, arguments, None, message, None)
            )
        except Exception as exc:  # the log is the record, but a failure to write it must not kill the server
            log.warning("logging the unknown tool call %r failed: %s", label, exc)

    def error_result(kind: str, message: str) -> Any:
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"Error ({kind}): {message}")], is_error=True)

    async def on_call_tool(ctx: Any, params: Any) -> Any:
        spec = by_tool.get(params.name)
        name = session_for(ctx)
        if session is None:
            release_on_close(ctx, name)
        call_id = f"{name}:{ctx.request_id}" if ctx.request_id is not None else f"{name}:{secrets.token_hex(8)}"
        if spec is None:
            message = f"no tool named {params.name[:_MAX_UNKNOWN_NAME]!r}; the tools are: " + ", ".join(t.name for t in tools)
            log_unknown(params.name, name, call_id, params.arguments, message)
            return error_result("invalid_input", message)
        loop = asyncio.get_running_loop()

        async def elicit(request: ApprovalRequest) -> bool:  # on the MCP loop
            try:
                answer = await asyncio.wait_for(
                    ctx.session.elicit_form(_elicitation_message(request), _APPROVAL_SCHEMA, related_request_id=ctx.request_id),
                    ELICITATION_TIMEOUT_S,
                )
            except Exception as exc:  # the client failed, left, or did not answer in time: not approved
                log.warning(
                    "elicitation for %s failed (%s): treated as a rejection",
                    request.action,
                    type(exc).__name__ + (f": {exc}" if str(exc) else ""),
                )
                return False
            return answer.action == "accept" and isinstance(answer.content, dict) and answer.content.get("approve") is True

        async def elicit_ask(request: ApprovalRequest) -> bool:  # on the Legs loop (or this one, for inline actions)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(elicit(request), loop))

        ask: Ask = elicit_ask

        arguments = params.arguments if params.arguments is not None else {}
        if (
            not _can_elicit(ctx)
            and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
            and _declares_elicitation(ctx)
            and engine.decide(spec.name).kind == "approve"
        ):
            # 2026-07-28: no server-to-client requests; the question rides an InputRequiredResult.
            answered = pending.answer(params.name, arguments, params.request_state, params.input_responses)
            if answered is None:
                question = approval_request(spec, arguments, name)
                if question is not None:
                    return types.InputRequiredResult(
                        input_requests={
                            "approve": types.ElicitRequest(
                                params=types.ElicitRequestFormParams(
                                    message=_elicitation_message(question), requested_schema=_APPROVAL_SCHEMA
                                )
                            )
                        },
                        request_state=pending.issue(params.name, arguments),
                    )
            else:

                async def given(request: ApprovalRequest, answer: bool = answered) -> bool:
                    return answer

                ask = given
        try:
            if _can_elicit(ctx) or ask is not elicit_ask:
                with approvals.asking(name, call_id, ask):
                    result = await legs.arun(spec.name, arguments, session=name, call_id=call_id)
            else:
                result = await legs.arun(spec.name, arguments, session=name, call_id=call_id)
        except Exception as exc:  # Legs closed, or a bug: an error result, not a dead server
            log.exception("tool call %s failed", params.name)
            return error_result("failed", f"internal error: {type(exc).__name__}: {exc}")
        return await _to_mcp(legs, result, types)

    return Server(
        "agent-legs",
        version=__version__,
        title="Agent Legs",
        instructions=_INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


async def _to_mcp(legs: Legs, result: ActionResult, types: Any) -> Any:
    if result.ok and result.artifacts:  # images are read, decoded and scaled: not on the server's loop
        parts = await asyncio.to_thread(result_content, legs, result)
    else:
        parts = result_content(legs, result)
    content: list[Any] = []
    for part in parts:
        if part.get("type") == "image":
            content.append(types.ImageContent(type="image", data=part["base64"], mime_type=part["mime_type"]))
        else:
            content.append(types.TextContent(type="text", text=part.get("text", "")))
    return types.CallToolResult(content=content, structured_content=result.model_dump(mode="json"), is_error=not result.ok)


# -- stdio -------------------------------------------------------------------------------------------
async def serve_stdio(legs: Legs, approvals: McpApprovals) -> None:
    """Serve one client over stdin/stdout until it closes stdin (stdout carries only MCP messages)."""
    from mcp.server.stdio import stdio_server

    server = build_server(legs, approvals, session="mcp-" + secrets.token_hex(8))
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


# -- streamable HTTP ---------------------------------------------------------------------------------
def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (loopback); ``ValueError`` naming what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"--http expects HOST:PORT, got {value!r}")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--http expects HOST:PORT with a numeric port, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--http port {port} is out of range 0-65535")
    return host, port


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HttpGuard:
    """ASGI middleware in front of the SDK's app: Host (421), Origin (403), bearer token (401)."""

    def __init__(self, app: Any, token: str, hosts: set[str], origins: set[str]) -> None:
        self.app = app
        self._token = token.encode()
        self.hosts = {h.lower() for h in hosts}
        self.origins = {o.lower().rstrip("/") for o in origins}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        headers: dict[str, list[bytes]] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), []).append(value)
        host = [v.decode("latin-1").lower() for v in headers.get("host", [])]
        if len(host) != 1 or host[0] not in self.hosts:
            await _reply(send, 421, "Invalid Host header: this server answers only to " + ", ".join(sorted(self.hosts)))
            return
        origins = [v.decode("latin-1").lower().rstrip("/") for v in headers.get("origin", [])]
        if any(o not in self.origins for o in origins):
            await _reply(send, 403, "Origin not allowed (allow it with --allow-origin)")
            return
        auth = headers.get("authorization", [])
        scheme, _, presented = (auth[0] if len(auth) == 1 else b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self._token):
            await _reply(send, 401, "Missing or wrong bearer token", {"www-authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


async def _reply(send: Any, status: int, text: str, extra: dict[str, str] | None = None) -> None:
    body = (text + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_http(
    legs: Legs,
    approvals: McpApprovals,
    host: str,
    port: int,
    token: str,
    *,
    allow_origins: list[str] | None = None,
    allow_hosts: list[str] | None = None,
    err: TextIO | None = None,
) -> None:
    """Serve streamable HTTP at ``http://HOST:PORT/mcp`` until cancelled (port 0: any free port;
    the address is printed on ``err``). The caller decides whether a non-loopback ``host`` is allowed."""
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    err = err if err is not None else sys.stderr
    server = build_server(legs, approvals)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    hosts = {_netloc(host, port)}
    if is_loopback(host):
        hosts |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    hosts |= {h.lower() for h in allow_hosts or []}
    origins = {f"http://{h}" for h in hosts} | {o.lower().rstrip("/") for o in allow_origins or []}
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        host=host,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=sorted(hosts), allowed_origins=sorted(origins)
        ),
    )
    config = uvicorn.Config(HttpGuard(app, token, hosts, origins), log_level="warning", lifespan="on", server_header=False)
    uv = uvicorn.Server(config)
    if not is_loopback(host):  # a client reaching it by name or another address needs --allow-host
        print(
            "agent-legs mcp: Host headers accepted: " + ", ".join(sorted(hosts)) + " (add more with --allow-host)",
            file=err,
            flush=True,
        )
    print(f"agent-legs mcp: serving streamable HTTP at http://{_netloc(host, port)}/mcp", file=err, flush=True)
    try:
        await uv.serve(sockets=[sock])
    finally:
        sock.close()
