"""The Agent Legs demo (``agent-legs demo``): an agent does one realistic job with all five action families.

The demo starts its own services on 127.0.0.1 — a shop website, a JSON API that records posts, an
SMTP server that captures mail, and (when Dovecot is installed) an IMAP mailbox holding a supplier's
email — and gives a LangChain agent the Agent Legs tools under a policy that allows exactly those
services. The job: read the stock list from the mailbox, the catalogue in the browser, compute
statistics and a chart in the sandbox, save a CSV report, post the summary to the API, email it with
the chart attached; one request is denied on purpose. Without ``--model`` a scripted model plays the
agent (it reads the real tool results to decide its next call).

Its own distribution (``agent-legs-demo``), so that the core never imports a framework adapter: the
core command line's ``demo`` command calls ``main`` here when this package is installed. Only
``run_demo``, ``DemoReport`` and ``main`` are imported here; LangChain is imported when the demo runs.
``agent_legs_demo.dovecot`` is the throwaway Dovecot the demo's inbox and the tests' IMAP server use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._run import DemoReport, run_demo

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DemoReport", "main", "run_demo"]


def main(
    workspace: Path,
    state_dir: Path,
    *,
    model: str | None = None,
    inbox: bool = True,
    console: Console | None = None,
    err: Console | None = None,
) -> int:
    """``agent-legs demo``: the exit code (0: the job got done; 1: it did not; 2: LangChain is missing)."""
    from rich.console import Console

    try:
        import langchain.agents  # noqa: F401

        import langchain_agent_legs  # noqa: F401
    except ImportError as exc:
        (err or Console(stderr=True)).print(
            f"[red]error:[/red] the demo needs LangChain ({exc}): pip install 'langchain>=1,<2' langchain-agent-legs"
        )
        return 2
    report = run_demo(workspace, state_dir, model=model, console=console, inbox=inbox)
    return 0 if report.ok else 1
