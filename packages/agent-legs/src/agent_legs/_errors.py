"""Every exception Agent Legs defines, in one place.

Two families:

* ``AgentLegsError`` and its subclasses are *programming or configuration errors of the caller*
  (unknown action name, bad config, state dir inside the workspace, using a closed ``Legs``).
  They are raised.
* ``ActionError`` is how an executor reports an *action-level* problem. The runtime catches it and
  turns it into ``ActionResult(ok=False, error=...)``; ``Legs.run()`` never raises it.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "ActionError",
    "AgentLegsError",
    "ClosedError",
    "ConfigError",
    "ErrorType",
    "UnknownActionError",
]

ErrorType = Literal[
    "invalid_input",
    "denied",
    "approval_denied",
    "budget_exceeded",
    "timeout",
    "not_found",
    "unavailable",
    "failed",
]


class AgentLegsError(Exception):
    """Base class of the errors raised to the caller (never returned to the model)."""


class ConfigError(AgentLegsError):
    """The configuration (policy, settings, paths, secrets) is invalid."""


class UnknownActionError(AgentLegsError, KeyError):
    """No action with that name is registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown action"


class ClosedError(AgentLegsError):
    """The ``Legs`` instance was closed."""


class ActionError(Exception):
    """An action-level failure, raised by executors and turned into an ``ActionResult``.

    ``rule`` names the policy rule behind a denial (it is put in the message and on the span).
    ``data`` is structured detail returned to the caller in ``ActionResult.data``.
    """

    def __init__(
        self,
        type: ErrorType,
        message: str,
        *,
        retryable: bool = False,
        hint: str | None = None,
        rule: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type: ErrorType = type
        self.message = message
        self.retryable = retryable
        self.hint = hint
        self.rule = rule
        self.data = data

    def __repr__(self) -> str:
        return f"ActionError({self.type!r}, {self.message!r})"
