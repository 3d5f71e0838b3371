"""Span attribute names are spelled once, in ``agent_legs._telemetry._semconv``.

Every source module of every package is parsed (docstrings skipped): a string literal that names a span
attribute (``gen_ai.*``, an ``agent_legs.*`` name that is not a logger or module name, or the first
argument of a ``set_attribute`` call) must be one of ``_semconv``'s constants, and outside ``_semconv.py``
it must not be spelled at all. The action families' directories (``agent_legs/actions/``) are allowed to
spell them until their literals are replaced (issue 14, after the families' split): for them only the
first rule holds, so every family attribute has its constant already.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_legs._telemetry import _semconv

REPO = Path(__file__).resolve().parents[3]
SOURCE_ROOTS = sorted(p for p in (REPO / "packages").glob("*/src") if p.is_dir())
SEMCONV = Path(_semconv.__file__).resolve()
# Allowed to spell attribute names until the lead's pass over the families (issue 14).
FAMILIES = REPO / "packages/agent-legs/src/agent_legs/actions"
NAMES = {getattr(_semconv, n) for n in _semconv.__all__}


@dataclass(frozen=True)
class Literal:
    path: Path
    line: int
    value: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.value!r}"


def _not_attributes(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings, logger names, module paths or the approval dict's type."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0].value))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in {"getLogger", "import_module"}:
                skip.update(id(a) for a in node.args)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "APPROVAL_TYPE" for t in node.targets):
            skip.add(id(node.value))  # the "type" of an approval dict (public, DESIGN.md), not a span attribute
    return skip


def attribute_literals(path: Path) -> list[Literal]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _not_attributes(tree)
    found: list[Literal] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "set_attribute":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(Literal(path, first.lineno, first.value))
                skip.add(id(first))
    for node in ast.walk(tree):
        if id(node) in skip or not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if node.value.startswith(("gen_ai.", "agent_legs.")) or node.value in NAMES:
            found.append(Literal(path, node.lineno, node.value))
    return found


def _sources() -> list[Path]:
    return sorted(p for root in SOURCE_ROOTS for p in root.rglob("*.py"))


def test_the_sources_are_found() -> None:
    # Else the tests below would pass over nothing.
    names = {p.relative_to(REPO).as_posix() for p in _sources()}
    assert "packages/agent-legs/src/agent_legs/_telemetry/_spans.py" in names
    assert "packages/agent-legs-demo/src/agent_legs_demo/_run.py" in names
    assert any(n.startswith("packages/langchain-agent-legs/src/") for n in names)
    assert any(n.startswith("packages/llama-index-tools-agent-legs/src/") for n in names)


def test_the_detector_sees_literals(tmp_path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstring naming gen_ai.tool.name is fine."""\n'
        "import logging\n"
        'log = logging.getLogger("agent_legs.code")\n'
        'span.set_attribute("server.port", 1)\n'
        'attrs = {"gen_ai.tool.name": "x", "agent_legs.email.bytes": 2}\n'
        'ctx.set_attribute("agent_legs.something_new", 3)\n'
    )
    assert [(x.line, x.value) for x in attribute_literals(sample)] == [
        (4, "server.port"),
        (6, "agent_legs.something_new"),
        (5, "gen_ai.tool.name"),
        (5, "agent_legs.email.bytes"),
    ]


def test_every_attribute_name_has_its_constant() -> None:
    unknown = [str(x) for p in _sources() for x in attribute_literals(p) if x.value not in NAMES]
    assert not unknown, "attribute names without a constant in _semconv:\n" + "\n".join(unknown)


def test_no_attribute_name_is_spelled_outside_semconv() -> None:
    spelled = [
        str(x)
        for p in _sources()
        if p.resolve() != SEMCONV and not p.resolve().is_relative_to(FAMILIES)
        for x in attribute_literals(p)
    ]
    assert not spelled, "use the _semconv constants:\n" + "\n".join(spelled)


def test_the_constants_are_unique_and_documented() -> None:
    values = [getattr(_semconv, n) for n in _semconv.__all__]
    assert len(values) == len(set(values))
    doc = _semconv.__doc__ or ""
    missing = [n for n in _semconv.__all__ if f"``{n}``" not in doc or f"``{getattr(_semconv, n)}``" not in doc]
    assert not missing, f"not in _semconv's table: {missing}"


@pytest.mark.parametrize("name", sorted(_semconv.__all__))
def test_constant_names_follow_their_value(name: str) -> None:
    assert name == getattr(_semconv, name).upper().replace(".", "_")
