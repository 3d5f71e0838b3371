"""The tests the documentation names exist: docs/security.md and docs/reliability.md cite no ghost.

Invariant: every test reference in the "tested by" column of docs/security.md's "What stops what"
table, and every test reference in docs/reliability.md (code spans anywhere, bare names in a table's
last column), names a test file that exists under ``packages/*/tests`` or ``integration_tests`` and,
when it names a function, a ``def test_...`` / ``async def test_...`` of that name (in the named file
when one is given). A renamed or deleted test makes this fail, naming the doc, the line and the
reference, so a guarantee can never go on citing a test that no longer checks it.

What counts as a reference: ``test_x``, ``test_x[param]``, ``test_file.py``, ``file.py::test_x``,
``dir/test_file.py::test_x[param]``, and ``::test_x`` (a test of the file named last in the same
table cell or line). reliability.md's prefixes follow its own convention: ``faults/`` is
``integration_tests/faults/``, ``tests/`` is ``packages/agent-legs/tests/``. A ``[param]`` is checked
only loosely: each ``-``-separated part of it must occur in the test's file (pytest builds ids from
several parametrize marks joined by ``-``).

Not checked: that the test asserts what the doc claims (a reviewer reads that), and prose such as
"corpus" or "tests" without a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[3]
SECURITY = ROOT / "docs" / "security.md"
RELIABILITY = ROOT / "docs" / "reliability.md"
PREFIXES = {"faults/": "integration_tests/faults/", "tests/": "packages/agent-legs/tests/"}

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_REF = re.compile(
    r"^(?P<file>(?:[\w.-]+/)*test_\w+\.py)?"
    r"(?:(?P<sep>::)?(?P<func>test_\w+)(?:\[(?P<param>[^\]\s]+)\])?)?$"
)
_BARE = re.compile(r"(?<![\w/.:`-])((?:[\w.-]+/)*test_\w+\.py(?:::test_\w+(?:\[[^\]\s]+\])?)?|test_\w+(?:\[[^\]\s]+\])?)")


@dataclass(frozen=True)
class Ref:
    doc: str
    line: int
    text: str
    file: str | None  # as written (with its prefix), or the file named last in the same cell
    func: str | None
    param: str | None

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"


def _parse(span: str) -> tuple[str | None, bool, str | None, str | None] | None:
    """(file, has ``::``, function, param) of a reference, or None when ``span`` is not one."""
    m = _REF.match(span.strip())
    if m is None or not (m["file"] or m["func"]):
        return None
    if m["file"] and m["func"] and not m["sep"]:
        return None  # `test_a.pytest_b`: not a reference
    if m["sep"] and not m["func"]:
        return None
    return m["file"], bool(m["sep"]), m["func"], m["param"]


def _refs_in_cell(doc: str, line_no: int, cell: str, *, bare: bool) -> list[Ref]:
    """The references of one table cell (or one line of prose), in order; ``::test_x`` takes the last file."""
    found: list[tuple[int, str]] = [(m.start(1), m.group(1)) for m in _CODE_SPAN.finditer(cell)]
    if bare:
        without_spans = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), cell)
        found += [(m.start(1), m.group(1)) for m in _BARE.finditer(without_spans)]
    refs: list[Ref] = []
    last_file: str | None = None
    for _, text in sorted(found):
        parsed = _parse(text)
        if parsed is None:
            continue
        file, sep, func, param = parsed
        if file:
            last_file = file
        elif sep:
            if last_file is None:
                refs.append(Ref(doc, line_no, text, "<no file named before it>", func, param))
                continue
            file = last_file
        refs.append(Ref(doc, line_no, text, file, func, param))
    return refs


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def security_refs(text: str, doc: str = "docs/security.md") -> list[Ref]:
    """References in the last column of the "What stops what" table."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## What stops what"), None)
    assert start is not None, f"{doc}: no '## What stops what' section"
    refs: list[Ref] = []
    rows = 0
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.startswith("## "):
            break
        if not line.lstrip().startswith("|") or set(line.replace("|", "").strip()) <= {"-", ":"}:
            continue
        cells = _cells(line)
        if cells[-1] == "tested by":
            continue
        rows += 1
        refs += _refs_in_cell(doc, i + 1, cells[-1], bare=True)
    assert rows, f"{doc}: the 'What stops what' table has no rows"
    return refs


def reliability_refs(text: str, doc: str = "docs/reliability.md") -> list[Ref]:
    """Code spans anywhere; also bare names in a table's last column."""
    refs: list[Ref] = []
    in_fence = False
    for i, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if line.lstrip().startswith("|"):
            cells = _cells(line)
            for cell in cells[:-1]:
                refs += _refs_in_cell(doc, i + 1, cell, bare=False)
            refs += _refs_in_cell(doc, i + 1, cells[-1], bare=True)
        else:
            refs += _refs_in_cell(doc, i + 1, line, bare=False)
    return refs


@cache
def _test_files() -> tuple[Path, ...]:
    files = [*ROOT.glob("packages/*/tests/**/test_*.py"), *ROOT.glob("integration_tests/**/test_*.py")]
    return tuple(sorted(p for p in files if "__pycache__" not in p.parts))


@cache
def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _files_named(ref_file: str) -> list[Path]:
    for prefix, real in PREFIXES.items():
        if ref_file.startswith(prefix):
            ref_file = real + ref_file[len(prefix) :]
            break
    if "/" in ref_file:
        path = ROOT / ref_file
        return [path] if path in _test_files() else []
    return [p for p in _test_files() if p.name == ref_file]


def _defines(path: Path, func: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(func)}\s*\(", _source(path), re.MULTILINE) is not None


def problem(ref: Ref) -> str | None:
    """Why ``ref`` names no existing test (None: it does)."""
    candidates = list(_test_files())
    if ref.file is not None:
        candidates = _files_named(ref.file)
        if not candidates:
            return f"no test file {ref.file!r} under packages/*/tests or integration_tests"
    if ref.func is None:
        return None
    defining = [p for p in candidates if _defines(p, ref.func)]
    if not defining:
        where = f"in {ref.file}" if ref.file else "in any test file"
        return f"no `def {ref.func}` / `async def {ref.func}` {where}"
    if ref.param is not None:
        missing = [part for part in ref.param.split("-") if not any(part in _source(p) for p in defining)]
        if missing:
            return f"the parameter id [{ref.param}] has parts that occur nowhere in the test's file: {missing}"
    return None


def _all_refs() -> list[Ref]:
    return security_refs(SECURITY.read_text(encoding="utf-8")) + reliability_refs(RELIABILITY.read_text(encoding="utf-8"))


def test_every_test_the_docs_name_exists() -> None:
    refs = _all_refs()
    broken = [f"{ref}: {why}" for ref in refs if (why := problem(ref))]
    assert not broken, "the docs name tests that do not exist:\n" + "\n".join(broken)


def test_the_docs_are_actually_read() -> None:
    """The check above is not vacuous: both docs yield references of every form."""
    sec, rel = security_refs(SECURITY.read_text(encoding="utf-8")), reliability_refs(RELIABILITY.read_text(encoding="utf-8"))
    assert len(sec) >= 40 and len(rel) >= 20, (len(sec), len(rel))
    both = sec + rel
    assert any(r.file and r.func for r in both)  # file.py::test_x
    assert any(r.file and not r.func for r in both)  # test_file.py
    assert any(r.func and not r.file for r in both)  # test_x
    assert any(r.param for r in both)  # test_x[param]


SAMPLE_SECURITY = """\
## What stops what

| threat | what stops it | tested by |
|---|---|---|
| a | `test_policy.py`: not read | `test_approvals.py::test_condition_typos_fail_loudly`, `::test_no_such_test_anywhere_zz` |
| b | b | test_no_such_file_zz.py, `test_http_action.py` |
| c | c | corpus (`deny-case-*`), `test_condition_typos_fail_loudly[nosuchpart_zz]` |

## The layers

| x | y | `test_not_in_the_table_zz` |
"""

SAMPLE_RELIABILITY = """\
Prose with `faults/test_code.py` and `tests/test_approvals.py::test_condition_typos_fail_loudly`.

```bash
`test_inside_a_fence_zz`
```

| fault | guarantee | test |
|---|---|---|
| f | `unavailable`, `test_named_in_the_middle_zz` | `faults/test_no_such_zz.py::test_x`, tests/test_policy.py |
| g | g | `faults/test_shutdown.py::test_hung_collector_bounds_close_and_exit[3000-actions-nosuchpart]` |
"""


def test_the_parser_finds_every_form_and_the_check_catches_ghosts() -> None:
    sec = security_refs(SAMPLE_SECURITY)
    assert [(r.file, r.func, r.param) for r in sec] == [
        ("test_approvals.py", "test_condition_typos_fail_loudly", None),
        ("test_approvals.py", "test_no_such_test_anywhere_zz", None),  # `::` takes the cell's last file
        ("test_no_such_file_zz.py", None, None),  # bare, in the tested-by column
        ("test_http_action.py", None, None),
        (None, "test_condition_typos_fail_loudly", "nosuchpart_zz"),
    ]
    assert [problem(r) is None for r in sec] == [True, False, False, True, False]
    assert "no `def test_no_such_test_anywhere_zz`" in (problem(sec[1]) or "")
    assert "no test file 'test_no_such_file_zz.py'" in (problem(sec[2]) or "")

    rel = reliability_refs(SAMPLE_RELIABILITY)
    assert [r.text for r in rel] == [
        "faults/test_code.py",
        "tests/test_approvals.py::test_condition_typos_fail_loudly",
        "test_named_in_the_middle_zz",
        "faults/test_no_such_zz.py::test_x",
        "tests/test_policy.py",
        "faults/test_shutdown.py::test_hung_collector_bounds_close_and_exit[3000-actions-nosuchpart]",
    ]
    assert [problem(r) is None for r in rel] == [True, True, False, False, True, False]
    assert "nosuchpart" in (problem(rel[-1]) or "")


@pytest.mark.parametrize("text", ["test_a.pytest_b", "::", "test", "test_x y", "deny-case-*", "`unavailable`"])
def test_things_that_are_not_references_are_skipped(text: str) -> None:
    assert _parse(text) is None
