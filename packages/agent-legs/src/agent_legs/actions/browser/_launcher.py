"""Finding, launching or connecting to Chromium, with the flags that keep it inside the egress guard.

Three ways to a browser (``settings.browser``): a local Chromium we launch (the Playwright-managed one,
the configured ``executable_path`` or the system one), a Playwright server (``ws_endpoint``), or a
Chromium reachable over CDP (``cdp_url``). Every failure to get one is ``unavailable`` (retryable, with
a hint saying how to install or configure one), never a Playwright traceback.

Invariants:

* A browser we launch runs with ``CHROMIUM_ARGS``: no background traffic of its own (sync, component
  updates, pings, crash reports), no QUIC (which would leave around an HTTP proxy) and WebRTC UDP only
  through the proxy (``--webrtc-ip-handling-policy=disable_non_proxied_udp`` forced).
* No software WebGL (``--disable-software-rasterizer``): pages get no WebGL context, and SwiftShader's shader
  compiler is not loaded into the GPU process (memory, attack surface); compositing and screenshots are unchanged.
* Its process model is cut to what many headless sessions need (``DISABLED_FEATURES``: no prewarmed
  address-bar popup renderer per window, no spare renderer per navigation), in one ``--disable-features``
  switch (Chromium keeps only the last such switch: it replaces Playwright's own). Site isolation and
  third-party storage partitioning stay on (``docs/security.md``): each session's context has its own
  renderer processes, and a cross-site frame its own.
* A remote browser (``ws_endpoint``/``cdp_url``), whose command line we do not control, is used only if
  that command line carries the WebRTC flags: WebRTC UDP is the one channel the per-session egress
  proxy cannot see. Its command line is read over CDP (``--enable-automation``) or from
  chrome://version in a throwaway context whose proxy leads nowhere; a browser whose command line
  cannot be read is refused like one without the flags.
* Nothing here imports Playwright at module import time (``agent-legs doctor`` imports
  ``find_chromium`` without the browser extra).

Threat model: a hostile page tries to reach the network around the proxy (WebRTC, QUIC, DNS of its
own): the flags and the remote check close those channels; the proxy does the rest (``_service``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._errors import ActionError
from ..._telemetry._semconv import BROWSER_EXECUTABLE, BROWSER_VERSION

if TYPE_CHECKING:
    from ..._runtime import Runtime

__all__ = ["CHROMIUM_ARGS", "DISABLED_FEATURES", "Launched", "connect_server", "find_chromium", "launch"]

# Chromium keeps only the LAST ``--disable-features`` switch of a command line: ours replaces Playwright's own list
# (``chromiumSwitches.ts``), so it names every feature we want off, in one switch.
DISABLED_FEATURES = (
    "AutofillServerCommunication",
    "MediaRouter",
    # background requests to Google's services (the egress proxy would refuse them anyway: no noise, no CPU)
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "PreconnectToSearch",
    "AimEnabled",
    # What a headless browser serving many sessions does not need (measured: bench/bench_scale.py, benchmarks.md):
    # headless Chromium 156 prewarms the address bar's popup (two WebUI pages, chrome://omnibox-popup.top-chrome/)
    # for every window: one more renderer process per session, ~30 MB and about half of Chromium's CPU per page
    # load at 32 sessions, for a popup nobody sees.
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
    # after each navigation Chromium starts a spare renderer for the context that navigated; with one context per
    # session the next navigation is almost always another context's: the spare is killed unused, another started.
    "SpareRendererForSitePerProcess",
)
# Not in the list, on purpose (Playwright turns them off for tests; they stay as Chromium ships them here):
# ThirdPartyStoragePartitioning (a third-party frame's storage partitioned by top-level site: privacy),
# HttpsUpgrades, PaintHolding and the rest of Playwright's list.

CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # WebRTC UDP is the one channel the proxy cannot see; QUIC would bypass an HTTP proxy too
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--force-webrtc-ip-handling-policy",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-features=" + ",".join(DISABLED_FEATURES),  # one switch: Chromium keeps only the last one
    "--disable-domain-reliability",
    "--no-pings",
    "--disable-breakpad",
    "--disable-crash-reporter",  # crash dumps hold page memory: none written under $HOME
    # No SwiftShader (Playwright's --enable-unsafe-swiftshader turns it back on): with no GPU, WebGL would run on this
    # software rasterizer in the GPU process. Without it pages get no WebGL (they fall back, as on a machine without
    # a GPU, Chromium's own default); the GPU process stays for software compositing (screenshots unchanged). A page
    # can no longer reach SwiftShader's shader compiler, fed by page-supplied shaders ("unsafe" is Chromium's word).
    # Memory: the GPU process ~15 MB smaller at 16 sessions (browser only); at 64 within the runs' noise.
    "--disable-software-rasterizer",
]
_REQUIRED_REMOTE_FLAGS = ("--webrtc-ip-handling-policy=disable_non_proxied_udp", "--force-webrtc-ip-handling-policy")
_SYSTEM_CHROMIUMS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable")
_UNAVAILABLE_HINT = (
    "Install Chromium (apt-get install -y chromium), set settings.browser.executable_path, or point "
    "settings.browser.ws_endpoint at a Playwright server (playwright run-server)."
)


@dataclass(frozen=True)
class Launched:
    """A browser ready for contexts: ``remote`` when we did not launch it; ``downloads_dir`` (local only)
    is where Chromium writes downloads in progress (ours to delete)."""

    browser: Any
    remote: bool
    downloads_dir: Path | None


def find_chromium(configured: str | None) -> str | None:
    """The system Chromium (or the configured one); ``None`` if there is none."""
    if configured:
        return configured if os.path.exists(configured) else None
    for candidate in _SYSTEM_CHROMIUMS:
        if os.path.exists(candidate):
            return candidate
    return shutil.which("chromium")


async def launch(runtime: Runtime, pw: Any) -> Launched:
    """Launch or connect to the browser ``settings.browser`` names (span ``browser launch``)."""
    settings = runtime.settings.browser
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    downloads_dir: Path | None = None
    remote = False
    with runtime.tracer.start_as_current_span("browser launch") as span:
        try:
            if settings.ws_endpoint:
                browser = await _connect(runtime, pw, settings.ws_endpoint, args)
                remote = True
            elif settings.cdp_url:
                browser = await pw.chromium.connect_over_cdp(settings.cdp_url)
                remote = True
            else:
                executable = _executable(pw, settings.executable_path)
                span.set_attribute(BROWSER_EXECUTABLE, executable)
                downloads_dir = Path(tempfile.mkdtemp(prefix="agent-legs-downloads-"))
                browser = await pw.chromium.launch(
                    executable_path=executable, headless=settings.headless, args=args, downloads_path=str(downloads_dir)
                )
        except BaseException as exc:
            if downloads_dir is not None:
                shutil.rmtree(downloads_dir, ignore_errors=True)
            if isinstance(exc, ActionError) or not isinstance(exc, Exception):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ActionError(
                "unavailable", f"cannot start or reach a browser: {first}", retryable=True, hint=_UNAVAILABLE_HINT
            ) from None
        span.set_attribute(BROWSER_VERSION, browser.version)
        if remote:
            await _check_remote_flags(browser)
    return Launched(browser, remote, downloads_dir)


async def connect_server(runtime: Runtime, pw: Any, endpoint: str, timeout_s: float) -> Any:
    """Connect to one Playwright server of ``settings.browser.ws_endpoints`` (span ``browser launch``), at most
    ``timeout_s``, and check its browser's flags. Failures are raised as they come (the pool names the server)."""
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with runtime.tracer.start_as_current_span("browser launch") as span:
        browser = await _connect(runtime, pw, endpoint, args, timeout_s)
        span.set_attribute(BROWSER_VERSION, browser.version)
        await _check_remote_flags(browser)
    return browser


async def _connect(runtime: Runtime, pw: Any, endpoint: str, args: list[str], timeout_s: float = 0) -> Any:
    # A Playwright server applies these only when started with --unsafe (or when its browser was
    # pre-launched with them: `playwright launch-server`).
    settings = runtime.settings.browser
    if settings.executable_path:
        _refuse_headless_shell(settings.executable_path, settings.executable_path)  # a path on the server's machine
    options = {
        "args": args,
        "headless": settings.headless,
        **({"executablePath": settings.executable_path} if settings.executable_path else {}),
    }
    headers = {"x-playwright-launch-options": json.dumps(options)}
    if timeout_s > 0:
        return await pw.chromium.connect(endpoint, headers=headers, timeout=timeout_s * 1000)
    return await pw.chromium.connect(endpoint, headers=headers)


async def _check_remote_flags(browser: Any) -> None:
    """A browser we did not launch must run with the flags that keep WebRTC UDP inside the proxy.

    A Playwright server drops client launch args unless started with ``--unsafe``, and a CDP browser has
    whatever its owner gave it: without these flags a page could send UDP around the egress guard. A refused
    browser is closed (disconnected from) before the error is raised.
    """
    flags = ", ".join(_REQUIRED_REMOTE_FLAGS)
    try:
        argv = await _remote_argv(browser)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        problem = f"its command line cannot be read ({first})"
    else:
        missing = [f for f in _REQUIRED_REMOTE_FLAGS if f not in argv]
        if not missing:
            return
        problem = f"it runs without {', '.join(missing)}"
    with contextlib.suppress(Exception):
        await browser.close()
    raise ActionError(
        "unavailable",
        f"the remote browser is refused: {problem}; without these flags WebRTC could send UDP around the egress guard",
        hint=f"Start the browser with {flags} and --enable-automation (which lets us check them); "
        "a Playwright server applies our flags when started with `run-server --unsafe`, or "
        "pre-launch them with `launch-server --config` (args).",
    )


async def _remote_argv(browser: Any) -> list[str]:
    """The remote browser's command line: over CDP when it allows (``--enable-automation``), else from
    chrome://version in a throwaway context whose proxy leads nowhere (it loads nothing from the network)."""
    with contextlib.suppress(Exception):
        cdp = await browser.new_browser_cdp_session()
        try:
            line = await cdp.send("Browser.getBrowserCommandLine")
            return [str(a) for a in line.get("arguments", [])]
        finally:
            with contextlib.suppress(Exception):
                await cdp.detach()
    context = await browser.new_context(proxy={"server": "http://127.0.0.1:9", "bypass": "<-loopback>"}, service_workers="block")
    try:
        page = await context.new_page()
        await page.goto("chrome://version", timeout=15_000)
        text = await page.evaluate("() => (document.querySelector('#command_line') || {}).innerText || ''")
    finally:
        with contextlib.suppress(Exception):
            await context.close()
    if not text:
        raise RuntimeError("chrome://version shows no command line")
    return str(text).split()


def _refuse_headless_shell(configured: str, named: str) -> None:
    """A Chromium headless shell (Debian's ``chromium-headless-shell``, Playwright's ``headless_shell``,
    ``chrome-headless-shell``) ignores ``--webrtc-ip-handling-policy``: a page's WebRTC would send UDP
    straight to any address, around the egress proxy. Told by its file name (``named``: the resolved
    path for a local launch); a renamed copy is not recognised (docs/security.md says so)."""
    if "headless" in os.path.basename(named).lower().replace("_", "-"):
        raise ActionError(
            "unavailable",
            f"settings.browser.executable_path {configured} is a Chromium headless shell, which ignores the "
            "WebRTC flag that keeps a page's UDP inside the egress proxy; it is not launched",
            hint="Set settings.browser.executable_path to a full Chromium (e.g. /usr/bin/chromium) or leave it unset.",
        )


def _executable(pw: Any, configured: str | None) -> str:
    """The local Chromium to launch: the configured one, else Playwright's, else the system's."""
    if configured:
        if not os.path.exists(configured):
            raise ActionError(
                "unavailable", f"settings.browser.executable_path {configured} does not exist", hint=_UNAVAILABLE_HINT
            )
        _refuse_headless_shell(configured, os.path.realpath(configured))
        return configured
    managed = pw.chromium.executable_path  # a Playwright-managed browser, when one is installed
    if managed and os.path.exists(managed):
        return str(managed)
    system = find_chromium(None)
    if system is None:
        raise ActionError(
            "unavailable", "no Chromium was found (no Playwright-managed browser, no system Chromium)", hint=_UNAVAILABLE_HINT
        )
    return system
