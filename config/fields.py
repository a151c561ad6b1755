"""The building blocks every config model shares: the base class, patterns with their hints, CIDRs.

The bottom layer of config (it imports nothing else from it), so aws.py and model.py can both use
it without importing each other: fields <- aws <- model <- rules <- config.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from postgres.layout import SUPPORTED_VERSIONS

# The PostgreSQL major versions pgstack can run (pgstack:postgres.version): the rows of the
# domain's layout table, so adding a version there is what makes config accept it.
SUPPORTED_POSTGRES_VERSIONS: tuple[int, ...] = SUPPORTED_VERSIONS
DEFAULT_POSTGRES_VERSION = 15


class Model(BaseModel):
    """Stack file keys are camelCase, Python names snake_case; an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)


# Regex -> how to fix a value that does not match it. A validation error shows this instead of the
# regex. Filled by `pattern()`, so a hint is declared next to its regex and nowhere else.
PATTERN_HINTS: dict[str, str] = {}


def pattern(regex: str, hint: str | None = None) -> Any:
    """The constraint for `Annotated[str, pattern(...)]`, and the hint shown when a value misses it.

    Without a hint the error shows pydantic's own message (the regex).
    """
    if hint is not None:
        known = PATTERN_HINTS.setdefault(regex, hint)
        if known != hint:
            # Errors only carry the regex: two hints for one regex could not be told apart.
            raise ValueError(f"pattern {regex!r} already has another hint: {known!r}")
    return Field(pattern=regex)


def secret(description: str) -> Any:
    """An optional secret key: never in repr, marked secret in KEYS and Pulumi.yaml."""
    return Field(default=None, repr=False, description=description, json_schema_extra={"secret": True})


def parse_cidr(value: str, example: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR ({exc}); write it as network/prefix, e.g. {example}") from None


def parse_ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address; write it as e.g. 10.0.1.5") from None


def versions_text(versions: tuple[int, ...] = SUPPORTED_POSTGRES_VERSIONS) -> str:
    """'15', '15 and 16', '14, 15 and 16': for messages and descriptions."""
    names = [str(v) for v in versions]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


# systemd OnCalendar values end up in rendered unit files: keep them to a safe alphabet.
CALENDAR_PATTERN = r"^[A-Za-z0-9 ,.:*/~-]{1,80}$"
Calendar = Annotated[
    str, pattern(CALENDAR_PATTERN, "write a systemd OnCalendar expression such as 'Sun *-*-* 02:00:00'")
]
