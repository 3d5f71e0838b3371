"""Agent Legs: the action execution layer for AI agents.

Every action an agent takes through ``Legs`` is permissioned by a ``Policy``, logged as one
OpenTelemetry span plus an action-log line, bounded by timeouts, and fails gracefully with a
structured ``ActionResult``.

Importing the package is light (the errors and the version); each other public name loads its module
on first use (module ``__getattr__``): ``Legs`` brings the runtime, telemetry (the OpenTelemetry SDK)
and asyncio, ``Policy`` and the result models pydantic. The built-in action families load when the
registry is first read (``Legs(...)``, ``agent-legs actions``) and their backends (Playwright,
Docker, aiosmtplib, aiohttp) when an action first needs them. A family whose extra is not installed
still lists its actions; running one returns ``unavailable`` with the
``pip install 'agent-legs[<extra>]'`` hint (``agent_legs._extras``).
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    ActionError,
    AgentLegsError,
    ClosedError,
    ConfigError,
    ErrorType,
    UnknownActionError,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._approval_queue import ApprovalError, ApprovalQueue
    from ._context import ActionContext
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

# name -> the module that defines it, imported on first use
_LAZY = {
    "APPROVAL_TYPE": "._models",
    "ActionContext": "._context",
    "ActionErrorInfo": "._models",
    "ActionOutput": "._models",
    "ActionRegistry": "._registry",
    "ActionResult": "._models",
    "ActionSpec": "._registry",
    "ApprovalAnswer": "._legs",
    "ApprovalDecision": "._models",
    "ApprovalError": "._approval_queue",
    "ApprovalQueue": "._approval_queue",
    "ApprovalRequest": "._models",
    "ApprovalRule": "._policy",
    "Approver": "._legs",
    "Artifact": "._models",
    "ContentPart": "._toolset",
    "Legs": "._legs",
    "Policy": "._policy",
    "Secrets": "._secrets",
    "Service": "._service",
    "Settings": "._settings",
    "StandingRule": "._models",
    "action": "._registry",
    "offered_actions": "._toolset",
    "result_content": "._toolset",
    "tool_model": "._toolset",
    "tool_schema": "._toolset",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_legs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
