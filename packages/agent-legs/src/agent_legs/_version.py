"""The one version of every package in the repository.

Read by hatch for the core, both adapters, the demo and the test fixtures (``[tool.hatch.version]``
in each pyproject.toml), by the spans' instrumentation scope and by the HTTP User-Agent.
"""

__version__ = "0.1.0"
