"""The only reader of Pulumi config: builds one validated Settings object.

`load_settings()` is what `__main__.py` calls. `settings_from_mapping()` is the pure core the
tests and the sandbox use with a plain dict of `pgstack:*` values.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pulumi
from pydantic import ValidationError

from . import rules, schema
from .errors import ConfigError
from .fields import PATTERN_HINTS, SUPPORTED_POSTGRES_VERSIONS
from .model import Settings
from .schema import Key

__all__ = [
    "KEYS",
    "NAMESPACE",
    "SUPPORTED_POSTGRES_VERSIONS",
    "ConfigError",
    "Settings",
    "load_settings",
    "settings_from_mapping",
]

NAMESPACE = "pgstack"


# What may appear in a stack file, derived from the Settings fields (config/schema.py), so a key is
# declared once. A test checks that Pulumi.yaml documents exactly these keys with these types.
KEYS: dict[str, Key] = schema.keys(Settings)


def load_settings(now: dt.datetime | None = None, allow_sandbox: bool = False) -> Settings:
    """Read every `pgstack:*` key of the running stack and validate them as one object.

    Pure validation: the checks that read the world (the bucket, RDS) run in components.preflight.
    """
    raw = {k: v for k, v in _all_config().items() if k.startswith(f"{NAMESPACE}:")}
    return settings_from_mapping(
        raw,
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        now=now or dt.datetime.now(dt.UTC),
        allow_sandbox=allow_sandbox,
    )


def _all_config() -> dict[str, Any]:
    from pulumi.runtime import config as runtime_config

    merged = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    return merged


def settings_from_mapping(
    raw: dict[str, Any],
    project: str,
    stack: str,
    now: dt.datetime | None = None,
    allow_sandbox: bool = False,
) -> Settings:
    """Validate `pgstack:*` values: each key, then the cross-field rules."""
    values: dict[str, Any] = {}
    for full_key, value in raw.items():
        ns, _, key = full_key.partition(":")
        if ns != NAMESPACE:
            continue
        spec = KEYS.get(key)
        if spec is None:
            raise ConfigError(
                key,
                "unknown key; check its spelling against Pulumi.yaml "
                f"(known: {', '.join(sorted(k for k, s in KEYS.items() if not s.sandbox_only))})",
            )
        if spec.sandbox_only and not allow_sandbox:
            raise ConfigError(
                key, "only the local rehearsal (python -m sandbox) may set this key; remove it from the stack file"
            )
        values[key] = _decode(key, spec, value)
    try:
        settings = Settings.model_validate({**values, "project": project, "stack": stack})
    except ValidationError as exc:
        raise _config_error(exc) from None
    now = now or dt.datetime.now(dt.UTC)
    rules.check(settings, now)
    return settings


def _decode(key: str, spec: Key, value: Any) -> Any:
    """Pulumi hands structured config to programs as JSON text."""
    if spec.kind in ("object", "array") and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                key, f"is not valid structured config ({exc.msg}); write it as YAML {spec.kind}"
            ) from None
    if spec.kind == "boolean" and isinstance(value, str):
        if value not in ("true", "false"):
            raise ConfigError(key, f"{value!r} is not a boolean; write true or false")
        value = value == "true"
    if spec.kind == "object" and not isinstance(value, dict):
        raise ConfigError(key, "must be an object (a YAML mapping)")
    if spec.kind == "array" and not isinstance(value, list):
        raise ConfigError(key, "must be an array (a YAML list)")
    return value


def _config_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc).replace(".[", "[") if loc else "(stack)"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    hint = ""
    pattern = (err.get("ctx") or {}).get("pattern")
    if pattern in PATTERN_HINTS:
        hint = f"; {PATTERN_HINTS[pattern]}"
        msg = "value not allowed"
    elif err["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against the config reference in Pulumi.yaml"
    elif err["type"] == "missing":
        msg = "is required; add it to the stack file (see Pulumi.yaml for its meaning)"
    shown = err.get("input")
    if err["type"] not in ("missing",) and isinstance(shown, (str, int, float, bool)):
        msg = f"{shown!r}: {msg}"
    return ConfigError(key, msg + hint)
