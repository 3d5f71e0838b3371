"""The public result types: what an action returns to the caller and to the model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import ErrorType

__all__ = [
    "APPROVAL_TYPE",
    "ActionErrorInfo",
    "ActionOutput",
    "ActionResult",
    "ApprovalDecision",
    "ApprovalRequest",
    "Artifact",
    "StandingRule",
]

APPROVAL_TYPE = "agent_legs.approval"  # the "type" of the approval dict an interrupt / event carries


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
    rule: str | None = Field(None, description="The policy rule that asked for approval.")
    allowed_decisions: list[str] = Field(default_factory=lambda: ["approve", "reject", "edit"])

    def payload(self) -> dict[str, Any]:
        """The JSON-serialisable approval dict a LangGraph interrupt or a LlamaIndex event carries."""
        return {
            "type": APPROVAL_TYPE,
            "action": self.action,
            "tool_name": self.tool_name,
            "tool_call_id": self.call_id,
            "arguments": self.arguments,
            "session": self.session,
            "reason": self.reason,
            "rule": self.rule,
            "allowed_decisions": list(self.allowed_decisions),
        }


class ApprovalDecision(BaseModel):
    """A person's (or a rule's) answer to an ``ApprovalRequest``, in the shape of LangChain's
    human-in-the-loop decisions: ``{"type": "approve" | "reject" | "edit", "message"?, "args"?, "by"?}``.

    ``edit`` carries the replacement ``args``, which go through validation and the whole policy again.
    ``remember`` (``"session"`` or ``"always"``) with an ``approve``/``edit`` adds a standing rule:
    later calls of the same action whose arguments fit ``match`` (argument name -> accepted values or
    globs; omitted: every call of the action) need no approval. Unknown keys are refused: an answer
    of the wrong shape never counts as an approval.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["approve", "reject", "edit"]
    message: str | None = None
    args: dict[str, Any] | None = None
    by: str | None = None
    rule: str | None = None
    remember: Literal["session", "always"] | None = None
    match: dict[str, list[Any]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalDecision:
        if self.type == "edit" and self.args is None:
            raise ValueError('an "edit" decision needs "args" (the replacement arguments)')
        if self.type != "edit" and self.args is not None:
            raise ValueError(f'"args" belongs to an "edit" decision, not to {self.type!r}')
        if self.remember is not None and self.type == "reject":
            raise ValueError('"remember" applies to "approve" and "edit" decisions only')
        if self.match is not None and self.remember is None:
            raise ValueError('"match" scopes a standing rule: it needs "remember"')
        return self

    @property
    def outcome(self) -> str:
        """``approved``, ``rejected`` or ``edited`` (the action log's ``approval.decision``)."""
        return {"approve": "approved", "reject": "rejected", "edit": "edited"}[self.type]

    @classmethod
    def coerce(cls, value: Any) -> ApprovalDecision:
        """An answer as a decision: ``True``/``False``, ``"approve"``/``"reject"``, a JSON text or a
        dict of the decision shape, or a decision. Anything else raises ``ValueError`` naming the problem."""
        if isinstance(value, ApprovalDecision):
            return value
        if value is True or value is False:
            return cls(type="approve" if value else "reject")
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("approve", "reject"):
                return cls(type=text.lower())  # type: ignore[arg-type]
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f'not a decision: {text[:80]!r} (expected "approve", "reject" or a JSON decision)') from None
        if isinstance(value, Mapping):
            try:
                return cls.model_validate(dict(value))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'decision'}: {e['msg']}" for e in exc.errors(include_url=False)
                )
                raise ValueError(f"not a valid decision: {problems}") from None
        raise ValueError(
            f"not a decision: a {type(value).__name__} (expected a dict such as "
            '{"type": "approve"}, True/False, "approve" or "reject")'
        )


class StandingRule(BaseModel):
    """A remembered approval: calls of ``action`` whose arguments fit ``match`` need no approval,
    in ``session`` (``scope="session"``) or everywhere (``scope="always"``), until revoked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    action: str
    match: dict[str, list[Any]] | None = None
    scope: Literal["session", "always"]
    session: str | None = None
    by: str | None = None
    created: str


@dataclass
class ActionOutput:
    """What an action handler returns on success (internal; the runtime wraps it)."""

    output: str
    data: dict[str, Any] | None = None
    artifacts: list[Artifact] = field(default_factory=list)
