import langchain_agent_legs

EXPECTED_ALL = ["AgentLegsTool", "AgentLegsToolkit", "Approvals"]


def test_all_imports() -> None:
    assert sorted(langchain_agent_legs.__all__) == sorted(EXPECTED_ALL)
