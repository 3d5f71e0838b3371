"""The driver's bytecode sent into each sandbox: read from Python's bytecode cache when it is valid
(no compile in the process), the same code as compiling the source, and compiled when the cache is
stale or missing."""

from __future__ import annotations
import __future__

import builtins
import importlib.util
import marshal
import py_compile
import shutil
import types
from pathlib import Path

import pytest

from agent_legs.actions.code import _sandbox


def _walk(code: types.CodeType) -> list[types.CodeType]:
    out = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out += _walk(const)
    return out


def _same(a: types.CodeType, b: types.CodeType) -> None:
    pairs = list(zip(_walk(a), _walk(b), strict=True))
    for x, y in pairs:
        assert x == y
        assert (x.co_filename, x.co_qualname, x.co_firstlineno) == (y.co_filename, y.co_qualname, y.co_firstlineno)
        assert (x.co_linetable, x.co_exceptiontable) == (y.co_linetable, y.co_exceptiontable)
    assert {x.co_filename for x, _ in pairs} == {_sandbox.DRIVER_NAME}


@pytest.fixture
def driver_copy(tmp_path, monkeypatch) -> Path:
    """A copy of driver.py (its own bytecode cache) in place of the package's."""
    path = tmp_path / "driver.py"
    shutil.copyfile(_sandbox.DRIVER_PATH, path)
    monkeypatch.setattr(_sandbox, "DRIVER_PATH", path)
    return path


def _counting_compile(monkeypatch) -> list[object]:
    calls: list[object] = []
    real = builtins.compile

    def counting(source, filename, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(filename)
        return real(source, filename, *args, **kwargs)

    monkeypatch.setattr(builtins, "compile", counting)
    return calls


def test_the_driver_is_not_compiled_when_its_bytecode_cache_is_valid(driver_copy, monkeypatch) -> None:
    py_compile.compile(str(driver_copy), doraise=True)  # what pip does at install
    expected = compile(driver_copy.read_bytes(), _sandbox.DRIVER_NAME, "exec")
    calls = _counting_compile(monkeypatch)
    _sandbox.driver_payload.cache_clear()
    monkeypatch.setattr(_sandbox, "driver_source", driver_copy.read_bytes)
    try:
        payload = _sandbox.driver_payload()
    finally:
        _sandbox.driver_payload.cache_clear()
    assert [name for name in calls if name != "<future flags>"] == []  # (two empty probes of the flags)
    magic, size = payload.split(b"\n", 1)[0].split()
    _same(marshal.loads(payload[len(magic) + len(size) + 2 :][: int(size)]), expected)


def test_a_stale_or_missing_bytecode_cache_compiles_the_current_source(driver_copy, monkeypatch) -> None:
    py_compile.compile(str(driver_copy), doraise=True)
    source = driver_copy.read_bytes() + b"\nSTALE_CHECK = 1\n"
    driver_copy.write_bytes(source)  # another size: the cache no longer matches
    code = _sandbox.driver_code()
    _same(code, compile(source, _sandbox.DRIVER_NAME, "exec"))
    assert "STALE_CHECK" in code.co_names
    Path(importlib.util.cache_from_source(str(driver_copy))).unlink()
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    _same(_sandbox.driver_code(), compile(source, _sandbox.DRIVER_NAME, "exec"))


def test_the_payload_carries_the_code_compiling_the_source_gives() -> None:
    payload = _sandbox.driver_payload()
    magic, size = payload.split(b"\n", 1)[0].split()
    assert magic == importlib.util.MAGIC_NUMBER.hex().encode()
    code = marshal.loads(payload[len(magic) + len(size) + 2 :][: int(size)])
    _same(code, compile(_sandbox.driver_source(), _sandbox.DRIVER_NAME, "exec"))


def test_the_cached_driver_keeps_the_future_flags_its_cells_inherit(driver_copy) -> None:
    """compile() in the package inherits ``from __future__ import annotations``, and so does the driver's
    compile of each cell: the code read from the cache carries the same flag on every code object."""
    py_compile.compile(str(driver_copy), doraise=True)
    flag = __future__.annotations.compiler_flag
    assert all(c.co_flags & flag for c in _walk(_sandbox.driver_code()))
