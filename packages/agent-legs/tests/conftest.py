from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def read_log(dirs: tuple[Path, Path]) -> Iterator[object]:
    import json

    def read() -> list[dict[str, object]]:
        path = dirs[1] / "actions.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    yield read
