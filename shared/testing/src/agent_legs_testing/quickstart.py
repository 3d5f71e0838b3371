"""Run the Python blocks of a documentation page as written (the quickstarts' tests).

``python_blocks(page)`` lists the page's fenced ``python`` blocks; ``exec_block(code, page, **names)``
runs one in a fresh namespace (``names`` replace what a test swaps, e.g. a hosted model for a scripted
one) and returns the namespace; the ``in_tmp`` fixture runs the test in its temporary directory with
the default state directory inside it (``XDG_STATE_HOME``), so a page's relative paths land there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

__all__ = ["exec_block", "in_tmp", "python_blocks"]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.DOTALL | re.MULTILINE)


def exec_block(code: str, page: Path, **names: object) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "quickstart", **names}
    exec(compile(code, str(page), "exec"), namespace)
    return namespace


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the default state dir
    return tmp_path
