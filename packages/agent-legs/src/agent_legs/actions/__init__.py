"""Built-in actions. Importing a family module registers its actions in the registry."""

from __future__ import annotations

from . import (
    _browser,  # noqa: F401
    _code,  # noqa: F401
    _email,  # noqa: F401
    _files,  # noqa: F401
    _http,  # noqa: F401
)
