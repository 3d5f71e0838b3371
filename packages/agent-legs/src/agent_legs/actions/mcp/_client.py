"""One connection to a third-party MCP server: start on demand, restart after a failure, close for good.

Invariants:

* The server runs inside one *owner* task of the runtime loop, which holds the SDK's transport and
  session contexts open (anyio requires them to be entered and left by the same task) inside one
  cancel scope. Stopping a server is cancelling that scope: the SDK then closes stdin, waits, and
  terminates and kills the process tree (bounded, shielded), so no process outlives its owner.
* Starting (spawn or connect, ``initialize``, ``tools/list``) is bounded by ``startup_timeout_s``;
  a server that cannot start, writes anything but JSON-RPC on stdout, dies or hangs makes the call
  ``unavailable`` with the reason (for a stdio server, the tail of its stderr, kept in an unlinked
  temporary file). The connection is then dropped and the next call starts a fresh process.
* A call stopped at its deadline (or cancelled) drops the connection too: a server that did not
  answer one call may never answer another, and its process is terminated in the background.
* ``aclose()`` stops every owner task and waits for them: ``Legs.close()`` leaves no server process.
* A streamable HTTP server's URL passes the egress guard (``policy.network``) before connecting, and
  every TCP connection the SDK's HTTP client opens goes to an address the guard has just checked
  (pinned, as for ``http.request``): DNS rebinding cannot move it to a private address.
* ``{secret:NAME}`` references in ``env`` and ``headers`` are resolved when the server is started
  and never stored resolved; the secrets are scrubbed from everything the runtime reports.

Threat model: the server is third-party code. What it says (tool names, descriptions, schemas,
results, stderr) is untrusted; it cannot take the runtime down (every failure is an ``ActionError``)
and it never receives Agent Legs' own environment (only the SDK's minimal inherited set plus ``env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from typing import IO, TYPE_CHECKING, Any

from ..._errors import ActionError, ConfigError

if TYPE_CHECKING:
    from ..._egress import EgressGuard
    from ..._runtime import Runtime
    from ._settings import McpServerSettings

__all__ = ["INSTALL_HINT", "McpConnection", "McpUnavailable", "require_sdk"]

log = logging.getLogger("agent_legs")

INSTALL_HINT = "pip install 'agent-legs[mcp]'"
_STDERR_TAIL = 1500  # characters of a server's stderr quoted in an error
_STDERR_FILE_MAX = 1_000_000  # bytes of stderr kept on disk before it is cut to its tail
_STOP_WAIT_S = 15.0  # the SDK needs at most ~6.5 s to stop a stdio server (2 s stdin, 2 s TERM, 2 s KILL)
_MAX_TOOLS = 500  # tools accepted from one server (a hostile listing cannot grow without bound)
_MAX_PAGES = 50
_PING_TIMEOUT_S = 5.0  # a session that does not answer a ping within this is dropped and restarted


class McpUnavailable(ActionError):
    """The server could not be reached (an ``unavailable`` error with the reason)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(
            "unavailable",
            message,
            retryable=True,
            hint=hint or "The server is restarted on the next call; tell the user if it keeps failing.",
        )


def require_sdk() -> None:
    """Raise ``unavailable`` with the install hint when the ``mcp`` extra is missing."""
    try:
        import jsonschema  # noqa: F401
        import mcp  # noqa: F401
    except ImportError as exc:
        raise McpUnavailable(
            f"MCP servers need the MCP SDK ({exc.name or exc} is not installed)", hint=f"Ask the developer to run: {INSTALL_HINT}"
        ) from None


class _Live:
    """One started (or starting) server process/session, owned by one task."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.session: Any = None
        self.tools: list[Any] = []
        self.scope: Any = None  # the owner's anyio CancelScope
        self.errlog: IO[str] | None = None
        self.final_stderr = ""  # the tail, kept when the file is closed
        self.reason: str | None = None  # why it stopped (first cause wins)
        self.error: ActionError | None = None  # a policy refusal (egress guard) to report as it is
        self.dead = False

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.dead = True
        if self.scope is not None:
            self.scope.cancel()

    def trim_stderr(self) -> None:
        """Keep the stderr file of a long-lived chatty server bounded (its tail is all that is quoted)."""
        if self.errlog is None or self.errlog.closed:
            return
        try:
            if os.fstat(self.errlog.fileno()).st_size <= _STDERR_FILE_MAX:
                return
            tail = self.stderr_tail()
            self.errlog.seek(0)
            self.errlog.truncate()  # the child shares this file offset: it goes on writing at the start
            self.errlog.write(tail + "\n")
            self.errlog.flush()
        except (OSError, ValueError):
            return

    def stderr_tail(self) -> str:
        if self.errlog is None or self.errlog.closed:
            return self.final_stderr
        try:
            self.errlog.flush()
            size = self.errlog.seek(0, 2)
            self.errlog.seek(max(0, size - _STDERR_TAIL * 4))
            text = self.errlog.read()
        except (OSError, ValueError):
            return ""
        return text.strip()[-_STDERR_TAIL:]


class McpConnection:
    """A configured server (``settings.mcp.servers.<name>``): at most one live session at a time."""

    def __init__(self, name: str, config: McpServerSettings, runtime: Runtime) -> None:
        self.name = name
        self.config = config
        self.runtime = runtime
        self._live: _Live | None = None
        self._starting: _Live | None = None
        self._lock = asyncio.Lock()
        self._owners: set[asyncio.Task[None]] = set()
        self._closed = False
        self.tools: list[Any] | None = None
        """The last listing (``mcp_types.Tool``), ``None`` before the first successful start."""
        self.last_error: ActionError | None = None
        self.last_failure: float | None = None  # loop time of the last failed start

    @property
    def what(self) -> str:
        cfg = self.config
        return f"MCP server {self.name!r} ({cfg.command[0] if cfg.command else cfg.url})"

    # -- starting -------------------------------------------------------------------------------
    async def _answers_ping(self, live: _Live) -> bool:
        """Whether a session started earlier still answers. A server that exited since the last call may
        not have been noticed yet (its end of output is read a moment later): a tool call sent to it
        would fail as if the call had killed it. A ping has no effect, so its failure is safe to act on:
        the session is dropped and a fresh one started."""
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                await live.session.send_ping()
        except Exception as exc:
            self._drop(live, f"it no longer answered ({_describe(exc) or type(exc).__name__})")
            return False
        return not live.dead

    async def ensure(self, reuse_failure_s: float = 0.0, *, probe: bool = False) -> _Live:
        """The live session, started (or restarted) now if there is none. Raises ``ActionError``.

        ``reuse_failure_s``: a start that failed less than this long ago is reported again instead of
        being retried (the lookup of the action just tried it: one call must not wait for two starts).
        ``probe``: ping a session started earlier before handing it out (before a tool call).
        """
        live = self._live
        if live is not None and not live.dead and (not probe or await self._answers_ping(live)):
            return live
        async with self._lock:
            live = self._live
            if live is not None and not live.dead:
                return live
            if (
                reuse_failure_s
                and self.last_error is not None
                and self.last_failure is not None
                and time.monotonic() - self.last_failure < reuse_failure_s
            ):
                raise self.last_error
            if self._closed:
                raise McpUnavailable("Agent Legs is shutting down")
            require_sdk()
            live = _Live()
            owner = asyncio.get_running_loop().create_task(self._own(live), name=f"agent-legs-mcp-{self.name}")
            self._owners.add(owner)
            owner.add_done_callback(self._owners.discard)
            self._starting = live
            try:
                await asyncio.shield(live.ready)
            except ActionError as exc:
                self.last_error = exc
                self.last_failure = time.monotonic()
                raise
            finally:
                self._starting = None
            self._live = live
            self.tools = live.tools
            self.last_error = None
            return live

    async def _own(self, live: _Live) -> None:
        import anyio
        from mcp.client.session import ClientSession

        cfg = self.config
        scope = anyio.CancelScope(deadline=anyio.current_time() + cfg.startup_timeout_s)
        live.scope = scope
        failure: BaseException | None = None
        try:
            with scope:
                async with self._transport(live) as (sdk_read, write), anyio.create_task_group() as pumps:
                    # Between the transport and the session: the end of the server's output (its exit) is
                    # seen at once, not by the next call, so that call starts a fresh process.
                    forward, read = anyio.create_memory_object_stream[Any](0)
                    pumps.start_soon(_pump, sdk_read, forward, live)
                    async with ClientSession(read, write, message_handler=self._message_handler(live)) as session:
                        await session.initialize()
                        live.tools = await _list_tools(session)
                        scope.deadline = math.inf  # started: from now on only stop() ends it
                        live.session = session
                        live.ready.set_result(None)
                        await anyio.sleep_forever()
        except asyncio.CancelledError:
            live.stop("Agent Legs is shutting down")
            raise
        except BaseException as exc:  # a third-party failure of any kind ends this server only
            failure = exc
        finally:
            live.dead = True
            if not live.ready.done():
                live.ready.set_exception(self._start_error(live, scope, failure))
                live.ready.exception()  # retrieved: ensure() re-raises it
            elif live.reason is None:
                live.reason = _describe(failure) if failure is not None else "the connection ended"
            if live.errlog is not None:
                live.final_stderr = live.stderr_tail()
                live.errlog.close()

    def _start_error(self, live: _Live, scope: Any, failure: BaseException | None) -> ActionError:
        if live.error is not None:
            return live.error
        root = _root(failure) if failure is not None else None
        if isinstance(root, ActionError) and root.type == "denied":
            return root  # the egress guard refused a connection (a name rebound to a private address)
        if live.reason is not None:
            why = live.reason
        elif failure is None and scope.cancelled_caught:
            why = f"it did not start and list its tools within {self.config.startup_timeout_s:g} s"
        elif failure is not None:
            why = _describe(failure)
        else:
            why = "it ended during startup"
        return McpUnavailable(f"{self.what} is unavailable: {why}{self._stderr_note(live)}")

    def _stderr_note(self, live: _Live) -> str:
        tail = live.stderr_tail()
        return f"; its stderr ends with (untrusted): {tail}" if tail else ""

    def _message_handler(self, live: _Live) -> Any:
        async def handle(message: Any) -> None:
            if isinstance(message, Exception):  # a line on stdout that is not JSON-RPC, or a transport fault
                text = str(message).splitlines()[0] if str(message) else type(message).__name__
                live.stop(f"it wrote output that is not MCP (JSON-RPC) on its stdout ({text[:200]})")

        return handle

    @contextlib.asynccontextmanager
    async def _transport(self, live: _Live) -> AsyncIterator[tuple[Any, Any]]:
        cfg = self.config
        secrets = self.runtime.secrets
        where = f"settings.mcp.servers.{self.name}"
        try:
            env = {k: secrets.resolve(v) for k, v in cfg.env.items()}
            headers = {k: secrets.resolve(v) for k, v in cfg.headers.items()}
        except ConfigError as exc:
            live.error = McpUnavailable(
                f"{self.what} is unavailable: {where}: {exc}", hint="Ask the developer to provide the secret."
            )
            raise
        if cfg.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            live.errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by the owner)
            params = StdioServerParameters(
                command=cfg.command[0], args=cfg.command[1:], env=env, cwd=cfg.cwd, encoding_error_handler="replace"
            )
            started = False
            try:
                async with stdio_client(params, errlog=live.errlog) as streams:
                    started = True
                    yield streams
            except OSError as exc:
                if not started:
                    live.reason = f"cannot run {cfg.command[0]!r}: {exc.strerror or exc}"
                raise
            return
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert cfg.url is not None
        guard = self.runtime.egress
        try:
            await guard.check_url(cfg.url)
        except ActionError as exc:
            live.error = exc  # the policy refused it: reported as such (denied, naming the rule)
            raise
        transport = httpx2.AsyncHTTPTransport(trust_env=False)
        pool = transport._pool
        pool._network_backend = _pinned_backend(guard, pool._network_backend)
        client = httpx2.AsyncClient(
            headers=headers,
            transport=transport,
            trust_env=False,
            timeout=httpx2.Timeout(30.0, read=300.0),
            follow_redirects=False,
        )
        async with client, streamable_http_client(cfg.url, http_client=client) as (read, write):
            yield read, write

    # -- calling ---------------------------------------------------------------------------------
    async def call(self, live: _Live, tool: str, arguments: dict[str, Any]) -> Any:
        """``tools/call`` on ``live`` within ``timeout_s``; any failure of the connection (a hang
        included) drops it: the next call starts a fresh process."""
        from mcp.shared.exceptions import MCPError

        timeout_s = self.config.timeout_s
        live.trim_stderr()
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                return await live.session.call_tool(tool, arguments)
        except TimeoutError:
            if not deadline.expired():
                raise
            self._drop(live, f"a call to {tool!r} did not finish within {timeout_s:g} s")
            raise ActionError(
                "timeout",
                f"{self.what} did not answer {tool!r} within {timeout_s:g} s (settings.mcp.servers."
                f"{self.name}.timeout_s): the call was stopped and the server is restarted on the next call",
                hint="It may have taken effect in part: check before repeating it.",
            ) from None
        except asyncio.CancelledError:
            self._drop(live, f"a call to {tool!r} was stopped at its deadline")
            raise
        except MCPError as exc:
            if live.dead or _is_connection_closed(exc):
                self._drop(live, "it closed the connection")
                raise McpUnavailable(
                    f"{self.what} stopped during the call: {live.reason or 'it closed the connection'}{self._stderr_note(live)}"
                ) from None
            raise ActionError(
                "failed",
                f"{self.what} answered {tool!r} with an error: {exc.error.message[:500]}",
                hint="Check the arguments against the tool's description.",
            ) from None
        except Exception as exc:  # a malformed answer or a broken transport: the session cannot be trusted
            self._drop(live, _describe(exc))
            raise McpUnavailable(f"{self.what} failed during the call: {_describe(exc)}{self._stderr_note(live)}") from None

    def _drop(self, live: _Live, reason: str) -> None:
        if self._live is live:
            self._live = None
        live.stop(reason)

    # -- closing ---------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop the server (and any still stopping) and wait for the processes to end. Never raises."""
        self._closed = True
        for live in (self._live, self._starting):  # a server still starting is stopped too
            if live is not None:
                live.stop("Agent Legs is shutting down")
        self._live = None
        owners = list(self._owners)
        if owners:
            _, pending = await asyncio.wait(owners, timeout=_STOP_WAIT_S)
            for task in pending:
                log.error("%s did not stop within %g s", self.what, _STOP_WAIT_S)
                task.cancel()


async def _pump(source: Any, sink: Any, live: _Live) -> None:
    """Forward the transport's messages to the session; at their end, the server is gone: stop."""
    import anyio

    async with sink:
        try:
            async for item in source:
                await sink.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
    live.stop("its output ended (the process exited or the connection closed)")


async def _list_tools(session: Any) -> list[Any]:
    import mcp_types as types

    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor or len(tools) >= _MAX_TOOLS:
            break
    if len(tools) > _MAX_TOOLS:
        log.warning("an MCP server listed %d tools: only the first %d are used", len(tools), _MAX_TOOLS)
    return tools[:_MAX_TOOLS]


def _is_connection_closed(exc: Any) -> bool:
    try:
        from mcp_types import CONNECTION_CLOSED
    except ImportError:  # pragma: no cover
        return "closed" in str(exc).lower()
    return bool(exc.error.code == CONNECTION_CLOSED)


def _root(exc: BaseException) -> BaseException:
    """The first real exception inside exception groups (anyio task groups wrap the real cause)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """A one-line reason, unwrapping exception groups."""
    exc = _root(exc)
    if isinstance(exc, ActionError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _pinned_backend(guard: EgressGuard, inner: Any) -> Any:
    """An httpcore2 network backend whose every TCP connection goes to an address the guard checked."""
    import httpcore2

    class Pinned(httpcore2.AsyncNetworkBackend):  # type: ignore[misc]
        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,  # noqa: ASYNC109
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> Any:
            dest = await guard.check_host(host, port)
            error: Exception | None = None
            for ip in dest.addresses:
                try:
                    return await inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                    error = exc
            assert error is not None
            raise error

        async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
            raise ActionError("denied", "unix sockets are not reachable", rule="egress guard")

        async def sleep(self, seconds: float) -> None:
            await inner.sleep(seconds)

    return Pinned()
