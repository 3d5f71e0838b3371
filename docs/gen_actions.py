"""Writes docs/actions.md from the action registry; checks the policy and settings references are complete.

Run by `nox -s docs` before `mkdocs build --strict`; exits non-zero when the policy reference
misses a field of ``agent_legs.Policy`` or docs/deployment.md one of ``agent_legs.Settings`` (so a
new field cannot ship undocumented).
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent_legs import Policy, Settings
from agent_legs._registry import REGISTRY

HERE = Path(__file__).parent
FAMILIES = {
    "files": "Files in the workspace: every path is confined to it (no `..`, no symlinks out, deny globs), "
    "writes are atomic, deletes go to a trash in the state directory.",
    "http": "HTTP requests through the egress guard: scheme, host rules, and the resolved address are "
    "checked for every request and redirect; credentials are injected per host from secrets.",
    "browser": "A Chromium tab per session (Playwright) behind its own filtering proxy: every navigation and "
    "sub-request is checked by the egress guard. Pages come back as markdown.",
    "code": "A stateful Python (or bash) kernel per session in a Docker container: no network, non-root, "
    "read-only root filesystem, limits; the workspace is mounted at `/workspace`.",
    "email": "Send through SMTP (recipient allow-list, approval by default, never twice) and read through "
    "IMAP (content marked untrusted).",
}


def _type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " or ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop:
        kinds = [_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds) or "any"
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items') or {})}"
    if kind == "object":
        return "object"
    return str(kind) if kind else "any (JSON)"


def _default_policy_decision(name: str) -> str:
    policy = Policy()
    for label, patterns in (("denied", policy.deny), ("needs approval", policy.require_approval), ("allowed", policy.allow)):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return label
    return "not allowed (add it to `policy.allow`)"


def render() -> str:
    lines = [
        "# Actions",
        "",
        "Generated from the action registry (`docs/gen_actions.py`): these names, descriptions and",
        "arguments are exactly what the model sees. The tool name is the action name with `.` replaced",
        "by `_`. Every action returns an `ActionResult`; failures carry an error type (`invalid_input`,",
        "`denied`, `approval_denied`, `budget_exceeded`, `timeout`, `not_found`, `unavailable`, `failed`),",
        'a message and a hint. "Default policy" is what `Policy()` decides; see [Policy](policy.md).',
        "",
    ]
    specs = sorted(REGISTRY, key=lambda s: (list(FAMILIES).index(s.family) if s.family in FAMILIES else 99, s.name))
    family = None
    for spec in specs:
        if spec.family != family:
            family = spec.family
            lines += [f"## {family}", "", FAMILIES.get(family, ""), ""]
        flags = ["read-only" if spec.read_only else "has effects", f"default policy: {_default_policy_decision(spec.name)}"]
        lines += [
            f"### `{spec.name}`",
            "",
            f"Tool `{spec.tool_name}` · " + " · ".join(flags),
            "",
            " ".join(spec.description.split()),
            "",
        ]
        schema = spec.input_model.model_json_schema()
        props = schema.get("properties", {})
        if not props:
            lines += ["No arguments.", ""]
            continue
        lines += ["| argument | type | default | description |", "|---|---|---|---|"]
        required = set(schema.get("required", []))
        for name, prop in props.items():
            default = "required" if name in required else f"`{prop.get('default')!r}`"
            cells = [f"`{name}`", _type(prop), default, " ".join((prop.get("description") or "").split())]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def policy_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every field: ``allow``, ``files.read_only``, ``budgets[].limit``..."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        items = getattr(annotation, "__args__", ())
        if nested is not None:
            out += policy_fields(nested, path + ".")
        elif items and isinstance(items[0], type) and issubclass(items[0], BaseModel):
            out += policy_fields(items[0], path + "[].")
        else:
            out.append(path)
    return out


def main() -> int:
    (HERE / "actions.md").write_text(render(), encoding="utf-8")
    failed = False
    for page, fields in (("policy.md", policy_fields(Policy)), ("deployment.md", policy_fields(Settings))):
        text = (HERE / page).read_text(encoding="utf-8")
        missing = [f for f in fields if f"`{f}`" not in text and f"`{f.rsplit('.', 1)[-1]}`" not in text]
        if missing:
            print(f"docs/{page} does not document these fields: {', '.join(missing)}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
