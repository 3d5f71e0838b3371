"""``settings.email``: how the email actions reach their backends (a section of ``Settings``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..._sections import SettingsSection

__all__ = ["EmailSettings", "MailServer"]


class MailServer(SettingsSection):
    host: str
    port: int | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, description="Use {secret:NAME}.")
    timeout_s: float = 30
    ca_file: str | None = Field(None, description="Extra CA bundle to trust (e.g. a private CA).")


class EmailSettings(SettingsSection):
    from_address: str | None = None
    smtp: MailServer | None = None
    imap: MailServer | None = None
