"""Real-service pytest fixtures shared by every Agent Legs test suite.

Each fixture module in this package (``docker.py``, ``mail.py``, ``legs.py``, ...) is loaded by ``plugin.py``.
Helpers written once for every suite: ``free_port``, the process-tree walks (``descendants``, ``running``,
``process_group``, ``chromium_pids``), the documentation runner (``quickstart``), ``dirs``/``open_legs``.
A fixture that cannot start its real component fails the test loudly with the reason: tests that
need Docker, Chromium, SMTP/IMAP or an OTLP backend run or fail, they never skip.
"""

from ._net import free_port
from ._procs import chromium_pids, descendants, process_group, running
from ._require import component_missing

__all__ = ["chromium_pids", "component_missing", "descendants", "free_port", "process_group", "running"]
