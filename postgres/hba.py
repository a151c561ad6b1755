"""pg_hba.conf from a small rule model: a list of typed rules rendered in order.

PostgreSQL uses the first matching line, and a connection that matches none is refused with
"no pg_hba.conf entry" (SQLSTATE 28000). So the rules list only what is allowed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

ANYWHERE = {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}


@dataclass(frozen=True)
class HbaRule:
    type: Literal["local", "host", "hostssl"]
    database: str
    user: str
    address: str | None
    method: Literal["peer", "scram-sha-256", "reject"]
    comment: str

    def __post_init__(self) -> None:
        if (self.type == "local") != (self.address is None):
            raise ValueError(f"{self}: local rules take no address, network rules need one")
        if self.address is not None and self.method != "reject":
            net = ipaddress.ip_network(self.address, strict=True)
            if net in ANYWHERE:
                raise ValueError(f"{self}: a rule may not allow connections from anywhere")

    def render(self) -> str:
        cols = [self.type, self.database, self.user] + ([self.address] if self.address else []) + [self.method]
        widths = [8, 16, 16, 20, 0] if self.address else [8, 16, 16, 0]
        line = "".join(c.ljust(w) if w else c for c, w in zip(cols, widths, strict=True))
        return f"# {self.comment}\n{line}"


def render(rules: list[HbaRule]) -> str:
    header = "# Rendered by pgstack: edits are overwritten on the next `pulumi up`.\n"
    return header + "\n".join(rule.render() for rule in rules) + "\n"


def base_rules() -> list[HbaRule]:
    """Local administration: the postgres OS user by peer, everyone else with a password."""
    return [
        HbaRule("local", "all", "postgres", None, "peer", "administration by the postgres OS user"),
        HbaRule("local", "all", "all", None, "scram-sha-256", "local sockets need a password"),
        HbaRule("host", "all", "all", "127.0.0.1/32", "scram-sha-256", "loopback TCP needs a password"),
    ]
