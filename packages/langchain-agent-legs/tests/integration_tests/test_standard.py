"""langchain-tests' ToolsIntegrationTests for every tool, against the real workspace and server."""

from __future__ import annotations

from langchain_tests.integration_tests import ToolsIntegrationTests
from lc_shared import EXAMPLES, LEGS, prepare_example

from langchain_agent_legs import AgentLegsTool


def _suite(action: str) -> type[ToolsIntegrationTests]:
    class Suite(ToolsIntegrationTests):
        @property
        def tool_constructor(self) -> AgentLegsTool:
            prepare_example(action)  # each test calls the tool once: give it a fresh world
            return AgentLegsTool.from_spec(LEGS, LEGS.get_action(action))

        @property
        def tool_invoke_params_example(self) -> dict[str, object]:
            return dict(EXAMPLES[action])

    Suite.__name__ = f"TestIntegration_{action.replace('.', '_')}"
    return Suite


for _action in EXAMPLES:
    globals()[f"TestIntegration_{_action.replace('.', '_')}"] = _suite(_action)
