"""The public result types: what an action returns to the caller and to the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ._errors import ErrorType

__all__ = ["ActionErrorInfo", "ActionOutput", "ActionResult", "ApprovalRequest", "Artifact"]


class Artifact(BaseModel):
    """A file an action produced, inside the workspace."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(description="Path relative to the workspace root, with '/' separators.")
    mime_type: str
    size: int


class ActionErrorInfo(BaseModel):
    """Why an action did not succeed, in a form a model can act on."""

    type: ErrorType
    message: str
    retryable: bool = False
    hint: str | None = None


class ActionResult(BaseModel):
    """The outcome of one ``Legs.run()`` / ``Legs.arun()`` call.

    ``ok`` means the action was carried out (code that raised, or an HTTP 404, is still ``ok``;
    the details are in ``data``). ``output`` is the bounded text shown to the model.
    """

    action: str
    ok: bool
    output: str
    data: dict[str, Any] | None = None
    error: ActionErrorInfo | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    duration_ms: float
    trace_id: str | None = None
    span_id: str | None = None

    def __str__(self) -> str:
        return self.output


class ApprovalRequest(BaseModel):
    """What an approver sees before an action that needs approval runs."""

    action: str
    tool_name: str
    arguments: dict[str, Any] = Field(description="The arguments, secrets redacted.")
    session: str
    reason: str = Field(description="Which policy rule asked for approval, and a summary.")
    call_id: str | None = None


@dataclass
class ActionOutput:
    """What an action handler returns on success (internal; the runtime wraps it)."""

    output: str
    data: dict[str, Any] | None = None
    artifacts: list[Artifact] = field(default_factory=list)
