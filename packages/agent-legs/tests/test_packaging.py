"""Package metadata: what PyPI and LlamaHub show must stand on its own.

Each package README is the package's PyPI page, rendered without the repository around it: every
link is absolute. Each pyproject names where the project lives; the LlamaIndex package carries the
``[tool.llamahub]`` table LlamaHub reads (import path and class authors), and what it names exists.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2]
NAMES = ["agent-legs", "langchain-agent-legs", "llama-index-tools-agent-legs"]
REPO = "https://github.com/agent-legs/agent-legs"


@pytest.mark.parametrize("name", NAMES)
def test_readme_renders_on_its_own(name: str) -> None:
    text = (PACKAGES / name / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"""(?:src|href)=["']([^"']+)""", text)
    assert targets, "the README links to the project"
    relative = [t for t in targets if not t.startswith(("https://", "#", "mailto:"))]
    assert relative == [], f"{name}/README.md links that break on PyPI: {relative}"
    assert f"pip install {name}" in text
    assert REPO in text


@pytest.mark.parametrize("name", NAMES)
def test_project_urls(name: str) -> None:
    project = tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())["project"]
    urls = project["urls"]
    assert {"Homepage", "Documentation", "Repository", "Issues"} <= set(urls)
    assert all(u.startswith(REPO) for u in urls.values()), urls
    assert project["readme"] == "README.md" and project["classifiers"] and project["keywords"]


def test_llamahub_metadata_names_what_exists() -> None:
    data = tomllib.loads((PACKAGES / "llama-index-tools-agent-legs" / "pyproject.toml").read_text())
    hub = data["tool"]["llamahub"]
    assert hub["contains_example"] is False
    module = importlib.import_module(hub["import_path"])
    assert set(hub["class_authors"]) <= set(module.__all__)
    for cls in hub["class_authors"]:
        assert getattr(module, cls).__module__.startswith(hub["import_path"])
