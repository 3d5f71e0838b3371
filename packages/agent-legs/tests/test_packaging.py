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
NAMES = ["agent-legs", "langchain-agent-legs", "llama-index-tools-agent-legs", "agent-legs-demo"]
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


def test_core_readme_example_prints_what_it_says(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from agent_legs_testing.quickstart import python_blocks

    code = python_blocks(PACKAGES / "agent-legs" / "README.md")[0]
    expected = [line.strip()[2:] for line in code.splitlines() if line.strip().startswith("# ")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_LEGS_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == expected


def test_one_version_source_for_every_package() -> None:
    """``agent_legs/_version.py`` is the only version: each package's hatch reads it, the User-Agent and the
    spans' instrumentation scope use it, and the packages that depend on the core accept it."""
    from packaging.requirements import Requirement

    import agent_legs
    from agent_legs import Settings

    root = PACKAGES.parent
    version_file = (PACKAGES / "agent-legs" / "src" / "agent_legs" / "_version.py").resolve()
    for pyproject in [*(PACKAGES / n / "pyproject.toml" for n in NAMES), root / "shared" / "testing" / "pyproject.toml"]:
        data = tomllib.loads(pyproject.read_text())
        assert "version" not in data["project"] and "version" in data["project"]["dynamic"], pyproject
        assert (pyproject.parent / data["tool"]["hatch"]["version"]["path"]).resolve() == version_file, pyproject
        for dep in data["project"]["dependencies"]:
            req = Requirement(dep)
            if req.name == "agent-legs":
                assert req.specifier.contains(agent_legs.__version__), (pyproject, dep)
    assert f"agent-legs/{agent_legs.__version__} " in Settings().http.user_agent
    sources = [p for p in (PACKAGES / "agent-legs" / "src").rglob("*.py") if re.search(r"""["']agent-legs/\d""", p.read_text())]
    assert sources == [], "a version written by hand"
