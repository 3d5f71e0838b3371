"""Agent Legs: the action execution layer for AI agents.

Every action an agent takes through ``Legs`` is permissioned by a ``Policy``, logged as one
OpenTelemetry span plus an action-log line, bounded by timeouts, and fails gracefully with a
structured ``ActionResult``.
"""

from ._approval_queue import ApprovalError, ApprovalQueue
from ._context import ActionContext
from ._errors import (
    ActionError,
    AgentLegsError,
    ClosedError,
    ConfigError,
    ErrorType,
    UnknownActionError,
)
from ._legs import ApprovalAnswer, Approver, Legs
from ._models import (
    APPROVAL_TYPE,
    ActionErrorInfo,
    ActionOutput,
    ActionResult,
    ApprovalDecision,
    ApprovalRequest,
    Artifact,
    StandingRule,
)
from ._policy import ApprovalRule, Policy
from ._registry import ActionRegistry, ActionSpec, action
from ._secrets import Secrets
from ._service import Service
from ._settings import Settings
from ._toolset import ContentPart, offered_actions, result_content, tool_model, tool_schema
from ._version import __version__

__all__ = [
    "APPROVAL_TYPE",
    "ActionContext",
    "ActionError",
    "ActionErrorInfo",
    "ActionOutput",
    "ActionRegistry",
    "ActionResult",
    "ActionSpec",
    "AgentLegsError",
    "ApprovalAnswer",
    "ApprovalDecision",
    "ApprovalError",
    "ApprovalQueue",
    "ApprovalRequest",
    "ApprovalRule",
    "Approver",
    "Artifact",
    "ClosedError",
    "ConfigError",
    "ContentPart",
    "ErrorType",
    "Legs",
    "Policy",
    "Secrets",
    "Service",
    "Settings",
    "StandingRule",
    "UnknownActionError",
    "__version__",
    "action",
    "offered_actions",
    "result_content",
    "tool_model",
    "tool_schema",
]
