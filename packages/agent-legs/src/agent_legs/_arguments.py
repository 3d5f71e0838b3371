"""Arguments of an action call and of ``Legs``: coercion of config values, validation against an
action's input model, and the scrubbing of text fields for approvers.

Invariants: a call's arguments are validated against the action's own input model before the policy
sees them (``validate``); text that is not valid Unicode (a lone surrogate) is refused up front,
naming the field, so it cannot fail deep inside an action after side effects began; an approver's
edit goes through the same validation (``validate_edit``). Nothing here has effects.

Threat model: the model writes the arguments (a prompt injection may write anything): every problem
is an ``invalid_input`` error naming the field and the expected fields, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ._errors import ActionError, ConfigError
from ._models import ApprovalDecision
from ._registry import ActionSpec
from ._secrets import Redactor
from ._settings import describe_validation_error

__all__ = ["argument_names", "coerce_config", "not_unicode", "plain", "scrubbed_args", "validate", "validate_edit"]


def coerce_config(value: Any, cls: type[Any], origin: Any = None) -> Any:
    name = cls.__name__.lower()
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls.model_validate(dict(value))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, name, [(dict(value), origin)])) from None
    raise ConfigError(f"{name}: expected {cls.__name__} or a dict, got {type(value).__name__}")


def argument_names(spec: ActionSpec) -> set[str]:
    """The names an action's arguments go by (field names and aliases)."""
    names = set()
    for name, info in spec.input_model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names


def plain(raw: Any) -> Any:
    if type(raw) is dict:  # the common case, without the ABC checks below
        return dict(raw)
    if isinstance(raw, BaseModel):
        return raw.model_dump(mode="json")
    if isinstance(raw, Mapping):
        return dict(raw)
    return raw


def validate(spec: ActionSpec, raw: Mapping[str, Any] | BaseModel | None) -> BaseModel:
    model = spec.input_model
    if type(raw) is dict:  # the common case, without the ABC checks below
        pass
    elif isinstance(raw, model):
        return raw
    elif isinstance(raw, BaseModel):
        raw = raw.model_dump()
    bad = not_unicode(raw)
    if bad is not None:
        raise ActionError(
            "invalid_input",
            f"invalid arguments for {spec.tool_name}: {bad or 'arguments'}: text with a lone surrogate is not valid Unicode",
            hint="Send the text as valid UTF-8 (no \\udXXX escapes).",
        )
    try:
        validated: BaseModel = model.__pydantic_validator__.validate_python(raw if raw is not None else {})  # model_validate
        return validated
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ActionError(
            "invalid_input",
            f"invalid arguments for {spec.tool_name}: {problems}",
            hint=f"Expected fields: {', '.join(model.model_fields or model.model_json_schema().get('properties', {}))}",
        ) from None


def validate_edit(spec: ActionSpec, answer: ApprovalDecision) -> BaseModel:
    try:
        return validate(spec, answer.args)
    except ActionError as exc:
        raise ActionError(
            "invalid_input",
            f"the approver's edited arguments are invalid: {exc.message}",
            hint="The edit was refused and nothing ran; ask the user again.",
        ) from None


def scrubbed_args(args: BaseModel, redactor: Redactor) -> BaseModel:
    """``args`` with its text fields (strings, lists of strings) scrubbed of secrets.

    For summaries that cut long fields (an approver sees the first lines of an email): built from
    scrubbed text, a cut cannot split a secret. Other fields keep their types.
    """
    update = {}
    for name, value in args:
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            scrubbed = redactor.data(value)
            if scrubbed != value:
                update[name] = scrubbed
    return args.model_copy(update=update) if update else args


def not_unicode(value: Any, where: str = "") -> str | None:
    """The field path of the first string that cannot be UTF-8 (a lone surrogate), else ``None``.

    Such text would fail deep inside an action (a file write, an SMTP message, a span export) after
    side effects may have begun; refused up front, it changes nothing.
    """
    items: Any
    if type(value) is dict:  # the common case (every call's arguments), without the ABC check below
        items = value.items()
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    elif isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if type(item) is str and type(key) is not str:  # the common flat case, without building a path
            if item.isascii():
                continue
        elif type(item) is str and key.isascii() and item.isascii():
            continue
        path = f"{where}.{key}" if where else str(key)
        found = not_unicode(key, path) if isinstance(key, str) else None
        if found is None:
            found = not_unicode(item, path)
        if found is not None:
            return found
    return None
