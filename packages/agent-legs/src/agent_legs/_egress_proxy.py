"""A local filtering HTTP forward proxy that puts the egress guard in front of any client.

Used by the browser (one proxy per session, so denials are attributed to that session) and by the
code sandbox (served on a unix socket). What it enforces:

* ``CONNECT host:port`` (HTTPS, and WebSockets: Chromium tunnels ``ws://`` too) is checked when the
  tunnel is opened; the proxy resolves the name, checks every address and connects to a checked
  one, so the client resolves nothing and DNS rebinding cannot swap the target.
* Plain-HTTP requests (absolute form) are checked **one by one**, including every request of a
  kept-alive or pipelined client connection. Framing is parsed strictly (ambiguous
  ``Content-Length``/``Transfer-Encoding``, folded or malformed headers are refused), the ``Host``
  header is rewritten from the checked URL (no domain fronting), and an upstream connection is only
  reused for the same checked host and port.

* Who may use it. A local browser's proxy (on loopback) serves only connections whose other end
  belongs to this process's user (``peer_uid``, read from the kernel's socket table): other local
  users get ``403`` and nothing is checked or forwarded. A proxy that a remote browser reaches (or
  any proxy where the socket table cannot be read) requires ``credentials`` instead: a random user
  and password per session, presented as ``Proxy-Authorization: Basic``, else ``407``. Either way
  it is no open proxy for whoever else can reach its address. The local browser does without the
  credential because Playwright answers proxy authentication by pausing every request of the page
  (``Fetch.enable``) *and disabling the HTTP cache*: a page with 40 images loaded 2.6-3x slower on
  every visit after the first (and the process's own user can read the credential from memory anyway).

Denied requests get ``403`` with ``X-Agent-Legs-Denied: <rule>`` and are recorded in ``denied``.
Cost per plain request is tens of microseconds of parsing plus the guard's rule check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import ipaddress
import logging
import os
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._egress import EgressGuard
from ._errors import ActionError

__all__ = ["DENIED_HEADER", "Denial", "EgressProxy", "loopback_peer_uid", "peer_uid_supported"]

log = logging.getLogger("agent_legs.egress")
DENIED_HEADER = "X-Agent-Legs-Denied"
_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024
_MAX_DENIED = 1000  # a page looping over blocked requests must not grow memory without bound
# Hop-by-hop headers the proxy consumes; ``Host`` is rewritten from the checked URL.
_DROP_REQUEST = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization", b"te", b"trailer", b"upgrade", b"host", b"expect"}
)
_DROP_RESPONSE = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate"})


class _BadMessage(Exception):
    """The client (or upstream) sent something the proxy will not interpret."""


@dataclass(frozen=True, slots=True)
class Denial:
    url: str
    rule: str
    message: str


@dataclass(slots=True)
class _Head:
    first: list[bytes]  # the start line split in three
    headers: list[tuple[bytes, bytes, bytes]]  # (lowercase name, raw name, value)

    def get(self, name: bytes) -> list[bytes]:
        return [v for n, _, v in self.headers if n == name]

    def tokens(self, name: bytes) -> set[bytes]:
        return {t.strip().lower() for v in self.get(name) for t in v.split(b",")}


def _parse_head(raw: bytes) -> _Head:
    lines = raw[:-4].split(b"\r\n")
    first = lines[0].split(b" ", 2)
    if len(first) != 3:
        raise _BadMessage("malformed start line")
    headers: list[tuple[bytes, bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        # No obs-fold, no whitespace in names, no bare CR/LF/NUL: any of these can make the proxy
        # and the upstream disagree about where headers (and so requests) begin and end.
        if (
            not sep
            or not name
            or name[:1] in b" \t"
            or name != name.strip()
            or b" " in name
            or any(c in line for c in (b"\r", b"\n", b"\x00"))
        ):
            raise _BadMessage("malformed header line")
        headers.append((name.lower(), name, value.strip()))
    return _Head(first, headers)


def _body_length(head: _Head, *, request: bool) -> int | None:
    """Content length, or ``-1`` for chunked, ``None`` if neither is given."""
    te = head.get(b"transfer-encoding")
    cl = head.get(b"content-length")
    if te:
        codings = [c.strip().lower() for v in te for c in v.split(b",") if c.strip()]
        if request and (cl or codings != [b"chunked"]):
            raise _BadMessage("ambiguous request framing (Transfer-Encoding)")
        if codings and codings[-1] == b"chunked":
            return -1
        raise _BadMessage("response not delimited by chunked encoding")
    if cl:
        values = {v.strip() for joined in cl for v in joined.split(b",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise _BadMessage("invalid Content-Length")
        return int(next(iter(values)))
    return None


async def _copy_exact(src: asyncio.StreamReader, dst: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        chunk = await src.read(min(n, _CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(chunk)
        dst.write(chunk)
        await dst.drain()


async def _copy_chunked(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while True:
        line = await src.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadMessage("invalid chunk size") from None
        if size < 0 or not size_text or size_text.startswith((b"-", b"+", b"0x", b"0X")):
            raise _BadMessage("invalid chunk size")
        dst.write(line)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await src.readuntil(b"\r\n")
                dst.write(trailer)
                if trailer == b"\r\n":
                    await dst.drain()
                    return
        await _copy_exact(src, dst, size)
        if await src.readexactly(2) != b"\r\n":
            raise _BadMessage("chunk not terminated by CRLF")
        dst.write(b"\r\n")
        await dst.drain()


@dataclass
class _Upstream:
    key: tuple[str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


_SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR, _NETLINK_SOCK_DIAG = 20, 2, 4
_DIAG_UID_OFFSET = 16 + 64  # nlmsghdr, then inet_diag_msg: 4 bytes, sockid (48), expires, rqueue, wqueue; uid


def loopback_peer_uid(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    """The user owning the other end of a TCP connection on this host; None if that socket is not here
    (or already gone). One exact lookup in the kernel's socket table (Linux netlink sock_diag, ~50 µs;
    reading /proc/net/tcp instead costs milliseconds). Raises OSError where sock_diag is unavailable."""
    peer_ip, our_ip = ipaddress.ip_address(peer[0]), ipaddress.ip_address(ours[0])
    family = socket.AF_INET6 if peer_ip.version == 6 else socket.AF_INET
    # inet_diag_req_v2 for the peer's socket: its source is the peer, its destination us; any state.
    sockid = struct.pack("!HH16s16s", peer[1], ours[1], peer_ip.packed.ljust(16, b"\0"), our_ip.packed.ljust(16, b"\0"))
    sockid += struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # any interface; no cookie
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, 1, 1, 0)  # NLM_F_REQUEST, seq 1
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.send(header + request)
        reply = nl.recv(65536)
    kind = struct.unpack_from("=H", reply, 4)[0]
    if kind == _NLMSG_ERROR:
        errno = -struct.unpack_from("=i", reply, 16)[0]
        if errno == 2:  # ENOENT: no such socket on this host
            return None
        raise OSError(errno, f"sock_diag lookup failed ({os.strerror(errno)})")
    return int(struct.unpack_from("=I", reply, _DIAG_UID_OFFSET)[0])


@functools.cache
def peer_uid_supported() -> bool:
    """Whether ``loopback_peer_uid`` works here: it must find the user of a connection of our own (asked
    once per process)."""
    try:
        with (
            socket.create_server(("127.0.0.1", 0)) as server,
            socket.create_connection(server.getsockname(), timeout=1) as client,
        ):
            accepted, peer = server.accept()
            with accepted:
                return loopback_peer_uid(peer, accepted.getsockname()) == os.getuid() and client is not None
    except (OSError, ValueError, struct.error):
        return False


@dataclass
class EgressProxy:
    """Start with ``await EgressProxy(guard).start()``; give clients ``proxy.url``."""

    guard: EgressGuard
    host: str = "127.0.0.1"
    port: int = 0
    denied: list[Denial] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    connect_timeout_s: float = 10.0
    checked: int = 0
    """Requests and tunnels the guard was asked about (allowed or denied)."""
    credentials: tuple[str, str] | None = None
    """``(username, password)`` a client connection must present before it is served."""
    peer_uid: int | None = None
    """Serve only connections from this local user (loopback, Linux): see ``loopback_peer_uid``."""
    refused_unauthenticated: int = 0
    """Connections refused: without the credentials (``407``) or from another local user (``403``)."""

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
        upstream: list[_Upstream] = []  # at most one: the connection kept alive for this client
        try:
            await self._serve(reader, writer, upstream)
        except _BadMessage as exc:
            with contextlib.suppress(Exception):
                await _reply(writer, 400, f"bad request: {exc}")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # closed by aclose(): end quietly (3.11's stream callback logs a cancelled task)
        except Exception:  # one bad connection must not stop the proxy
            log.exception("egress proxy connection failed")
        finally:
            self._tasks.discard(task)
            for up in upstream:
                up.close()
            with contextlib.suppress(Exception):
                writer.close()

    def _own_user(self, writer: asyncio.StreamWriter) -> bool:
        peer, ours = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        try:
            return loopback_peer_uid(peer[:2], ours[:2]) == self.peer_uid
        except (OSError, ValueError, TypeError, IndexError):
            return False  # unknown is refused

    def _authorized(self, head: _Head) -> bool:
        assert self.credentials is not None
        expected = b"basic " + base64.b64encode(":".join(self.credentials).encode())
        return any(hmac.compare_digest(v.strip().lower()[:6] + v.strip()[6:], expected) for v in head.get(b"proxy-authorization"))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: list[_Upstream]) -> None:
        authenticated = self.credentials is None and self.peer_uid is None
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed between requests
            head = _parse_head(raw)
            method, target, version = (p.decode("latin-1") for p in head.first)
            # Authenticated per client connection: later requests on it come from the same client. (After
            # reading the request: a reply while it is still unread would reset the connection.)
            if not authenticated and self.peer_uid is not None:
                if not (authenticated := self._own_user(writer)):
                    self.refused_unauthenticated += 1
                    await _reply(writer, 403, "this proxy serves only its own browser")
                    return
            elif not authenticated and not (authenticated := self._authorized(head)):
                self.refused_unauthenticated += 1
                await _reply(writer, 407, "proxy authentication required", {"Proxy-Authenticate": 'Basic realm="agent-legs"'})
                return
            self.checked += 1
            if method.upper() == "CONNECT":
                await self._tunnel(reader, writer, target, upstream)
                return
            if not await self._forward(reader, writer, head, method, target, version, upstream):
                return

    # -- CONNECT ------------------------------------------------------------------------------------
    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, upstream: list[_Upstream]
    ) -> None:
        url = f"https://{target}"
        host, _, port_text = target.rpartition(":")
        try:
            if not port_text.isdigit() or not host:
                raise ActionError("invalid_input", f"invalid CONNECT target {target!r}", rule="egress proxy")
            self._check_tunnel_scheme()
            dest = await self.guard.check_host(host, int(port_text), scheme="https")
        except ActionError as exc:
            await self._deny(writer, url, exc)
            return
        opened = await self._open(dest.addresses, dest.port)
        if opened is None:
            await _reply(writer, 502, f"cannot connect to {target}")
            return
        up_reader, up_writer = opened
        upstream.append(_Upstream((dest.host, dest.port), up_reader, up_writer))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)

    def _check_tunnel_scheme(self) -> None:
        # A tunnel carries https or wss: at least one of them must be an allowed scheme.
        try:
            self.guard.check_scheme("https://x")
        except ActionError:
            self.guard.check_scheme("wss://x")

    # -- plain HTTP ---------------------------------------------------------------------------------
    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: _Head,
        method: str,
        target: str,
        version: str,
        upstream: list[_Upstream],
    ) -> bool:
        """Check and forward one request and its response; return whether the client stays open."""
        if not target.lower().startswith("http://"):
            raise _BadMessage("only absolute http:// URLs (or CONNECT) go through this proxy")
        try:
            checked = self.guard.check_target(target)  # every request, also on a kept-alive connection
        except ActionError as exc:
            await self._deny(writer, target, exc)
            return False
        body = _body_length(head, request=True)
        parts = urlsplit(target)
        authority = checked.host if checked.port == 80 else f"{checked.host}:{checked.port}"
        if ":" in checked.host:
            authority = f"[{checked.host}]" + ("" if checked.port == 80 else f":{checked.port}")
        conn = head.tokens(b"connection") | head.tokens(b"proxy-connection")
        upgrade = head.get(b"upgrade") if b"upgrade" in conn else []
        keep = b"close" not in conn and (version == "HTTP/1.1" or b"keep-alive" in conn) and not upgrade
        drop = _DROP_REQUEST | conn  # headers the client's Connection lists are hop-by-hop too
        lines = [
            f"{method} {(parts.path or '/') + ('?' + parts.query if parts.query else '')} HTTP/1.1\r\n"
            f"Host: {authority}\r\n".encode("latin-1")
        ]
        lines += [raw + b": " + value + b"\r\n" for name, raw, value in head.headers if name not in drop]
        if upgrade:
            lines.append(b"Connection: Upgrade\r\nUpgrade: " + upgrade[0] + b"\r\n")
        lines.append(b"\r\n")
        request_head = b"".join(lines)
        if head.get(b"expect"):  # answer 100-continue ourselves: the body follows at once
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

        key = (checked.host, checked.port)
        up = upstream[0] if upstream else None
        reused = up is not None and up.key == key and not up.reader.at_eof()
        if up is not None and not reused:
            up.close()
            upstream.clear()
            up = None
        for attempt in (0, 1):
            if up is None:
                try:
                    dest = await self.guard.resolve(checked)
                except ActionError as exc:
                    await self._deny(writer, target, exc)
                    return False
                opened = await self._open(dest.addresses, dest.port)
                if opened is None:
                    await _reply(writer, 502, f"cannot connect to {checked.host}:{checked.port}")
                    return False
                up = _Upstream(key, *opened)
                upstream[:] = [up]
            try:
                up.writer.write(request_head)
                if body == -1:
                    await _copy_chunked(reader, up.writer)
                elif body:
                    await _copy_exact(reader, up.writer, body)
                else:
                    await up.writer.drain()
                raw = await up.reader.readuntil(b"\r\n\r\n")
                break
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                up.close()
                upstream.clear()
                up = None
                # A kept-alive upstream may close just as we reuse it: retry once if nothing of the
                # client's body was consumed (no body at all).
                partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if attempt == 0 and reused and not body and not partial:
                    continue
                await _reply(writer, 502, f"upstream {checked.host}:{checked.port} closed the connection")
                return False
        assert up is not None
        while True:
            response = _parse_head(raw)
            status = int(response.first[1]) if response.first[1].isdigit() else 0
            if 100 <= status < 200 and status != 101:  # interim responses: pass on, read the next
                writer.write(raw)
                raw = await up.reader.readuntil(b"\r\n\r\n")
                continue
            break
        if status == 101 and upgrade:
            writer.write(raw)
            await writer.drain()
            upstream.clear()
            await _pipe_both(reader, writer, up.reader, up.writer)
            return False
        up_conn = response.tokens(b"connection")
        up_keep = b"close" not in up_conn and (response.first[0] == b"HTTP/1.1" or b"keep-alive" in up_conn)
        if method.upper() == "HEAD" or status in (204, 304) or status < 200:
            length: int | None = 0
        else:
            length = _body_length(response, request=False)
        if length is None:  # delimited by the upstream closing: the client must see a close too
            keep = up_keep = False
        out = [b"HTTP/1.1 " + response.first[1] + b" " + response.first[2] + b"\r\n"]
        out += [
            raw_name + b": " + value + b"\r\n"
            for name, raw_name, value in response.headers
            if name not in _DROP_RESPONSE and name not in up_conn
        ]
        out.append(b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
        writer.write(b"".join(out))
        if length == -1:
            await _copy_chunked(up.reader, writer)
        elif length:
            await _copy_exact(up.reader, writer, length)
        elif length is None:
            while chunk := await up.reader.read(_CHUNK):
                writer.write(chunk)
                await writer.drain()
        await writer.drain()
        if not up_keep:
            up.close()
            upstream.clear()
        return keep

    async def _open(self, addresses: tuple[object, ...], port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for ip in addresses:  # only guard-checked addresses: the connection is pinned
            try:
                return await asyncio.wait_for(asyncio.open_connection(str(ip), port, limit=_MAX_HEAD), self.connect_timeout_s)
            except (OSError, TimeoutError):
                continue
        return None

    async def _deny(self, writer: asyncio.StreamWriter, url: str, exc: ActionError) -> None:
        rule = exc.rule or "egress guard"
        if len(self.denied) < _MAX_DENIED:
            self.denied.append(Denial(url, rule, exc.message))
        await _reply(writer, 403, f"Blocked by Agent Legs: {exc.message} (rule: {rule})", {DENIED_HEADER: rule})


async def _reply(writer: asyncio.StreamWriter, status: int, text: str, headers: dict[str, str] | None = None) -> None:
    body = text.encode()
    reason = {400: "Bad Request", 403: "Forbidden", 407: "Proxy Authentication Required", 502: "Bad Gateway"}.get(status, "Error")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(_CHUNK):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()


async def _pipe_both(
    c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter, u_reader: asyncio.StreamReader, u_writer: asyncio.StreamWriter
) -> None:
    """Relay a tunnel until both directions have ended (half-closes are passed on)."""
    up = asyncio.ensure_future(_pipe(c_reader, u_writer))
    down = asyncio.ensure_future(_pipe(u_reader, c_writer))
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if down.done():  # the server finished: nothing more can come back, stop relaying
            up.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
    finally:
        for t in (up, down):
            t.cancel()
        with contextlib.suppress(Exception):
            u_writer.close()
