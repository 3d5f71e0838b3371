"""The browser actions' input models: what the model may pass, and nothing else (``extra="forbid"``).

Invariants: every field is described for the model (the descriptions are the tools' argument docs);
unknown fields are refused (``invalid_input``) before a handler runs. URLs, selectors and paths are
checked by the handlers (scheme and egress rules, CSS validity, workspace rules), not here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ClickInput", "ContentInput", "FillInput", "NavigateInput", "NoInput", "ScreenshotInput"]


class NavigateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="Absolute http(s) URL to open in this session's tab.")


class ContentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str | None = Field(
        None, description="CSS selector to read only that element (default: the page's main content, or the whole body)."
    )
    format: Literal["markdown", "text", "html"] = Field(
        "markdown", description="'markdown' (readable, with links and form fields), 'text' (visible text) or 'html'."
    )
    offset: int = Field(
        0, ge=0, description="Character offset to continue a long page (the previous result says which offset to pass)."
    )


class ClickInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str | None = Field(None, description="CSS selector of the element to click.")
    text: str | None = Field(None, description="Visible text of the element to click (used when no selector).")


class FillInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str = Field(description="CSS selector of the field (the page's form fields are listed with it).")
    value: str = Field(description="Text to type; for a file input, a workspace file path (several: one per line).")
    submit: bool = Field(False, description="Submit the form afterwards (presses Enter) and return the result page.")


class ScreenshotInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full_page: bool = Field(False, description="Capture the whole scrollable page instead of the viewport.")


class NoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
