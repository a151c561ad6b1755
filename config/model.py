"""The typed stack settings: one validated object built from `pgstack:*` config.

Pure: nothing here reads Pulumi config or touches the network, so every rule can be tested
directly. Field names are snake_case in Python and camelCase in the stack files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .aws import Aws

# Postgres identifiers are rendered into SQL and pg_hba unquoted; this pattern is what makes
# that safe (no quoting, no injection, fits NAMEDATALEN).
IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
GENERATION_PATTERN = r"^[a-z][a-z0-9]{0,9}$"
# pgBackRest and systemd values that end up in rendered files: keep them to a safe alphabet.
SIZE_PATTERN = r"^[0-9]+(B|kB|MB|GB|TB|KiB|MiB|GiB|TiB)?$"
CALENDAR_PATTERN = r"^[A-Za-z0-9 ,.:*/~-]{1,80}$"
HOSTNAME_PATTERN = r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$"
GUC_NAME_PATTERN = r"^[a-z_][a-z0-9_.]{0,62}$"
GUC_VALUE_PATTERN = r"^[A-Za-z0-9 _.,:/%+-]{0,200}$"

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]

# Roles pgstack creates itself, or PostgreSQL owns: a stack may not name a role after them.
RESERVED_ROLES = frozenset({"postgres", "replicator", "readonly", "write", "public"})


def _role_name(value: str) -> str:
    if value in RESERVED_ROLES or value.startswith("pg_"):
        raise ValueError(f"role name {value!r} is reserved by pgstack or PostgreSQL; pick another")
    return value


# Checked per field, so the error names the exact key (roles.app.name, roles.humans[0].name).
RoleName = Annotated[str, Field(pattern=IDENTIFIER_PATTERN), AfterValidator(_role_name)]

# Hetzner location -> the network zone its private networks live in.
NETWORK_ZONES = {
    "ash": "us-east",
    "hil": "us-west",
    "fsn1": "eu-central",
    "nbg1": "eu-central",
    "hel1": "eu-central",
    "sin": "ap-southeast",
}


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a valid CIDR ({exc}); write it as network/prefix, e.g. 10.0.1.0/24"
        ) from None
    return str(net)


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address; write it as e.g. 10.0.1.5") from None


Cidr = Annotated[str, AfterValidator(_cidr)]
IPv4 = Annotated[str, AfterValidator(_ipv4)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)


class LoginRole(Model):
    """A role that logs in: its name, how many sessions it may hold, where it may come from."""

    name: RoleName
    connection_limit: int = Field(default=20, ge=1, le=10000)
    # Empty means the private subnet of the stack.
    cidrs: list[Cidr] = []
    # Bump to rotate: a new password is generated and the old one stops working.
    password_version: int = Field(default=1, ge=1, le=100000)


class AppRole(LoginRole):
    # Rails runs its own migrations by default (seed 000): this lets the app act as the owner.
    runs_migrations: bool = False


class HumanRole(Model):
    name: RoleName
    access: Literal["readonly", "write"]
    connection_limit: int = Field(default=5, ge=1, le=100)
    password_version: int = Field(default=1, ge=1, le=100000)


class Roles(Model):
    # Owns the schema and every object in it; nobody logs in as it (seed 001's schema owner).
    owner: RoleName = "schema_owner"
    app: AppRole
    migrator: LoginRole = LoginRole(name="migrator", connection_limit=5)
    reporting: LoginRole = LoginRole(name="reporting", connection_limit=10)
    humans: list[HumanRole] = []
    # Where people connect from (a bastion, a VPN range); empty means the admin CIDRs.
    human_cidrs: list[Cidr] = []

    def logins(self) -> list[LoginRole | HumanRole]:
        return [self.app, self.migrator, self.reporting, *self.humans]

    @model_validator(mode="after")
    def _unique_names(self) -> Roles:
        names = [r.name for r in self.logins()] + [self.owner]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"role name {name!r} is used twice; give every role its own name")
        return self


class Database(Model):
    name: Identifier
    # Sized from the role limits when unset (sum + reserve); when set it must fit them.
    max_connections: int | None = Field(default=None, ge=20, le=10000)
    # Superuser, replication, pgBackRest and maintenance sessions live outside the role limits.
    reserved_connections: int = Field(default=15, ge=5, le=1000)


class Hetzner(Model):
    location: Literal["ash", "hil", "fsn1", "nbg1", "hel1", "sin"]
    server_type: str = Field(pattern=r"^[a-z0-9-]{2,20}$")
    image: str = Field(default="ubuntu-24.04", pattern=r"^[a-z0-9.-]{2,40}$")
    network_cidr: Cidr
    subnet_cidr: Cidr
    network_zone: str | None = None
    # 0 keeps the data on the server's local disk.
    volume_size_gb: int = Field(default=0, ge=0, le=10240)
    labels: dict[str, str] = {}

    @property
    def zone(self) -> str:
        return self.network_zone or NETWORK_ZONES[self.location]

    # Field validators (not one model validator), so an error names the key to edit.
    @field_validator("network_cidr")
    @classmethod
    def _private_network(cls, value: str) -> str:
        net = ipaddress.ip_network(value)
        if not (net.version == 4 and net.is_private):
            raise ValueError(f"networkCidr {net} must be a private IPv4 range such as 10.0.0.0/16")
        return value

    @field_validator("subnet_cidr")
    @classmethod
    def _subnet_inside(cls, value: str, info: ValidationInfo) -> str:
        network = info.data.get("network_cidr")  # absent when networkCidr itself is invalid
        if network is not None:
            net, sub = ipaddress.ip_network(network), ipaddress.ip_network(value)
            if sub.version != net.version or not sub.subnet_of(net):  # type: ignore[arg-type]
                raise ValueError(f"subnetCidr {sub} is not inside networkCidr {net}; pick a subnet of it")
        return value

    @field_validator("volume_size_gb")
    @classmethod
    def _volume_size(cls, value: int) -> int:
        if 0 < value < 10:
            raise ValueError("volumeSizeGb must be 0 (local disk) or at least 10 (Hetzner's minimum)")
        return value


class Restore(Model):
    source: str = Field(alias="from", pattern=GENERATION_PATTERN)
    target_time: str

    @field_validator("target_time")
    @classmethod
    def _target_time(cls, value: str) -> str:
        if value != "latest":
            parse_target_time(value)
        return value

    def target(self) -> dt.datetime | None:
        """The recovery target, or None for `latest` (replay the whole archive)."""
        return None if self.target_time == "latest" else parse_target_time(self.target_time)


def parse_target_time(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"targetTime {value!r} is not an ISO 8601 time; write e.g. 2026-11-20T10:00:00+00:00 or 'latest'"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"targetTime {value!r} has no time zone, so it is ambiguous; add one, e.g. {value}+00:00")
    return parsed


class Cluster(Model):
    """One generation of the database: a primary, its replicas, and where its data comes from."""

    # Hetzner: required (config.rules). AWS: must stay unset, RDS picks its own addresses.
    primary_ip: IPv4 | None = None
    replica_ips: list[IPv4] = []
    # Hetzner delete/rebuild protection. Retiring a generation: set false, up, then remove it.
    delete_protection: bool = True
    restore: Restore | None = None


class Backup(Model):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    endpoint: str = Field(pattern=HOSTNAME_PATTERN)
    region: str = Field(pattern=r"^[a-z0-9-]{2,30}$")
    repo_path: str = Field(default="/pgbackrest", pattern=r"^/[A-Za-z0-9_./-]{0,200}$")
    retention_full_days: int = Field(default=30, ge=1, le=3650)
    # Count-based retention overrides time retention when set (used by tests: time retention
    # counts whole days).
    retention_full_count: int | None = Field(default=None, ge=1, le=100)
    process_max: int = Field(default=4, ge=1, le=32)
    archive_timeout_seconds: int = Field(default=60, ge=10, le=3600)
    archive_push_queue_max: str = Field(default="4GiB", pattern=SIZE_PATTERN)
    # While the store is unreachable, one async push attempt takes about 8x this before it gives
    # up, and the queue bound is only enforced between attempts (see pgbackrest_conf).
    archive_push_io_timeout_seconds: int = Field(default=10, ge=3, le=600)
    full_schedule: str = Field(default="Sun *-*-* 02:00:00", pattern=CALENDAR_PATTERN)
    diff_schedule: str = Field(default="Mon..Sat *-*-* 02:00:00", pattern=CALENDAR_PATTERN)


class Replication(Model):
    max_slot_wal_keep_size: str = Field(default="10GB", pattern=SIZE_PATTERN)


class Dns(Model):
    provider: Literal["hetzner", "route53"]
    zone: str = Field(pattern=r"^[a-z0-9.-]{3,253}$")
    # Route53 hosted zone id; Hetzner zones are looked up by name.
    zone_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]{1,32}$")
    record: str = Field(default="db", pattern=r"^[a-z0-9-]{1,63}$")
    ttl: int = Field(default=60, ge=30, le=86400)

    @model_validator(mode="after")
    def _route53_zone(self) -> Dns:
        if self.provider == "route53" and not self.zone_id:
            raise ValueError("provider route53 needs zoneId (the hosted zone id, e.g. Z0123456789ABC)")
        return self


class SandboxOverrides(Model):
    """Keys only the local rehearsal may set (see sandbox/overlay.py); refused in a real stack."""

    package_source: Literal["pgdg", "distro"] = "pgdg"
    s3_verify_tls: bool = True
    s3_port: int = Field(default=443, ge=1, le=65535)


class Postgres(Model):
    version: int = 15


class Settings(Model):
    """Everything the program needs, validated as a whole."""

    project: str
    stack: str
    target: Literal["hetzner", "aws"]
    clusters: dict[Annotated[str, Field(pattern=GENERATION_PATTERN)], Cluster]
    active: str
    database: Database
    roles: Roles
    hetzner: Hetzner | None = None
    admin_cidrs: list[Cidr] = []
    allow_ssh_from_anywhere: bool = False
    ssh_public_key: str | None = Field(default=None, pattern=r"^ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( [^\n]*)?$")
    postgres: Postgres = Postgres()
    postgresql: dict[
        Annotated[str, Field(pattern=GUC_NAME_PATTERN)], Annotated[str, Field(pattern=GUC_VALUE_PATTERN)]
    ] = {}
    backup: Backup | None = None
    replication: Replication = Replication()
    dns: Dns | None = None
    aws: Aws | None = None
    sandbox: SandboxOverrides = SandboxOverrides()
    # Secrets: values are never logged or rendered; repr hides them.
    ssh_private_key: str | None = Field(default=None, repr=False)
    s3_access_key: str | None = Field(default=None, repr=False)
    s3_secret_key: str | None = Field(default=None, repr=False)
    # Adopt an existing pgBackRest repository: its passphrase. Unset, the stack generates one.
    backup_cipher_passphrase: str | None = Field(default=None, repr=False)
    # target aws: the PagerDuty CloudWatch integration URL (it embeds the integration key).
    pagerduty_endpoint: str | None = Field(default=None, repr=False)

    @property
    def max_connections(self) -> int:
        return self.database.max_connections or self.required_connections

    @property
    def required_connections(self) -> int:
        return sum(r.connection_limit for r in self.roles.logins()) + self.database.reserved_connections

    @property
    def active_cluster(self) -> Cluster:
        return self.clusters[self.active]

    def stanza(self, generation: str) -> str:
        return f"{self.database.name}-{generation}"

    def name(self, generation: str, role: str) -> str:
        """Resource names are {stack}-{cluster}-{role}: stable, so URNs survive edits."""
        return f"{self.stack}-{generation}-{role}"

    def role_cidrs(self, role: LoginRole) -> list[str]:
        return list(role.cidrs) or [self.private_cidr]

    @property
    def private_cidr(self) -> str:
        return self.hetzner.subnet_cidr if self.hetzner else "10.0.0.0/8"

    @property
    def human_cidrs(self) -> list[str]:
        return list(self.roles.human_cidrs) or list(self.admin_cidrs)
