"""The ``agent-legs`` console script: the command line when the ``[cli]`` extra is installed, else
one line saying how to install it (exit code 1), never an ``ImportError`` traceback.

Kept apart from ``_cli`` (which imports typer and rich at the top) so that the script installed by
``pip install agent-legs`` can always start.
"""

from __future__ import annotations

import sys

from ._extras import EXTRAS, missing

__all__ = ["main"]


def main() -> None:
    absent = missing("cli")
    if absent:
        print(
            f"agent-legs: {EXTRAS['cli'].what} need the agent-legs[cli] extra, which is not installed "
            f"({', '.join(absent)} cannot be imported): {EXTRAS['cli'].hint}",
            file=sys.stderr,
        )
        raise SystemExit(1)
    from ._cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
