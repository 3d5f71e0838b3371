"""What an action handler receives: the call's facts and access to shared resources.

Invariant: one context per call, made by the pipeline on the loop the call runs on (its task's);
``loop`` is that loop, found once per call on first use (``asyncio.get_running_loop()`` costs a
``getpid()`` syscall per call in CPython 3.11) and shared with the pipeline's deadline (``running_loop``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from ._egress import EgressGuard
    from ._policy import Policy
    from ._registry import ActionSpec
    from ._runtime import Runtime
    from ._secrets import Redactor, Secrets
    from ._service import Service
    from ._settings import Settings
    from .actions.files._workspace import Workspace

__all__ = ["ActionContext"]

S = TypeVar("S", bound="Service")


@dataclass(eq=False)
class ActionContext:
    runtime: Runtime
    spec: ActionSpec
    session: str
    call_id: str | None
    timeout_s: float
    """The deadline the runtime enforces for this call (policy, capped argument)."""
    span: Span
    """The call's ``execute_tool`` span: add attributes/events here; child spans nest under it."""
    running_loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    """The call's loop once ``loop`` has found it (``None`` before)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the call runs on: read it on that loop (the handler's own task), not in a thread."""
        loop = self.running_loop
        if loop is None:
            loop = self.running_loop = asyncio.get_running_loop()
        return loop

    @property
    def action(self) -> str:
        return self.spec.name

    @property
    def policy(self) -> Policy:
        return self.runtime.policy

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def secrets(self) -> Secrets:
        return self.runtime.secrets

    @property
    def redactor(self) -> Redactor:
        return self.runtime.redactor

    @property
    def workspace(self) -> Workspace:
        return self.runtime.workspace

    @property
    def workspace_path(self) -> Path:
        return self.runtime.workspace_path

    @property
    def state_dir(self) -> Path:
        return self.runtime.state_dir

    @property
    def egress(self) -> EgressGuard:
        return self.runtime.egress

    @property
    def tracer(self) -> Tracer:
        return self.runtime.tracer

    async def service(self, cls: type[S]) -> S:
        """The shared instance of a backend service, started on first use."""
        return await self.runtime.service(cls)

    def set_attribute(self, key: str, value: Any) -> None:
        """Put an attribute on the call's span (secrets are scrubbed)."""
        if isinstance(value, str):
            value = self.redactor.text(value)
        self.span.set_attribute(key, value)
