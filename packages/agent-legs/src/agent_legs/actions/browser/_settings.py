"""``settings.browser``: how the browser actions reach their backends (a section of ``Settings``).

Invariants: at most one way to a browser is named (``ws_endpoint``, ``ws_endpoints`` or ``cdp_url``);
every entry of ``ws_endpoints`` is a ``ws://`` or ``wss://`` URL with a host (and a valid port), named
once. A bad value is a ``ConfigError`` at start naming the entry, not a failure on the first call.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..._sections import SettingsSection

__all__ = ["BrowserSettings"]

_ENDPOINT_FORM = "ws://HOST:PORT/ (a `playwright run-server --port PORT --unsafe`)"


def _check_endpoint(url: str) -> str:
    """A Playwright server URL: ``ws``/``wss``, a host, a valid port if given; else a ``ValueError`` naming it."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # a non-numeric or out-of-range port raises here
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL ({exc}); expected {_ENDPOINT_FORM}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL; expected {_ENDPOINT_FORM}")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host; expected {_ENDPOINT_FORM}")
    if port == 0:
        raise ValueError(f"{url!r} has port 0; expected {_ENDPOINT_FORM}")
    return url.strip()


class BrowserSettings(SettingsSection):
    executable_path: str | None = Field(
        None, description="Chromium binary; with ws_endpoint, its path on the server's machine (sent as a launch option)."
    )
    ws_endpoint: str | None = Field(
        None,
        description="A Playwright server (playwright run-server --unsafe, so it "
        "applies our launch flags; or launch-server pre-launched with them).",
    )
    ws_endpoints: list[str] = Field(
        default_factory=list,
        description="A pool of Playwright servers (each `playwright run-server --unsafe`): each new session "
        "is placed on the one with the fewest live sessions; one that fails is left out for ws_retry_s.",
    )
    ws_retry_s: float = Field(
        10.0,
        gt=0,
        description="How long a server of ws_endpoints that failed (unreachable, refused, died) is left out "
        "before new sessions try it again; doubled at each further failure, up to 8 times this.",
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

    @field_validator("ws_endpoints")
    @classmethod
    def _endpoints(cls, urls: list[str]) -> list[str]:
        checked = [_check_endpoint(u) for u in urls]
        seen: set[str] = set()
        for u in checked:
            if u in seen:
                raise ValueError(f"{u!r} is listed twice")
            seen.add(u)
        return checked

    @model_validator(mode="after")
    def _one_way(self) -> BrowserSettings:
        named = [
            n for n, v in (("ws_endpoint", self.ws_endpoint), ("ws_endpoints", self.ws_endpoints), ("cdp_url", self.cdp_url)) if v
        ]
        if len(named) > 1:
            raise ValueError(f"{' and '.join(named)} are set together: name one way to the browser (a pool: ws_endpoints alone)")
        return self
