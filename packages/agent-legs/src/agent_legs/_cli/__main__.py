"""``python -m agent_legs._cli``: the command line (as the ``agent-legs`` script runs it)."""

from __future__ import annotations

from . import main

main()
