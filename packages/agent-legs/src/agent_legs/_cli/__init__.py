"""The ``agent-legs`` command line: one module per command group, all on one typer ``app``.

* ``_app``: the ``app``, the global options (``--config``, ``--workspace``, ``--state-dir``), how every
  command reads the configuration and opens a ``Legs``, and ``main``;
* ``_run``: ``actions``, ``run``; ``_log``: ``log``; ``_demo``: ``demo``;
* ``_approvals``: ``approvals``, ``approve``, ``reject``; ``_doctor``: ``doctor``, ``sandbox build``;
* ``_mcp``: ``mcp``; ``_console``: ``console``.

A new command group is a module here that registers its commands on ``_app.app`` and is imported
below.

Invariants: every command reads the configuration the way ``Legs.from_config`` does (``--workspace`` /
``--state-dir``, then ``AGENT_LEGS_*``, then ``--config`` / ``./agent-legs.toml``, then the defaults), so
``agent-legs log`` reads the log a library ``Legs()`` writes under the same environment. A configuration
problem (or an unknown action) is one line on stderr and exit code 2, raised before anything is created.
What is printed on stdout is the result; progress and status go to stderr, decorations only on a terminal.
"""

from __future__ import annotations

# The order of these imports is the order ``--help`` lists the commands in.
from . import _run  # isort: skip  # noqa: F401  (each module registers its commands on app)
from . import _log  # isort: skip  # noqa: F401
from . import _demo  # isort: skip  # noqa: F401
from . import _approvals  # isort: skip  # noqa: F401
from . import _doctor  # isort: skip  # noqa: F401
from . import _mcp  # isort: skip  # noqa: F401
from . import _console  # isort: skip  # noqa: F401
from ._app import app, main

__all__ = ["app", "main"]
