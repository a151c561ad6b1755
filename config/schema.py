"""What the declarations say about each key, read off the pydantic models: kinds, flags, defaults.

config.KEYS and the generated reference (config/reference.py) both read the models through
this module, so neither keeps a table of its own. It takes the model as an argument and imports
no other config module.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Key:
    """One stack config key, as Pulumi.yaml documents it."""

    kind: str  # string | integer | number | boolean | array | object
    secret: bool = False
    sandbox_only: bool = False


def extra(info: FieldInfo) -> dict[str, Any]:
    """The flags a declaration carries in json_schema_extra (secret, sandbox_only, config_key)."""
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def keys(model: type[BaseModel]) -> dict[str, Key]:
    """The top-level config keys a model declares, by their stack-file (camelCase) name."""
    table = {}
    for name, info in model.model_fields.items():
        flags = extra(info)
        if flags.get("config_key", True):
            table[info.alias or name] = Key(
                kind(info.annotation),
                secret=bool(flags.get("secret", False)),
                sandbox_only=bool(flags.get("sandbox_only", False)),
            )
    return table


def bare(tp: Any) -> Any:
    """The type without Annotated metadata and without `| None`."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"config keys hold one type (or None), not {tp}")
            tp = args[0]
        else:
            return tp


def kind(tp: Any) -> str:
    """The Pulumi-style kind of a (possibly Annotated or optional) type."""
    tp = bare(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return kind(type(typing.get_args(tp)[0]))
    if origin is list:
        return "array"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "object"
    # bool before int: bool is an int subclass.
    for python, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(tp, type) and issubclass(tp, python):
            return name
    raise TypeError(f"no config kind for {tp}")


def element(tp: Any) -> Any:
    """The item type of a list, the value type of a dict (bare)."""
    tp = bare(tp)
    return bare(typing.get_args(tp)[-1])


def model_of(tp: Any) -> type[BaseModel] | None:
    """The model a field holds, directly or as the items of a list or values of a dict."""
    tp = bare(tp)
    if typing.get_origin(tp) in (list, dict):
        tp = element(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None
