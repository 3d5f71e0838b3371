"""The http family's input model: what the model may ask ``http.request`` to send.

Invariants: unknown fields are refused (``extra="forbid"``); the method is upper-cased before it is
checked against the enum (and ``policy.http.methods`` in the handler); at most one body (``json`` or
``body``). Header names and values are checked by the handler (token names, no CR/LF/NUL, no
client-managed headers), query values are scalars.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..._schema import JsonText, name_value_pairs, policy_enum

__all__ = ["RequestInput"]


class RequestInput(BaseModel):
    # "json" is the contract's (model-facing) field name; the attribute is json_body, so that it does not
    # shadow BaseModel.json. Dumps use the alias: logs, approvals and spans show "json".
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)

    method: Annotated[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], policy_enum("http.methods")] = Field(
        description="HTTP method."
    )
    url: str = Field(description="Absolute http(s) URL.")
    headers: name_value_pairs(  # type: ignore[valid-type]
        str,
        'Extra request headers as name/value pairs, e.g. [{"name": "Accept", "value": '
        '"text/csv"}] (no credentials needed: configured credentials are added for their '
        "hosts).",
    ) = Field(default_factory=dict)
    params: name_value_pairs(  # type: ignore[valid-type]
        str | int | float | bool,
        'Query parameters added to the URL, as name/value pairs, e.g. [{"name": "page", "value": 2}].',
    ) = Field(default_factory=dict)
    json_body: JsonText = Field(
        None, alias="json", description='JSON request body written as JSON text, e.g. "{"total": 12.5}" (instead of body).'
    )
    body: str | None = Field(None, description="Raw text request body (instead of json).")
    timeout_s: float | None = Field(None, gt=0, description="Timeout in seconds (capped by the policy).")

    @model_validator(mode="before")
    @classmethod
    def _upper_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            data = {**data, "method": data["method"].upper()}
        return data

    @model_validator(mode="after")
    def _one_body(self) -> RequestInput:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        return self
