"""Real-service pytest fixtures shared by every Agent Legs test suite.

Each fixture module in this package (``docker.py``, ``smtp.py``, ...) is loaded by ``plugin.py``.
A fixture that cannot start its real component fails the test loudly with the reason: tests that
need Docker, Chromium, SMTP/IMAP or an OTLP backend run or fail, they never skip.
"""

from ._require import component_missing

__all__ = ["component_missing"]
