"""The code sandbox: the kernel driver (sent into each container at start) and the image recipe.

What a container's bootstrap (``_body.BOOTSTRAP``) reads on its stdin is ``driver_payload``: a line
naming the bytecode magic number of the host's Python and the length of the driver compiled by it, those
bytes (``marshal``), then a line with the source's length and the source. A python3 with the same magic
runs the compiled code (it skips compiling the driver, ~5 ms of every container's start); any other
compiles the source, so any image with python3 (3.8 or later) works. The bytes come from the host, before any code
runs in the container.

The host does not compile the driver either when it need not: the bytecode cache Python keeps beside
``driver.py`` (written by pip at install, or ``compileall``) is read through the standard loader, which
checks it against the source (its size and mtime, or its hash) and compiles the source itself when the
cache is missing or stale; its code objects are then renamed to ``agent-legs-driver`` and given the
``__future__`` flags a ``compile()`` in this module inherits (``annotations``; the driver compiles each cell
with ``dont_inherit``, so cells never see them). The code sent is the same as
``compile(source, "agent-legs-driver", "exec")`` here gives (``test_code_driver_payload``), ~0.4 ms
instead of ~8 ms of CPU in every new process, spent while the engine starts the first container.
"""

from __future__ import annotations

import types
from functools import cache
from pathlib import Path

from .build import build_image, recipe_hash

__all__ = ["DRIVER_PATH", "build_image", "driver_payload", "driver_source", "recipe_hash"]

DRIVER_PATH = Path(__file__).with_name("driver.py")
DRIVER_NAME = "agent-legs-driver"  # the code's file name in tracebacks (both forms)


@cache
def driver_source() -> bytes:
    return DRIVER_PATH.read_bytes()


def _renamed(code: types.CodeType, flags: int) -> types.CodeType:
    consts = tuple(_renamed(c, flags) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=DRIVER_NAME, co_consts=consts, co_flags=code.co_flags | flags)


def driver_code() -> types.CodeType:
    """The driver's code object, named ``agent-legs-driver``: from the bytecode cache when it is valid."""
    import importlib.machinery

    try:
        code = importlib.machinery.SourceFileLoader("agent_legs_driver", str(DRIVER_PATH)).get_code("agent_legs_driver")
    except (OSError, ImportError, ValueError, EOFError):  # (a broken cache: what compile() says of the source)
        code = None
    if code is None:  # (get_code's type allows it)
        return compile(driver_source(), DRIVER_NAME, "exec")
    # compile() here inherits this module's __future__ flags (annotations): the cached code gets the same
    # flags, so the payload is the same either way (the driver's cells are compiled with dont_inherit)
    probe = "<future flags>"
    inherited = compile("", probe, "exec").co_flags & ~compile("", probe, "exec", dont_inherit=True).co_flags
    return _renamed(code, inherited)


@cache
def driver_payload() -> bytes:
    import importlib.util
    import marshal

    source = driver_source()
    code = marshal.dumps(driver_code())
    return b"%s %d\n" % (importlib.util.MAGIC_NUMBER.hex().encode(), len(code)) + code + b"%d\n" % len(source) + source
