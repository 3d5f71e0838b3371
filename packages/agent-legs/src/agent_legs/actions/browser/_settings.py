"""``settings.browser``: how the browser actions reach their backends (a section of ``Settings``)."""

from __future__ import annotations

from pydantic import Field

from ..._sections import SettingsSection

__all__ = ["BrowserSettings"]


class BrowserSettings(SettingsSection):
    executable_path: str | None = Field(
        None, description="Chromium binary; with ws_endpoint, its path on the server's machine (sent as a launch option)."
    )
    ws_endpoint: str | None = Field(
        None,
        description="A Playwright server (playwright run-server --unsafe, so it "
        "applies our launch flags; or launch-server pre-launched with them).",
    )
    cdp_url: str | None = Field(None, description="A Chromium reachable over CDP.")
    proxy_bind: str = Field(
        "127.0.0.1",
        description="Address each session's egress proxy listens on. Change it "
        "only for a browser on another host, to an address only that host can reach.",
    )
    proxy_host: str | None = Field(
        None,
        description="Address the browser is told to reach the proxies at "
        "(default: proxy_bind; required when proxy_bind is 0.0.0.0 or ::).",
    )
    headless: bool = True
    profile: str | None = Field(None, description="Named profile whose cookies persist in the state dir.")
    max_content_chars: int = 20_000
    max_concurrent_loads: int = Field(
        0,
        ge=0,
        description="Page loads (navigate, click, fill with submit, back) "
        "one browser runs at once; others wait their turn within their timeout. "
        "0: twice the CPU count.",
    )
