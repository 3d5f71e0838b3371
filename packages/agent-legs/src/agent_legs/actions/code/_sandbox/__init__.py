"""The code sandbox: the kernel driver (sent into each container at start) and the image recipe.

What a container's bootstrap (``_body.BOOTSTRAP``) reads on its stdin is ``driver_payload``: a line
naming the bytecode magic number of the host's Python and the length of the driver compiled by it, those
bytes (``marshal``), then a line with the source's length and the source. A python3 with the same magic
runs the compiled code (it skips compiling the driver, ~5 ms of every container's start); any other
compiles the source, so any image with python3 (3.8 or later) works. The bytes come from the host, before any code
runs in the container.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from .build import build_image, recipe_hash

__all__ = ["DRIVER_PATH", "build_image", "driver_payload", "driver_source", "recipe_hash"]

DRIVER_PATH = Path(__file__).with_name("driver.py")
DRIVER_NAME = "agent-legs-driver"  # the code's file name in tracebacks (both forms)


@cache
def driver_source() -> bytes:
    return DRIVER_PATH.read_bytes()


@cache
def driver_payload() -> bytes:
    import importlib.util
    import marshal

    source = driver_source()
    code = marshal.dumps(compile(source, DRIVER_NAME, "exec"))
    return b"%s %d\n" % (importlib.util.MAGIC_NUMBER.hex().encode(), len(code)) + code + b"%d\n" % len(source) + source
