"""``policy.browser``: what the browser actions may do (a section of ``Policy``)."""

from __future__ import annotations

from pydantic import Field

from ..._sections import PolicySection

__all__ = ["BrowserPolicy"]


class BrowserPolicy(PolicySection):
    timeout_s: float = Field(30, gt=0)
    # Backpressure: how long a call may wait in all for one of the browser's load slots (every slot busy with
    # other sessions' page loads) before it is a retryable timeout naming its place in the queue. The wait does
    # not count against timeout_s: a load's time starts when its slot is granted.
    queue_timeout_s: float = Field(60, ge=0)
    max_download_bytes: int = Field(50_000_000, gt=0)
    # Uploads leave the machine: their own, smaller cap (all files of one browser.fill together).
    max_upload_bytes: int = Field(10_000_000, gt=0)
