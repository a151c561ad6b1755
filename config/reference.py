"""The `config:` section of Pulumi.yaml, generated from the declarations in model.py and aws.py.

    python -m config.reference            print the regenerated Pulumi.yaml
    python -m config.reference --write    write it
    python -m config.reference --check    exit 1 (with a diff) when the checked-in one differs

Everything above `config:` (name, runtime, the comment) is kept as it is. Each key gets its Pulumi
type (none for objects: Pulumi's project config has no object type), `items` for arrays, `secret`
and a scalar default, and a description: the field's own, then for an object each subfield as
`name (type range, default | required | optional): description`, nested objects in braces.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import NAMESPACE, schema
from .model import Settings

PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"
WIDTH = 100  # of a description line in Pulumi.yaml, indent included
NOTE = (
    "  # Generated from config/model.py and config/aws.py by `python -m config.reference --write`:\n"
    "  # edit the declarations there, not this section.\n"
)
PULUMI_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean", "array": "array"}
PLURALS = {"string": "strings", "integer": "integers", "number": "numbers", "boolean": "booleans", "object": "objects"}


def type_text(tp: Any) -> str:
    """`string`, `gp3|gp2`, `array of strings`, `object of objects`: how a subfield's type reads."""
    tp = schema.bare(tp)
    if typing.get_origin(tp) is Literal:
        return "|".join(str(v) for v in typing.get_args(tp))
    kind = schema.kind(tp)
    if kind in ("array", "object") and typing.get_origin(tp) in (list, dict):
        return f"{kind} of {PLURALS[schema.kind(schema.element(tp))]}"
    return kind


def range_text(info: FieldInfo) -> str:
    """`1..10000`, `>= 20`, `> 0` for numbers; `at least 2` for arrays."""
    bounds = {type(m): m for m in info.metadata}
    low, high = bounds.get(annotated_types.Ge), bounds.get(annotated_types.Le)
    if low is not None and high is not None:
        return f"{low.ge}..{high.le}"
    parts = []
    if low is not None:
        parts.append(f">= {low.ge}")
    if (gt := bounds.get(annotated_types.Gt)) is not None:
        parts.append(f"> {gt.gt}")
    if high is not None:
        parts.append(f"<= {high.le}")
    text = " ".join(parts)
    if (min_len := bounds.get(annotated_types.MinLen)) is not None:
        text = ", ".join(p for p in (text, f"at least {min_len.min_length}") if p)
    return text


def value_text(value: Any) -> str:
    """A default as the stack file would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return f"'{value}'" if not value or " " in value else value
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_defaults=True)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def presence_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if default is None:
        return "optional"
    if isinstance(default, BaseModel) and not default.model_dump(exclude_defaults=True):
        return ""  # all its subfields' own defaults, which they list
    return f"default {value_text(default)}"


def signature(info: FieldInfo) -> str:
    head = " ".join(p for p in (type_text(info.annotation), range_text(info)) if p)
    return ", ".join(p for p in (head, presence_text(info)) if p)


class Describer:
    """Renders one top-level key's subfields; a model met again is referred to, not repeated."""

    def __init__(self) -> None:
        self.expanded: dict[type[BaseModel], str] = {}

    def fields(self, model: type[BaseModel], path: str = "") -> str:
        self.expanded.setdefault(model, path)
        return "; ".join(self.field(name, info, path) for name, info in model.model_fields.items())

    def field(self, name: str, info: FieldInfo, path: str) -> str:
        alias = info.alias or name
        text = f"{alias} ({signature(info)})"
        if info.description:
            if ";" in info.description:
                # `;` separates the subfields: inside a description it would read as the next one.
                raise ValueError(f"{path}.{alias}: a subfield's description may not hold `;`")
            text += f": {info.description}"
        model = schema.model_of(info.annotation)
        if model is not None:
            text += " " + self.subfields(model, f"{path}.{alias}" if path else alias)
        return text

    def subfields(self, model: type[BaseModel], path: str) -> str:
        for seen, where in self.expanded.items():
            if issubclass(seen, model):
                extra = [f.alias or n for n, f in seen.model_fields.items() if n not in model.model_fields]
                without = f", without {', '.join(extra)}" if extra else ""
                return f"{{fields as {where}{without}}}"
        return "{" + self.fields(model, path) + "}"


def description(info: FieldInfo) -> str:
    parts = []
    flags = schema.extra(info)
    if flags.get("secret"):
        parts.append("Secret.")
    if info.is_required():
        parts.append("Required.")
    if info.description:
        parts.append(info.description)
    tp = schema.bare(info.annotation)
    if typing.get_origin(tp) is Literal:
        parts.append(f"One of: {', '.join(str(v) for v in typing.get_args(tp))}.")
    model = schema.model_of(tp)
    if model is not None:
        each = "Each: " if typing.get_origin(tp) in (list, dict) else ""
        parts.append(each + Describer().fields(model) + ".")
    return " ".join(parts)


def entry(key: str, spec: schema.Key, info: FieldInfo) -> list[str]:
    lines = [f"  {NAMESPACE}:{key}:"]
    if spec.kind in PULUMI_TYPES:
        lines.append(f"    type: {PULUMI_TYPES[spec.kind]}")
    if spec.kind == "array":
        lines += ["    items:", f"      type: {PULUMI_TYPES[schema.kind(schema.element(info.annotation))]}"]
    if spec.secret:
        lines.append("    secret: true")
    default = None if info.is_required() else info.default
    if spec.kind in ("string", "integer", "number", "boolean") and default is not None:
        lines.append(f"    default: {json.dumps(default)}")
    text = description(info)
    if "  " in text or text != text.strip():
        raise ValueError(f"{key}: a description folds its white space; write single spaces")  # YAML `>-` would
    lines.append("    description: >-")
    lines += textwrap.wrap(text, width=WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False)
    return lines


def section(model: type[BaseModel] = Settings) -> str:
    """The `config:` section, from `config:` to the end of the file."""
    keys = schema.keys(model)
    lines = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in keys:
            lines += entry(key, keys[key], info)
    return "config:\n" + NOTE + "\n".join(lines) + "\n"


def project_file(current: str, model: type[BaseModel] = Settings) -> str:
    """Pulumi.yaml with its `config:` section regenerated; `config:` must be its last section."""
    head, marker, _ = current.partition("\nconfig:\n")
    if not marker:
        raise ValueError("Pulumi.yaml has no top-level `config:` section")
    text = head + "\n" + section(model)
    _check_round_trip(text, model)
    return text


def _check_round_trip(text: str, model: type[BaseModel]) -> None:
    """What YAML reads back is what was meant: the wrapping folded away, nothing lost to quoting."""
    loaded = yaml.safe_load(text)["config"]
    keys = schema.keys(model)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in keys and loaded[f"{NAMESPACE}:{key}"]["description"] != description(info):
            raise ValueError(f"{key}: the description does not read back from YAML as written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.reference", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the regenerated file")
    mode.add_argument("--check", action="store_true", help="exit 1 when the file differs from the generated one")
    parser.add_argument("--file", type=Path, default=PROJECT_FILE, help="the project file (default: Pulumi.yaml)")
    args = parser.parse_args(argv)
    current = args.file.read_text()
    generated = project_file(current)
    if args.write:
        if generated != current:
            args.file.write_text(generated)
        return 0
    if args.check:
        if generated == current:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True), generated.splitlines(keepends=True), str(args.file), "generated"
        )
        sys.stdout.writelines(diff)
        print(f"{args.file} is out of date: run `python -m config.reference --write`", file=sys.stderr)
        return 1
    sys.stdout.write(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
