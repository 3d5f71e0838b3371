from __future__ import annotations

from typing import NoReturn

import pytest


def component_missing(component: str, reason: str, fix: str) -> NoReturn:
    """Fail (never skip) a test whose real component cannot be started."""
    pytest.fail(f"{component} is required by this test but unavailable: {reason}. Fix: {fix}", pytrace=False)
