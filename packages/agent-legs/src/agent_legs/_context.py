"""What an action handler receives: the call's facts and access to shared resources."""

from __future__ import annotations

from dataclasses import dataclass
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
