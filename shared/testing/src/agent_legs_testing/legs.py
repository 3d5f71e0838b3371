"""``Legs`` for tests: a workspace and a state dir per test, and instances closed at the test's end.

* ``dirs``: ``(workspace, state_dir)``, side by side under the test's temporary directory (never nested).
* ``open_legs(**kwargs)``: a ``Legs`` on ``dirs`` (``workspace``/``state_dir`` may be overridden); every
  instance it made is closed when the test ends, also when the test fails. A test file's ``legs`` fixture
  is then one call with that file's policy and settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["dirs", "open_legs"]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace and a state dir side by side (never nested)."""
    ws, st = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    st.mkdir()
    return ws, st


@pytest.fixture
def open_legs(dirs: tuple[Path, Path]) -> Iterator[Callable[..., Any]]:
    from agent_legs import Legs

    made: list[Legs] = []

    def make(**kwargs: Any) -> Legs:
        kwargs.setdefault("workspace", dirs[0])
        kwargs.setdefault("state_dir", dirs[1])
        legs = Legs(**kwargs)
        made.append(legs)
        return legs

    yield make
    for legs in reversed(made):
        legs.close()
