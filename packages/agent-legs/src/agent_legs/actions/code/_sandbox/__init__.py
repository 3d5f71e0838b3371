"""The code sandbox: the kernel driver (sent into each container at start) and the image recipe."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from .build import build_image, recipe_hash

__all__ = ["DRIVER_PATH", "build_image", "driver_source", "recipe_hash"]

DRIVER_PATH = Path(__file__).with_name("driver.py")


@cache
def driver_source() -> bytes:
    return DRIVER_PATH.read_bytes()
