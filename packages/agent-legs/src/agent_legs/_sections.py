"""The base classes of the policy's and the settings' sections, which each action family defines.

``Policy`` and ``Settings`` are assembled from one section per family (``actions/<family>/_policy.py``,
``actions/<family>/_settings.py``) plus the shared ones (network, budgets, telemetry, state). A section
never accepts an unknown key: a typo must fail loudly (a ``ConfigError`` naming it), not silently allow
something. Policy sections are frozen: a running engine's rules cannot change under it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["PolicySection", "SettingsSection"]


class PolicySection(BaseModel):
    """A section of ``Policy``: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsSection(BaseModel):
    """A section of ``Settings``: unknown keys refused."""

    model_config = ConfigDict(extra="forbid")
