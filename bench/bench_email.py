"""email.send to a local SMTP server (aiosmtpd, plain on loopback) against raw aiosmtplib."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from agent_legs import Legs

from ._stats import ratio, summarize, time_async


def run(iterations: int) -> dict[str, Any]:
    import aiosmtplib
    from aiosmtpd.controller import Controller

    received = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(1)
            return "250 OK"

    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    counter = itertools.count()
    try:
        with tempfile.TemporaryDirectory() as tmp, Legs(
            workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st",
            policy={"require_approval": [], "allow": ["email.*"], "email": {"allow_recipients": ["*@example.com"]}},
            settings={"email": {"from_address": "bot@example.com",
                                "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}}},
        ) as legs:
            async def legs_send() -> None:
                r = await legs.arun("email.send", {"to": ["ana@example.com"], "subject": f"n{next(counter)}",
                                                   "body": "hello"})
                assert r.ok, r.output

            async def raw_send() -> None:
                msg = EmailMessage()
                msg["From"], msg["To"], msg["Subject"] = "bot@example.com", "ana@example.com", f"r{next(counter)}"
                msg.set_content("hello")
                await aiosmtplib.send(msg, hostname="127.0.0.1", port=port)

            async def main() -> dict[str, Any]:
                samples: dict[str, list[float]] = {"agent_legs_email_send": [], "raw_aiosmtplib": []}
                for _ in range(5):
                    samples["agent_legs_email_send"] += await time_async(legs_send, max(1, iterations // 10), 2)
                    samples["raw_aiosmtplib"] += await time_async(raw_send, max(1, iterations // 10), 2)
                return {k: summarize(v) for k, v in samples.items()}

            result = asyncio.run(main())
    finally:
        controller.stop()
    result["ratio_vs_raw"] = ratio(result["agent_legs_email_send"], result["raw_aiosmtplib"])
    result["targets"] = {"email.send p50 <= 15 ms": result["agent_legs_email_send"]["p50_us"] <= 15_000}
    result["notes"] = ("agent-legs includes recipient policy, header checks, the at-most-once ledger (a SQLite "
                       "write before and after), a span and a log line; one SMTP connection per send, like raw")
    return result
