"""A local filtering HTTP proxy that puts the egress guard in front of a browser (or any client).

Every request is checked: ``CONNECT host:port`` tunnels (HTTPS, WSS) when they are opened, and
plain-HTTP requests one by one (each client connection carries exactly one request: the proxy
answers with ``Connection: close``, so a kept-alive connection cannot smuggle a second, unchecked
request). The proxy resolves and pins the address itself, so the client resolves nothing. Denied
requests get a 403 carrying ``X-Agent-Legs-Denied: <rule>`` and are recorded in ``denied``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._egress import EgressGuard
from ._errors import ActionError

__all__ = ["DENIED_HEADER", "Denial", "EgressProxy"]

log = logging.getLogger("agent_legs.egress")
DENIED_HEADER = "X-Agent-Legs-Denied"
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Denial:
    url: str
    rule: str
    message: str


@dataclass
class EgressProxy:
    guard: EgressGuard
    host: str = "127.0.0.1"
    port: int = 0
    denied: list[Denial] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> EgressProxy:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def take_denied(self) -> list[Denial]:
        out, self.denied = self.denied, []
        return out

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad connection must not stop the proxy
            log.exception("egress proxy connection failed")
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            await _reply(writer, 400, "bad request")
            return
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            url = f"https://{target}"
            try:
                dest = await self.guard.check_host(host, int(port_text))
            except (ActionError, ValueError) as exc:
                await self._deny(writer, url, exc)
                return
            upstream = await _open(dest.addresses, dest.port)
            if upstream is None:
                await _reply(writer, 502, "cannot connect")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, *upstream)
            return
        # absolute-form plain HTTP request
        try:
            dest = await self.guard.check_url(target)
        except ActionError as exc:
            await self._deny(writer, target, exc)
            return
        parts = urlsplit(target)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [line for line in rest.split(b"\r\n") if line and not line.lower().startswith(
            (b"proxy-connection:", b"connection:", b"keep-alive:", b"proxy-authorization:"))]
        upstream = await _open(dest.addresses, dest.port)
        if upstream is None:
            await _reply(writer, 502, "cannot connect")
            return
        up_reader, up_writer = upstream
        up_writer.write(f"{method} {path} {version}\r\n".encode("latin-1") + b"\r\n".join(headers)
                        + b"\r\nConnection: close\r\n\r\n")
        await up_writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)

    async def _deny(self, writer: asyncio.StreamWriter, url: str, exc: Exception) -> None:
        rule = getattr(exc, "rule", None) or "egress guard"
        message = getattr(exc, "message", str(exc))
        self.denied.append(Denial(url, rule, message))
        await _reply(writer, 403, f"Blocked by Agent Legs: {message} (rule: {rule})", {DENIED_HEADER: rule})


async def _open(addresses: tuple[object, ...], port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    for ip in addresses:
        try:
            return await asyncio.wait_for(asyncio.open_connection(str(ip), port), 10)
        except (OSError, TimeoutError):
            continue
    return None


async def _reply(writer: asyncio.StreamWriter, status: int, text: str, headers: dict[str, str] | None = None) -> None:
    body = text.encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"HTTP/1.1 {status} {'Forbidden' if status == 403 else 'Error'}\r\nContent-Type: text/plain\r\n"
                 f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()


async def _pipe_both(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter,
                     u_reader: asyncio.StreamReader, u_writer: asyncio.StreamWriter) -> None:
    up = asyncio.ensure_future(_pipe(c_reader, u_writer))
    down = asyncio.ensure_future(_pipe(u_reader, c_writer))
    try:
        await down  # the response is done when the upstream closes (we asked it to)
        up.cancel()
        with contextlib.suppress(BaseException):
            await up
    finally:
        for t in (up, down):
            t.cancel()
        with contextlib.suppress(Exception):
            u_writer.close()
