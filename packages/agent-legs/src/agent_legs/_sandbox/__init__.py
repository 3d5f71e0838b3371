"""The code sandbox: the in-container driver and the image recipe (see ``build.py``)."""

from __future__ import annotations

from .build import DRIVER_PATH, build_image, driver_hash, recipe_hash

__all__ = ["DRIVER_PATH", "build_image", "driver_hash", "recipe_hash"]
