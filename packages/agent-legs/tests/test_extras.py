"""A light core with extras (issue 14.5), in this process.

``import agent_legs`` loads no action family and no backend; ``Legs()`` loads the catalogue (every
family's names, input models, descriptions) but still no Playwright, Docker SDK, aiosmtplib, aiohttp,
typer or OTLP exporter. A family whose extra is missing is made absent the way the import
system sees an uninstalled package (``sys.modules[name] = None``: ``find_spec`` answers ``None`` and
``import`` raises ``ModuleNotFoundError``); ``test_core_install.py`` checks the same against a real
core-only install in a fresh virtualenv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_legs import ConfigError, Legs, offered_actions
from agent_legs import _extras as extras

HEAVY = ["playwright", "docker", "aiosmtplib", "aiohttp", "rich", "typer", "opentelemetry.exporter.otlp.proto.http"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_loads_no_family_and_no_backend() -> None:
    loaded = _modules_after("import agent_legs")
    unwanted = ["agent_legs.actions", "agent_legs._legs", "agent_legs._telemetry", "httpx", "asyncio", *HEAVY]
    assert [m for m in unwanted if m in loaded] == []


def test_legs_lists_every_family_without_importing_a_backend(tmp_path: Path) -> None:
    code = (
        f"from agent_legs import Legs\nlegs = Legs(workspace={str(tmp_path / 'ws')!r}, "
        f"state_dir={str(tmp_path / 'st')!r})\n"
        "assert {s.family for s in legs.actions} >= {'files', 'http', 'browser', 'code', 'email'}, legs.actions\n"
        "legs.close()"
    )
    loaded = _modules_after(code)
    assert "agent_legs.actions" in loaded
    # rich only through httpx's own command line module, when rich is installed (it is not in the core)
    assert [m for m in HEAVY if m in loaded and m != "rich"] == []


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make top-level packages absent as an uninstalled package is (find_spec None, import fails)."""

    def hide(*names: str) -> None:
        monkeypatch.setattr(extras, "_present", set())
        for name in names:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
            monkeypatch.setitem(sys.modules, name, None)

    return hide


@pytest.mark.parametrize(
    ("action", "args", "extra"),
    [
        ("browser.navigate", {"url": "https://example.com/"}, "browser"),
        ("code.run", {"code": "print(1)"}, "code"),
        ("email.send", {"to": ["a@example.com"], "subject": "s", "body": "b"}, "email"),
        ("email.list", {}, "email"),
    ],
)
def test_an_action_whose_extra_is_missing_is_unavailable_with_the_install_hint(
    without,
    dirs: tuple[Path, Path],
    action: str,
    args: dict[str, object],
    extra: str,  # type: ignore[no-untyped-def]
) -> None:
    without(*extras.EXTRAS[extra].modules)
    seen: list[object] = []
    policy = {"allow": ["*"], "require_approval": [], "budgets": [{"actions": "*", "limit": 1}]}
    with Legs(*dirs, policy=policy, approver=lambda r: seen.append(r) or True) as legs:
        for _ in range(2):  # twice: the missing extra consumed no budget
            result = legs.run(action, args)
            assert not result.ok and result.error is not None
            assert result.error.type == "unavailable", result.error
            assert f"pip install 'agent-legs[{extra}]'" in (result.error.hint or "")
            assert f"agent-legs[{extra}] extra" in result.error.message
        assert legs.run("files.write", {"path": "a.txt", "content": "x"}).ok  # the budget is still whole
    assert seen == []


def test_missing_extra_is_not_offered_and_a_selection_of_it_says_how_to_install(
    without,
    dirs: tuple[Path, Path],  # type: ignore[no-untyped-def]
) -> None:
    without("playwright")
    with Legs(*dirs) as legs:
        names = {s.name for s in offered_actions(legs)}
        assert "files.read" in names and "http.request" in names
        assert not any(n.startswith("browser.") for n in names)
        with pytest.raises(ConfigError, match=r"not installed: pip install 'agent-legs\[browser\]'"):
            offered_actions(legs, include=["browser.*"])


def test_a_backend_whose_extra_breaks_at_start_is_unavailable(without, dirs: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    """The extra's top-level package is there but a module of it is not (a broken install): the service's
    ImportError is the same ``unavailable`` with the hint, not an internal error."""
    without("playwright.async_api")
    with Legs(*dirs, policy={"allow": ["browser.*"]}) as legs:
        result = legs.run("browser.navigate", {"url": "https://example.com/"})
    assert result.error is not None and result.error.type == "unavailable", result
    assert "pip install 'agent-legs[browser]'" in (result.error.hint or "")


def test_doctor_names_each_missing_extra(without, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from agent_legs import Settings
    from agent_legs._doctor import run_checks

    without("playwright", "docker", "aiosmtplib")
    checks = {c.name: c for c in run_checks(Settings(), tmp_path / "ws", tmp_path / "st")}
    for name, extra in (("browser", "browser"), ("docker", "code"), ("email", "email")):
        assert checks[name].status == "fail", checks[name]
        assert checks[name].fix == f"pip install 'agent-legs[{extra}]'"


def test_the_console_script_without_the_cli_extra_prints_the_hint() -> None:
    code = (
        "import sys\nsys.modules['typer'] = None\nsys.argv = ['agent-legs', '--help']\nfrom agent_legs._entry import main\nmain()"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert "pip install 'agent-legs[cli]'" in p.stderr


def test_the_core_imports_no_framework_adapter() -> None:
    """The core never imports LangChain, LlamaIndex or an adapter (the demo, which drives a LangChain
    agent, is its own package; the command line's ``demo`` only hands over to it)."""
    import ast

    import agent_legs

    frameworks = ("langchain", "langchain_core", "langgraph", "llama_index", "langchain_agent_legs")
    found = []
    for path in Path(agent_legs.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in frameworks]
    assert found == []
