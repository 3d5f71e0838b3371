"""pytest11 entry point: loads every fixture module of this package."""

from __future__ import annotations

import importlib
import pkgutil

import agent_legs_testing as _pkg

pytest_plugins = [
    f"agent_legs_testing.{m.name}"
    for m in pkgutil.iter_modules(_pkg.__path__)
    if not m.name.startswith("_") and m.name != "plugin"
]
importlib.invalidate_caches()
