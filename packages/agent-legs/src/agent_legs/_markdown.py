"""HTML to markdown for the model: one converter for browser pages, HTTP bodies and email.

html-to-markdown (a Rust converter) takes ~4 ms for a 40 KB page where markdownify took ~65 ms,
more than loading the page; scripts and styles are dropped by the converter itself.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import html_to_markdown as _h2m

__all__ = ["html_to_markdown"]


@cache
def _options(base_url: str | None, images: bool) -> Any:
    return _h2m.ConversionOptions(
        base_url=base_url,  # absolute links: the model can pass them to browser_navigate / http_request as they are
        extract_metadata=False,
        inline_data_media="alt_text_only",
        capture_svg=False,
        escape_misc=False,
        compact_tables=True,  # column padding costs tokens and says nothing
        skip_images=not images,
        preprocessing=_h2m.PreprocessingOptions(remove_forms=False),  # labels stay; callers list form fields
    )


def html_to_markdown(html: str, base_url: str | None = None, *, images: bool = True) -> str:
    """Readable markdown; ``images=False`` drops images (in an email a remote image is a tracking beacon)."""
    result = _h2m.convert(html, _options(base_url or None, images))
    return str(result.content or "").strip()
