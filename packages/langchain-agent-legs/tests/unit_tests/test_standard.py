"""langchain-tests' ToolsUnitTests for every tool the registry produces."""

from __future__ import annotations

from langchain_tests.unit_tests import ToolsUnitTests
from lc_shared import EXAMPLES, LEGS, standard_suites

globals().update(standard_suites(ToolsUnitTests, "TestStandard"))


def test_every_registered_action_has_a_standard_suite() -> None:
    assert {a.name for a in LEGS.actions} <= set(EXAMPLES)
