"""The input models of the code actions, and the time limit a call gets.

``timeout_s`` is the model's request; the policy's ``policy.code.timeout_s`` caps it (a model cannot
ask for more time than the operator allows). It bounds the code's run; getting the kernel first may take
it plus ``policy.code.queue_timeout_s`` (``ready_within``): a call queued behind other sessions' container
starts is not cut short before its code ran.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..._policy import Policy

__all__ = ["ResetInput", "RunInput", "ready_within", "timeout_for"]


class RunInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        description="Python code (a persistent notebook-like session: variables and imports survive "
        "between calls; the last expression's value is returned) or a bash script."
    )
    language: Literal["python", "bash"] = Field("python", description="'python' or 'bash' (runs in /workspace).")
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Time limit in seconds (capped by the policy). On timeout the kernel is killed and its variables are lost.",
    )


class ResetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


def timeout_for(policy: Policy, args: Any) -> float:
    """The call's time limit: the requested ``timeout_s``, capped by ``policy.code.timeout_s``."""
    limit = policy.code.timeout_s
    requested = getattr(args, "timeout_s", None)
    return min(requested, limit) if requested else limit


def ready_within(policy: Policy, args: Any) -> float:
    """How long a call may take to get its session's kernel (a place, a container start, the session's
    running call): its own time limit plus ``policy.code.queue_timeout_s``. The code's run is then bounded
    by ``timeout_for`` alone, counted from the moment it is sent."""
    return timeout_for(policy, args) + policy.code.queue_timeout_s
