"""Base class of the long-lived backends executors share (HTTP pool, browser, Docker, SMTP).

A service is created lazily, once per ``Legs``, inside the runtime event loop, the first time an
action asks for it (``await ctx.service(MyService)``), and closed by ``Legs.close()``.
Services that keep per-session state (browser contexts, sandbox kernels) drop it in
``close_session`` when a session expires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["Service"]


class Service:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self) -> None:
        """Connect / launch. Raise ``ActionError("unavailable", ...)`` if the backend is missing."""

    async def close_session(self, session: str) -> None:
        """Release what belongs to one session."""

    async def aclose(self) -> None:
        """Release everything. Must not raise."""
