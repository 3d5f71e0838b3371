"""``agent-legs demo``: an agent does one realistic job with all five action families.

The demo starts its own services on 127.0.0.1 — a shop website, a JSON API that records posts, an
SMTP server that captures mail, and (when Dovecot is installed) an IMAP mailbox holding a supplier's
email — and gives a LangChain agent the Agent Legs tools under a policy that allows exactly those
services. The job: read the stock list from the mailbox, the catalogue in the browser, compute
statistics and a chart in the sandbox, save a CSV report, post the summary to the API, email it with
the chart attached; one request is denied on purpose. Without ``--model`` a scripted model plays the
agent (it reads the real tool results to decide its next call).

Only ``run_demo`` and ``DemoReport`` are imported here; LangChain is imported when the demo runs.
"""

from __future__ import annotations

from ._run import DemoReport, run_demo

__all__ = ["DemoReport", "run_demo"]
