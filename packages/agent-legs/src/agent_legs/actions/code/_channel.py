"""The host side of the sandbox protocol: framing, bounded reads, request ids and reply checks.

The host talks to a container's driver (``_sandbox/driver.py``) over the container's attached
stdin/stdout: the engine multiplexes stdout and stderr into attach frames (an 8-byte header: the
stream, then a big-endian size), and on stdout each message is a 4-byte big-endian length plus a
JSON object. A request carries a fresh random ``id``; its reply must echo it.

Threat model: the channel is untrusted. Code in the kernel can write on it (its process holds the
channel), so it may forge frames, announce huge lengths, flood, or answer out of step. Hence:

* every read is bounded: an attach frame is at most ``FRAME_MAX`` bytes, a message's announced
  length is checked against a cap (``reply_cap``, derived from ``policy.code.max_output_bytes``;
  ``HELLO_MAX`` for the greeting) before anything is buffered, and stderr keeps only a short tail;
* a stream of tiny frames cannot starve the event loop (it yields every 64 frames), so the call's
  deadline still fires;
* a reply must echo its request's id, nothing may follow it, and nothing may wait on the channel
  between calls (``ensure_idle``): bytes there mean code wrote on it;
* every field of a reply is type-checked and cut to the policy's caps (``clean_reply``) before it
  reaches ``data``.

A remote engine's attach connection is TLS (an ``ssl.SSLSocket``, which the loop's socket calls
refuse): ``recv_some``/``send_all`` read and write it non-blocking, and ``ensure_idle``, which cannot
peek under TLS, keeps the byte it read (``raw_head``) for the next frame.

Any breach raises ``ProtocolError``; the caller kills the kernel and the session's next call gets a
fresh one. ``hang_up`` ends the attach connection, which makes the driver's PID 1 end the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import ssl
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FRAME_MAX",
    "HELLO_MAX",
    "Channel",
    "ProtocolError",
    "clean_reply",
    "hang_up",
    "recv_exact",
    "recv_some",
    "reply_cap",
    "send_all",
]

FRAME_MAX = 1 << 20  # one attach frame; the engine sends at most 32 KiB
HELLO_MAX = 64 * 1024


def reply_cap(max_output_bytes: int) -> int:
    """The largest reply an honest driver sends: stdout and stderr heads (<= 6 JSON bytes per byte),
    value and traceback (<= max_output_bytes characters, <= 12 JSON bytes each), up to 100 changed
    paths and figures, and a few numbers."""
    return 36 * max_output_bytes + (4 << 20)


class ProtocolError(Exception):
    """The kernel broke the protocol (code wrote on its channel): it is replaced."""


async def recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await recv_some(loop, sock, n - len(buf))
        if not chunk:
            raise EOFError("sandbox connection closed")
        buf += chunk
    return bytes(buf)


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, write: bool) -> None:
    """Wait until the (non-blocking) socket is readable, or writable."""
    fut: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not fut.done():
            fut.set_result(None)

    fd = sock.fileno()
    if fd < 0:
        raise EOFError("sandbox connection closed")
    (loop.add_writer if write else loop.add_reader)(fd, done)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def recv_some(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes; over TLS (a remote engine's attach connection) too, which the loop's
    ``sock_recv`` refuses: decrypted bytes are served first, then the socket is awaited."""
    if not isinstance(sock, ssl.SSLSocket):
        return await loop.sock_recv(sock, n)
    while True:
        try:
            return sock.recv(n)
        except ssl.SSLWantReadError:
            await _ready(loop, sock, write=False)
        except ssl.SSLWantWriteError:
            await _ready(loop, sock, write=True)


async def send_all(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes) -> None:
    if not isinstance(sock, ssl.SSLSocket):
        await loop.sock_sendall(sock, data)
        return
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except ssl.SSLWantReadError:
            await _ready(loop, sock, write=False)
        except (ssl.SSLWantWriteError, BlockingIOError):
            await _ready(loop, sock, write=True)


def hang_up(sock: socket.socket) -> None:
    """End the attach connection now: the engine closes the container's stdin (its PID 1 then ends
    the container) and stops writing to us. ``shutdown`` first: ``close`` alone leaves the connection
    open while the HTTP response still references the socket, and an engine blocked on a full
    connection cannot even remove the container."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass(eq=False)
class Channel:
    """One container's attach connection: what stdout has buffered, and the tail of stderr."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    stderr_tail: bytearray = field(default_factory=bytearray)
    raw_head: bytearray = field(default_factory=bytearray)  # bytes taken off a TLS connection to see if any waited

    async def _recv_exact(self, loop: asyncio.AbstractEventLoop, n: int) -> bytes:
        """``n`` raw bytes of the connection (a byte ``ensure_idle`` took off a TLS connection first)."""
        head = bytes(self.raw_head[:n])
        del self.raw_head[:n]
        return head + (await recv_exact(loop, self.sock, n - len(head)) if len(head) < n else b"")

    def _waiting(self) -> bool:
        """Bytes wait on the connection (``EOFError`` when it is closed). Over TLS, a record that holds
        no data (a session ticket) is consumed here and counts as nothing."""
        if self.raw_head:
            return True
        if not isinstance(self.sock, ssl.SSLSocket):
            try:
                peek = self.sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return False
            if not peek:
                raise EOFError("sandbox connection closed")
            return True
        if not self.sock.pending():
            poller = select.poll()  # not select(): a busy process has descriptors past 1024
            poller.register(self.sock, select.POLLIN)
            if not poller.poll(0):
                return False
        try:
            byte = self.sock.recv(1)  # TLS cannot peek: the byte is kept for the next read
        except ssl.SSLWantReadError:
            return False
        if not byte:
            raise EOFError("sandbox connection closed")
        self.raw_head += byte
        return True

    async def _read_frame(self) -> None:
        """One frame of the attach stream (stdout and stderr multiplexed), its size checked."""
        loop = asyncio.get_running_loop()
        header = await self._recv_exact(loop, 8)
        stream, size = header[0], struct.unpack(">I", header[4:])[0]
        if stream not in (1, 2) or size > FRAME_MAX:
            raise ProtocolError(f"a malformed attach frame (stream {stream}, {size} bytes)")
        payload = await self._recv_exact(loop, size)
        if stream == 2:
            self.stderr_tail += payload
            del self.stderr_tail[:-4000]
        else:
            self.buffer += payload

    async def _recv_stdout(self, n: int) -> bytes:
        """``n`` bytes of the container's stdout (``n`` is checked by the caller: it bounds memory)."""
        frames = 0
        while len(self.buffer) < n:
            await self._read_frame()
            frames += 1
            if frames % 64 == 0:  # a stream of tiny frames never suspends: let the loop (and deadlines) run
                await asyncio.sleep(0)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_message(self, cap: int) -> dict[str, Any]:
        """One message; its announced length is checked against ``cap`` before anything is buffered."""
        (size,) = struct.unpack(">I", await self._recv_stdout(4))
        if size > cap:
            raise ProtocolError(f"the kernel announced a {size}-byte message, over the {cap}-byte cap")
        raw = await self._recv_stdout(size)
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"the kernel sent a message that is not JSON ({type(exc).__name__})") from None
        if not isinstance(message, dict):
            raise ProtocolError("the kernel sent a message that is not a JSON object")
        return message

    async def ensure_idle(self) -> None:
        """Before a request: nothing may be waiting on the channel (the kernel does not write
        between calls; bytes there mean code wrote on it, and the next reply would be out of step)."""
        while self._waiting():
            try:
                async with asyncio.timeout(2):
                    await self._read_frame()
            except TimeoutError:  # (an OSError: not to be taken for a closed connection)
                raise ProtocolError("a partial frame waits on the channel between calls") from None
            if len(self.buffer) > 0:
                raise ProtocolError(f"the kernel wrote {len(self.buffer)}+ bytes on its channel between calls")

    async def request(self, payload: dict[str, Any], cap: int) -> dict[str, Any]:
        """Send ``payload`` with a fresh id; the reply must echo it."""
        call_id = uuid.uuid4().hex
        data = json.dumps({**payload, "id": call_id}).encode()
        await send_all(asyncio.get_running_loop(), self.sock, struct.pack(">I", len(data)) + data)
        reply = await self.read_message(cap)
        if reply.get("id") != call_id:
            raise ProtocolError("the kernel's reply does not answer this call (its id differs): the channel is out of step")
        if len(self.buffer) > 0:
            raise ProtocolError("the kernel wrote more after its reply")
        return reply

    def hang_up(self) -> None:
        hang_up(self.sock)


def clean_reply(raw: dict[str, Any], limit: int) -> dict[str, Any]:
    """The reply's fields, type-checked and cut to the policy's caps (the kernel's code could forge them)."""

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ProtocolError(f"the reply's {key!r} is not text")
        return value[:limit]

    def count(key: str) -> int:
        value = raw.get(key, 0)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProtocolError(f"the reply's {key!r} is not a count")
        return value

    def names(key: str) -> list[str]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProtocolError(f"the reply's {key!r} is not a list of names")
        return [v[:4096] for v in value[:100]]

    if "driver_error" in raw:
        return {"driver_error": str(raw["driver_error"])[:2000]}
    exit_code = raw.get("exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise ProtocolError("the reply's 'exit_code' is not an integer")
    duration = raw.get("duration_ms")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
        raise ProtocolError("the reply's 'duration_ms' is not a number")
    value, error = text("value"), text("error")
    return {
        "stdout": text("stdout") or "",
        "stderr": text("stderr") or "",
        "value": value,
        "error": error,
        "stdout_bytes": count("stdout_bytes"),
        "stderr_bytes": count("stderr_bytes"),
        "value_truncated": bool(raw.get("value_truncated")) or (value is not None and len(raw["value"]) > limit),
        "exit_code": exit_code,
        "duration_ms": duration,
        "figures": names("figures"),
        "changed": names("changed"),
        "killed_processes": count("killed_processes"),
        "oom_killed": raw.get("oom_killed") is True,
    }
