"""langchain-tests' ToolsUnitTests for every tool the registry produces."""

from __future__ import annotations

from langchain_tests.unit_tests import ToolsUnitTests
from lc_shared import EXAMPLES, LEGS, prepare_example

from langchain_agent_legs import AgentLegsTool


def _suite(action: str) -> type[ToolsUnitTests]:
    class Suite(ToolsUnitTests):
        @property
        def tool_constructor(self) -> AgentLegsTool:
            prepare_example(action)  # each test calls the tool once: give it a fresh world
            return AgentLegsTool.from_spec(LEGS, LEGS.get_action(action))

        @property
        def tool_invoke_params_example(self) -> dict[str, object]:
            return dict(EXAMPLES[action])

    Suite.__name__ = f"TestStandard_{action.replace('.', '_')}"
    return Suite


for _action in EXAMPLES:
    globals()[f"TestStandard_{_action.replace('.', '_')}"] = _suite(_action)


def test_every_registered_action_has_a_standard_suite() -> None:
    assert {a.name for a in LEGS.actions} <= set(EXAMPLES)
