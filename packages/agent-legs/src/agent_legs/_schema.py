"""What a model is shown of an action's input: JSON schemas that survive OpenAI strict mode.

Invariants:

* every input model's JSON schema is *strict-able*: converted with OpenAI's strict rules (every
  object ``additionalProperties: false`` with all its properties required, as
  ``convert_to_openai_tool(strict=True)`` does), nothing is lost. That rules out open maps
  (``dict[str, str]``: strict mode closes them, so a model can only send ``{}``) and untyped values
  (``Any``). Input models use the two types below instead, whose model-facing form is strict-able
  while Python callers keep passing plain values:

  - ``NameValuePairs[V]``: the model sends ``[{"name": ..., "value": ...}, ...]``; Python callers may
    still pass a ``dict``; both validate to ``dict[str, V]`` (a repeated name is an error);
  - ``JsonText``: the model sends JSON *text* (a string, or ``null``); a Python caller may pass
    any JSON value. A string is always read as JSON text: to send the JSON string ``"hi"`` pass
    ``'"hi"'``; invalid JSON text is ``invalid_input`` naming the field.

* ``model_schema(spec, policy)`` narrows enums to what the policy allows (fields annotated with
  ``policy_enum("http.methods")``): the model is not offered what would be denied. Validation is
  unchanged (the executor still enforces the policy); the schema is only what the model sees.

* ``model_schema`` also says length limits in words (``minLength``/``maxLength`` are not accepted
  by strict mode; validation still enforces them) and drops null defaults.

* ``strict_problems(schema)`` lists every way a schema breaks OpenAI's strict rules as documented
  (objects closed with every property required, typed schemas, no composition or length keywords,
  no null defaults); tests run it over every action's converted tool.

Threat model: the model is untrusted. Both forms validate into the same checked Python values,
so nothing reaches an executor that the plain form could not express.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BeforeValidator, TypeAdapter, WithJsonSchema

if TYPE_CHECKING:
    from ._policy import Policy
    from ._registry import ActionSpec

__all__ = [
    "JsonText",
    "PolicyEnum",
    "empty_required_enum",
    "model_schema",
    "name_value_pairs",
    "policy_enum",
    "strict_problems",
]

V = TypeVar("V")


def _pairs_to_dict(value: Any) -> Any:
    if not isinstance(value, list):
        return value  # a dict (Python callers) or something pydantic rejects with its own message
    out: dict[str, Any] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"name", "value"}:
            raise ValueError(f"item {i} must be an object with exactly the keys 'name' and 'value'")
        name = item["name"]
        if not isinstance(name, str):
            raise ValueError(f"item {i}: name must be a string")  # noqa: TRY004  (pydantic reports ValueError, not TypeError)
        if name in out:
            raise ValueError(f"the name {name!r} is given twice")
        out[name] = item["value"]
    return out


def name_value_pairs(value_type: Any, description: str) -> Any:
    """``dict[str, value_type]`` that models send as a list of ``{"name", "value"}`` pairs."""
    value_schema = TypeAdapter(value_type).json_schema()
    pair = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "value": value_schema},
        "required": ["name", "value"],
        "additionalProperties": False,
    }
    schema = {"type": "array", "items": pair, "description": description}
    return Annotated[
        dict[str, value_type],
        BeforeValidator(_pairs_to_dict),  # type: ignore[valid-type]
        WithJsonSchema(schema),
    ]


def _json_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(
                f"not valid JSON text ({exc}); to send plain text use body instead, to send a JSON string quote it"
            ) from None
    return value


JsonText = Annotated[
    Any,
    BeforeValidator(_json_text),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}], "description": 'JSON text, e.g. "{\\"total\\": 12.5}"'}),
]
"""Any JSON value; a string is JSON text (what a model sends in strict mode)."""


@dataclass(frozen=True)
class PolicyEnum:
    """Field metadata: the enum of this field is narrowed to the policy value at ``path``."""

    path: str


def policy_enum(path: str) -> PolicyEnum:
    """Mark an enum field (``Annotated[Literal[...], policy_enum("http.methods")]``) that the policy narrows."""
    return PolicyEnum(path)


def _policy_value(policy: Policy, path: str) -> Any:
    value: Any = policy
    for part in path.split("."):
        value = getattr(value, part)
    return value


# Keywords OpenAI's strict mode does not accept: said in words instead (validation still enforces them).
_IN_WORDS = {
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minProperties": "at least {} entries",
    "maxProperties": "at most {} entries",
}


def _portable(node: Any) -> None:
    if isinstance(node, dict):
        if "default" in node and node["default"] is None:
            del node["default"]  # says nothing a nullable type does not, and strict mode refuses it
        words = [_IN_WORDS[k].format(node.pop(k)) for k in list(node) if k in _IN_WORDS]
        if words:
            node["description"] = (node.get("description", "") + f" ({', '.join(words)})").strip()
        for value in node.values():
            _portable(value)
    elif isinstance(node, list):
        for value in node:
            _portable(value)


def model_schema(spec: ActionSpec, policy: Policy) -> dict[str, Any]:
    """The JSON schema a model is offered for ``spec`` under ``policy`` (enums narrowed; length limits
    in words, null defaults dropped: keywords strict mode refuses)."""
    schema = copy.deepcopy(spec.input_model.model_json_schema())
    _portable(schema)
    for name, info in spec.input_model.model_fields.items():
        for marker in info.metadata:
            prop = schema.get("properties", {}).get(info.alias or name)
            if isinstance(marker, PolicyEnum) and prop is not None and isinstance(prop.get("enum"), list):
                allowed = {str(v) for v in _policy_value(policy, marker.path)}
                prop["enum"] = [v for v in prop["enum"] if str(v) in allowed]
    return schema


def empty_required_enum(schema: dict[str, Any]) -> str | None:
    """The name of a required top-level field whose (narrowed) enum is empty: no valid call exists."""
    for name in schema.get("required", []):
        prop = schema.get("properties", {}).get(name, {})
        if isinstance(prop.get("enum"), list) and not prop["enum"]:
            return str(name)
    return None


_TYPED = ("type", "anyOf", "enum", "const", "$ref")
_UNSUPPORTED = (
    "allOf",
    "oneOf",
    "not",
    "patternProperties",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedProperties",
    "propertyNames",
    *_IN_WORDS,
)


def strict_problems(schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every violation of OpenAI's strict structured-output rules in ``schema`` (empty: fine)."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return [f"{where}: not a schema"]
    if not any(k in schema for k in _TYPED):
        problems.append(f"{where}: untyped schema {json.dumps(schema)[:80]}")
    for key in _UNSUPPORTED:
        if key in schema:
            problems.append(f"{where}: {key!r} is not supported in strict mode")
    if "default" in schema and schema["default"] is None:
        problems.append(f"{where}: a null default is not supported in strict mode")
    types = schema.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types):
        props = schema.get("properties")
        if not isinstance(props, dict):
            problems.append(f"{where}: object without properties (an open map)")
            props = {}
        if schema.get("additionalProperties") is not False:
            problems.append(f"{where}: additionalProperties must be false")
        if sorted(schema.get("required", [])) != sorted(props):
            problems.append(
                f"{where}: every property must be required (missing {sorted(set(props) - set(schema.get('required', [])))})"
            )
        for name, sub in props.items():
            problems += strict_problems(sub, f"{where}.{name}")
    if "items" in schema:
        problems += strict_problems(schema["items"], f"{where}[]")
    for i, sub in enumerate(schema.get("anyOf", [])):
        problems += strict_problems(sub, f"{where}|{i}")
    for name, sub in (schema.get("$defs") or {}).items():
        problems += strict_problems(sub, f"{where}.$defs.{name}")
    return problems
