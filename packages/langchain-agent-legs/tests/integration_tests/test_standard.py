"""langchain-tests' ToolsIntegrationTests for every tool, against the real workspace and services."""

from __future__ import annotations

from langchain_tests.integration_tests import ToolsIntegrationTests
from lc_shared import standard_suites

globals().update(standard_suites(ToolsIntegrationTests, "TestIntegration"))
