"""The built-in action families: one package each, every one laid out the same way.

``actions/<family>/`` holds the family's input models and handlers (``_actions.py``, registered with
``@action``), its long-lived service, its ``policy.<family>`` section (``_policy.py``) and its
``settings.<family>`` section (``_settings.py``); ``Policy`` and ``Settings`` are assembled from those
sections. Importing this package (or a family's package) registers nothing and imports no extra's
library: the shared ``REGISTRY`` calls ``load_builtin()`` on first use, so ``import agent_legs``
stays light and a missing extra is an ``unavailable`` result, never an ``ImportError``.
"""

from __future__ import annotations

import importlib

__all__ = ["FAMILIES", "load_builtin"]

FAMILIES = ("files", "http", "browser", "code", "email")
"""The built-in families, in the order their actions are listed."""


def load_builtin(family: str | None = None) -> None:
    """Register the built-in actions of ``family`` (None: of every family) by importing its
    ``_actions`` module once."""
    for name in FAMILIES if family is None else (family,):
        importlib.import_module(f"{__name__}.{name}._actions")
