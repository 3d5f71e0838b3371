import agent_legs

EXPECTED_ALL = [
    "APPROVAL_TYPE",  # issue 16: approvals where the agent runs (decisions, standing rules, conditions)
    "ActionContext",
    "ActionError",
    "ActionErrorInfo",
    "ActionOutput",
    "ActionRegistry",
    "ActionResult",
    "ActionSpec",
    "AgentLegsError",
    "ApprovalAnswer",
    "ApprovalDecision",
    "ApprovalError",
    "ApprovalQueue",
    "ApprovalRequest",
    "ApprovalRule",
    "Approver",
    "Artifact",
    "ClosedError",
    "ConfigError",
    "ContentPart",
    "ErrorType",
    "Legs",
    "Policy",
    "Secrets",
    "Service",
    "Settings",
    "StandingRule",
    "UnknownActionError",
    "__version__",
    "action",
    # what the framework adapters offer a model (issue 15: tools that match the policy, strict schemas, images)
    "offered_actions",
    "result_content",
    "tool_model",
    "tool_schema",
]


def test_all_is_pinned() -> None:
    assert sorted(agent_legs.__all__) == sorted(EXPECTED_ALL)
    for name in agent_legs.__all__:
        assert hasattr(agent_legs, name), name
