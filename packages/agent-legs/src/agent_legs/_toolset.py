"""What the framework adapters offer a model, decided once in the core (the adapters stay thin).

* ``offered_actions(legs, include, exclude, only)``: the actions a model is given. An action is
  offered when the policy can allow it (``allow`` or ``require_approval``, and not a ``files``
  action that changes the workspace under ``policy.files.read_only``: a call that can only be
  denied is noise that costs tokens and invites retries), its family's extra is installed
  (``agent_legs._extras``), its backend is configured
  (``ActionSpec.requires``, e.g. ``email.send`` needs ``settings.email.smtp``) and its schema
  admits a call (an enum that the policy narrows to nothing, such as ``policy.http.methods = []``).
  A selection entry that can match no registered action (``"file.*"``), or that selects only
  actions not offered, is a ``ConfigError`` naming it and saying why; so is an empty result. A
  typo must never turn silently into "the agent has no tools".
* ``tool_schema(legs, spec)``: the model-facing JSON schema (strict-able, enums narrowed to the
  policy: see ``_schema``).
* ``result_content(legs, result, images=True)``: what the model sees of a result, as parts: the
  text output, then the image artifacts (screenshots, figures) as images, each downscaled to at
  most ``MAX_IMAGE_SIDE`` pixels a side and ``MAX_IMAGE_BYTES`` encoded, at most ``MAX_IMAGES``
  per result. ``images=False`` (models without vision) gives the text only, which names the files.

Threat model: image artifacts are files that actions wrote, possibly under the control of
model-written code (``code.run``). They are read through ``Workspace`` (no symlink escapes, no
state directory, denied globs refused), capped at ``MAX_IMAGE_FILE_BYTES`` before decoding, and
their declared dimensions are checked before any pixel is decoded (no decompression bombs). An
image that cannot be read or decoded is left out with a note in the text, never an exception.
"""

from __future__ import annotations

import base64
import copy
import io
import logging
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import BaseModel

from ._errors import ConfigError
from ._extras import FAMILY_EXTRAS, install_hint, unavailable_error
from ._matching import name_matches
from ._policy import PolicyEngine, unmatched_names
from ._schema import empty_required_enum, model_schema

if TYPE_CHECKING:
    from ._legs import Legs
    from ._models import ActionResult
    from ._registry import ActionSpec

__all__ = [
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "ContentPart",
    "offered_actions",
    "result_content",
    "tool_model",
    "tool_schema",
]

log = logging.getLogger("agent_legs")

MAX_IMAGES = 4
MAX_IMAGE_SIDE = 1568  # pixels: what vision models resize to anyway (Anthropic's guidance; OpenAI tiles at 2048)
MAX_IMAGE_BYTES = 1_000_000  # encoded bytes per image sent to the model
MAX_IMAGE_FILE_BYTES = 30_000_000  # bigger files are not even read
MAX_IMAGE_PIXELS = 50_000_000  # declared width x height above this is not decoded
_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


class ContentPart(TypedDict, total=False):
    """LangChain's standard content block shape: ``{"type": "text", "text"}`` or
    ``{"type": "image", "base64", "mime_type"}``."""

    type: Literal["text", "image"]
    text: str
    base64: str
    mime_type: str


# -- which actions ----------------------------------------------------------------------------------
def _not_offered(legs: Legs, engine: PolicyEngine, spec: ActionSpec) -> str | None:
    decision = engine.decide(spec.name)
    if decision.kind == "deny":
        return f"denied by {decision.rule}"
    if spec.family == "files" and not spec.read_only and legs.policy.files.read_only:
        return "denied by policy.files.read_only"  # every change to the workspace is refused
    not_installed = unavailable_error(spec.family)
    if not_installed is not None:
        return f"not installed: {install_hint(FAMILY_EXTRAS[spec.family])}"
    missing = spec.missing_settings(legs.settings)
    if missing:
        return f"not configured: {', '.join(missing)} unset"
    field = empty_required_enum(model_schema(spec, legs.policy))
    if field is not None:
        return f"the policy allows no value of {field!r}"
    return None


def _hit(spec: ActionSpec, pattern: str) -> bool:
    return name_matches(pattern, spec.name, spec.tool_name)


def offered_actions(
    legs: Legs,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    only: list[str] | None = None,
    *,
    where: str = "include",
) -> list[ActionSpec]:
    """The actions to offer a model: selected, allowed by the policy, configured.

    ``include``/``exclude``/``only`` take action names, tool names or globs (``"files.*"``); ``only``
    narrows further (LlamaIndex's ``spec_functions``). Raises ``ConfigError`` naming every entry that
    matches no action or selects only actions that are not offered, and when nothing is offered.
    """
    specs = legs.actions
    names = [s.name for s in specs]
    engine = PolicyEngine(legs.policy)
    reasons = {s.name: _not_offered(legs, engine, s) for s in specs}
    problems: list[str] = []
    for key, patterns in ((where, include), ("exclude", exclude), ("spec_functions", only)):
        for pattern in patterns or []:
            matched = [s for s in specs if _hit(s, pattern)]
            if not matched:
                problems += unmatched_names([pattern], names, key)
            elif key != "exclude" and all(reasons[s.name] for s in matched):
                why = "; ".join(f"{s.name}: {reasons[s.name]}" for s in matched)
                problems.append(f"{key} entry {pattern!r} selects only actions that are not offered ({why})")
    if problems:
        raise ConfigError("; ".join(problems))
    chosen = [
        s
        for s in specs
        if (include is None or any(_hit(s, p) for p in include))
        and not any(_hit(s, p) for p in exclude or [])
        and (only is None or any(_hit(s, p) for p in only))
    ]
    offered = [s for s in chosen if reasons[s.name] is None]
    if not offered:
        why = "; ".join(f"{s.name}: {reasons[s.name]}" for s in chosen) or "the selection is empty"
        raise ConfigError(f"no action can be offered to the model ({why})")
    return offered


def tool_schema(legs: Legs, spec: ActionSpec) -> dict[str, Any]:
    """The JSON schema a model is given for ``spec`` under ``legs.policy``."""
    return model_schema(spec, legs.policy)


def tool_model(legs: Legs, spec: ActionSpec) -> type[BaseModel]:
    """A subclass of the input model (same validation) whose JSON schema is ``tool_schema``: for
    frameworks that take the schema as a pydantic class (LlamaIndex's ``fn_schema``)."""
    schema = tool_schema(legs, spec)

    def model_json_schema(cls: type[BaseModel], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return copy.deepcopy(schema)

    return type(
        spec.input_model.__name__,
        (spec.input_model,),
        {
            "__module__": spec.input_model.__module__,
            "__doc__": spec.input_model.__doc__,
            "model_json_schema": classmethod(model_json_schema),
        },
    )


# -- what the model sees of a result ------------------------------------------------------------------
def result_content(legs: Legs, result: ActionResult, *, images: bool = True) -> list[ContentPart]:
    """The text output, then (with ``images``) up to ``MAX_IMAGES`` bounded image artifacts."""
    text = result.output or "(no output)"
    parts: list[ContentPart] = []
    notes: list[str] = []
    if images and result.ok:
        for artifact in [a for a in result.artifacts if a.mime_type in _IMAGE_TYPES][:MAX_IMAGES]:
            try:
                data, mime = _bounded_image(legs, artifact.path)
            except Exception as exc:
                log.info("image artifact %s not shown: %s", artifact.path, exc)
                notes.append(f"[image {artifact.path} not shown: {exc}]")
                continue
            parts.append({"type": "image", "base64": base64.b64encode(data).decode(), "mime_type": mime})
    if notes:
        text = text + "\n" + "\n".join(notes)
    return [{"type": "text", "text": text}, *parts]


def _bounded_image(legs: Legs, path: str) -> tuple[bytes, str]:
    from .actions.files._workspace import Workspace

    raw = Workspace(legs.workspace, legs.policy.files, legs.state_dir).read_bytes(path, max_bytes=MAX_IMAGE_FILE_BYTES)
    try:
        from PIL import Image
    except ImportError:
        if len(raw) > MAX_IMAGE_BYTES:
            raise ValueError(f"{len(raw)} bytes, over {MAX_IMAGE_BYTES}; pip install pillow to downscale it") from None
        return raw, _sniff(raw)
    with Image.open(io.BytesIO(raw)) as im:  # reads the header only
        width, height = im.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{width}x{height} pixels is too large to decode")
        if max(width, height) <= MAX_IMAGE_SIDE and len(raw) <= MAX_IMAGE_BYTES and im.format in ("PNG", "JPEG"):
            return raw, f"image/{im.format.lower()}"
        im.load()
        frame = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    frame.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    out = io.BytesIO()
    frame.save(out, format="PNG", optimize=True)
    if out.tell() <= MAX_IMAGE_BYTES:
        return out.getvalue(), "image/png"
    for quality in (85, 70, 50):  # photographs: JPEG is far smaller than PNG
        out = io.BytesIO()
        frame.convert("RGB").save(out, format="JPEG", quality=quality)
        if out.tell() <= MAX_IMAGE_BYTES:
            return out.getvalue(), "image/jpeg"
    raise ValueError(f"still over {MAX_IMAGE_BYTES} bytes after downscaling")


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"GIF8"):
        return "image/gif"
    if data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("not a PNG, JPEG, GIF or WebP image")
