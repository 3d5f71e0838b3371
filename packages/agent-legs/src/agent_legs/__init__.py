"""Agent Legs: the action execution layer for AI agents.

Every action an agent takes through ``Legs`` is permissioned by a ``Policy``, logged as one
OpenTelemetry span plus an action-log line, bounded by timeouts, and fails gracefully with a
structured ``ActionResult``.
"""

from ._approvals import ApprovalError, ApprovalQueue
from ._context import ActionContext
from ._errors import (
    ActionError,
    AgentLegsError,
    ClosedError,
    ConfigError,
    ErrorType,
    UnknownActionError,
)
from ._legs import Approver, Legs
from ._models import ActionErrorInfo, ActionOutput, ActionResult, ApprovalRequest, Artifact
from ._policy import Policy
from ._registry import ActionRegistry, ActionSpec, action
from ._secrets import Secrets
from ._service import Service
from ._settings import Settings
from ._toolset import ContentPart, offered_actions, result_content, tool_model, tool_schema
from ._version import __version__

__all__ = [
    "ActionContext",
    "ActionError",
    "ActionErrorInfo",
    "ActionOutput",
    "ActionRegistry",
    "ActionResult",
    "ActionSpec",
    "AgentLegsError",
    "ApprovalError",
    "ApprovalQueue",
    "ApprovalRequest",
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
    "UnknownActionError",
    "__version__",
    "action",
    "offered_actions",
    "result_content",
    "tool_model",
    "tool_schema",
]
