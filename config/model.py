"""The typed stack settings: one validated object built from `pgstack:*` config.

Pure: nothing here reads Pulumi config or touches the network, so every rule can be tested
directly. Field names are snake_case in Python and camelCase in the stack files.

Every key is declared once, here and in aws.py: its type, default, range and description. The key
table (config.KEYS), the error hints and the reference in Pulumi.yaml (`python -m
config.reference --write`) are derived from these declarations. Descriptions are fragments the
reference joins into sentences, except those of the top-level keys (Settings), which are prose.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from .aws import PROTECTED_PARAMETERS, Aws
from .data_import import Import
from .drill import Drill
from .fields import (
    DEFAULT_POSTGRES_VERSION,
    SUPPORTED_POSTGRES_VERSIONS,
    Calendar,
    Model,
    parse_cidr,
    parse_ipv4,
    pattern,
    secret,
    versions_text,
)
from .logical_backup import LogicalBackup
from .monitoring import Monitoring

__all__ = ["SUPPORTED_POSTGRES_VERSIONS", "Settings"]

# Postgres identifiers are rendered into SQL and pg_hba unquoted; this pattern is what makes
# that safe (no quoting, no injection, fits NAMEDATALEN).
IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
GENERATION_PATTERN = r"^[a-z][a-z0-9]{0,9}$"
# pgBackRest and systemd values that end up in rendered files: keep them to a safe alphabet.
SIZE_PATTERN = r"^[0-9]+(B|kB|MB|GB|TB|KiB|MiB|GiB|TiB)?$"
HOSTNAME_PATTERN = r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$"
GUC_NAME_PATTERN = r"^[a-z_][a-z0-9_.]{0,62}$"
GUC_VALUE_PATTERN = r"^[A-Za-z0-9 _.,:/%+-]{0,200}$"

Identifier = Annotated[
    str,
    pattern(
        IDENTIFIER_PATTERN,
        "use a PostgreSQL identifier: lowercase letters, digits and _, starting with a letter or _, at most 63 "
        "characters",
    ),
]
Generation = Annotated[
    str, pattern(GENERATION_PATTERN, "name generations with a lowercase letter and digits, e.g. g1, g2")
]
Size = Annotated[str, pattern(SIZE_PATTERN, "write a size such as 10GB or 4GiB")]
GucName = Annotated[str, pattern(GUC_NAME_PATTERN, "use a PostgreSQL setting name such as work_mem")]
GucValue = Annotated[str, pattern(GUC_VALUE_PATTERN, "use letters, digits, spaces and _ . , : / % + - only")]

# Roles pgstack creates itself, or PostgreSQL owns: a stack may not name a role after them.
RESERVED_ROLES = frozenset({"postgres", "replicator", "readonly", "write", "public"})


def _role_name(value: str) -> str:
    if value in RESERVED_ROLES or value.startswith("pg_"):
        raise ValueError(f"role name {value!r} is reserved by pgstack or PostgreSQL; pick another")
    return value


# Checked per field, so the error names the exact key (roles.app.name, roles.humans[0].name).
RoleName = Annotated[Identifier, AfterValidator(_role_name)]

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
    return str(parse_cidr(value, example="10.0.1.0/24"))


Cidr = Annotated[str, AfterValidator(_cidr)]
IPv4 = Annotated[str, AfterValidator(parse_ipv4)]

_PASSWORD_VERSION = "bump to rotate: a new password is generated and the old one stops working"


class LoginRole(Model):
    """A role that logs in: its name, how many sessions it may hold, where it may come from."""

    name: RoleName
    connection_limit: int = Field(default=20, ge=1, le=10000, description="the sessions it may hold")
    cidrs: list[Cidr] = Field(default=[], description="where it connects from (empty: the private subnet)")
    password_version: int = Field(default=1, ge=1, le=100000, description=_PASSWORD_VERSION)


class AppRole(LoginRole):
    # Rails runs its own migrations by default (seed 000): this lets the app act as the owner.
    runs_migrations: bool = Field(default=False, description="the app acts as the owner, so it can run migrations")


class HumanRole(Model):
    name: RoleName
    access: Literal["readonly", "write"]
    connection_limit: int = Field(default=5, ge=1, le=100)
    password_version: int = Field(default=1, ge=1, le=100000, description=_PASSWORD_VERSION)


class Roles(Model):
    owner: RoleName = Field(
        default="schema_owner", description="owns the schema and every object in it, nobody logs in as it"
    )
    app: AppRole = Field(description="the application: reads and writes the data")
    migrator: LoginRole = Field(
        default=LoginRole(name="migrator", connection_limit=5), description="runs migrations, acting as the owner"
    )
    reporting: LoginRole = Field(
        default=LoginRole(name="reporting", connection_limit=10),
        description="reads only (replica_database_url connects as it)",
    )
    monitoring: LoginRole = Field(
        default=LoginRole(name="monitoring", connection_limit=5),
        description="reads statistics only (member of pg_monitor, no table of the app database), the exporters "
        "use it (cidrs empty: the monitoring server's IP, or the private subnet without one)",
    )
    humans: list[HumanRole] = Field(default=[], description="people, one login each")
    human_cidrs: list[Cidr] = Field(
        default=[], description="where people connect from, a bastion or a VPN range (empty: adminCidrs)"
    )

    def logins(self) -> list[LoginRole | HumanRole]:
        return [self.app, self.migrator, self.reporting, self.monitoring, *self.humans]

    @model_validator(mode="after")
    def _unique_names(self) -> Roles:
        names = [r.name for r in self.logins()] + [self.owner]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"role name {name!r} is used twice; give every role its own name")
        return self


class Database(Model):
    name: Identifier = Field(description="a PostgreSQL identifier")
    max_connections: int | None = Field(
        default=None,
        ge=20,
        le=10000,
        description="unset: the sum of the role connection limits plus reservedConnections (when set, it must "
        "fit them)",
    )
    reserved_connections: int = Field(
        default=15,
        ge=5,
        le=1000,
        description="superuser, replication, pgBackRest and maintenance sessions, outside the role limits",
    )


class Hetzner(Model):
    location: Literal["ash", "hil", "fsn1", "nbg1", "hel1", "sin"]
    server_type: str = Field(pattern=r"^[a-z0-9-]{2,20}$", description="e.g. ccx13")
    image: str = Field(default="ubuntu-24.04", pattern=r"^[a-z0-9.-]{2,40}$")
    network_cidr: Cidr = Field(description="the private network, a private IPv4 range such as 10.0.0.0/16")
    subnet_cidr: Cidr = Field(description="the servers' subnet, inside networkCidr")
    network_zone: str | None = Field(
        default=None,
        description="unset: the location's (" + ", ".join(f"{loc} {zone}" for loc, zone in NETWORK_ZONES.items()) + ")",
    )
    volume_size_gb: int = Field(
        default=0,
        ge=0,
        le=10240,
        description="0 = the data stays on the server's local disk, else a volume of this size, at least 10 "
        "(Hetzner's minimum)",
    )
    labels: dict[str, str] = Field(default={}, description="added to every Hetzner resource of the stack")

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
    source: Generation = Field(alias="from", description="the source generation")
    target_time: str = Field(
        description="an ISO 8601 time with a time zone (e.g. 2026-11-20T10:00:00+00:00, with up to six fractional "
        "digits, 2026-11-20T10:00:00.123456+00:00: the restore holds exactly the commits up to that microsecond), "
        "or 'latest' to replay the whole archive"
    )

    @field_validator("target_time")
    @classmethod
    def _target_time(cls, value: str) -> str:
        if value != "latest":
            parse_target_time(value)
        return value

    def target(self) -> dt.datetime | None:
        """The recovery target, or None for `latest` (replay the whole archive)."""
        return None if self.target_time == "latest" else parse_target_time(self.target_time)


# Seconds may carry up to six fractional digits: PostgreSQL keeps microseconds, no finer.
_FRACTION = re.compile(r"T\d{2}:\d{2}:\d{2}[.,](\d+)")


def parse_target_time(value: str) -> dt.datetime:
    fraction = _FRACTION.search(value)
    if fraction and len(fraction.group(1)) > 6:
        raise ValueError(
            f"targetTime {value!r} has {len(fraction.group(1))} fractional digits; PostgreSQL restores to the "
            "microsecond, so write at most six (e.g. 2026-11-20T10:00:00.123456+00:00)"
        )
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

    # Optional in the model only because target aws has no use for it; config.rules requires it for hetzner.
    primary_ip: IPv4 | None = Field(
        default=None,
        description="hetzner: required, a fixed private IP inside hetzner.subnetCidr. aws: leave unset, RDS picks "
        "its addresses (a generation is the RDS instance <stack>-<gen>-db)",
    )
    replica_ips: list[IPv4] = Field(
        default=[], description="hetzner: hot standbys, each at a private IP inside hetzner.subnetCidr. aws: none"
    )
    delete_protection: bool = Field(
        default=True, description="to retire a generation, set it false, run up, then remove the generation"
    )
    restore: Restore | None = Field(
        default=None,
        description="build this generation from another one's backups. Create-only: removing the block later "
        "never touches the restored data",
    )
    import_: Import | None = Field(
        default=None,
        alias="import",
        description="fill this generation's database from another PostgreSQL (a URL, or a dump in the bucket) "
        "instead of starting empty, not with restore. Create-only, like restore: it runs when the generation is "
        "created, and editing or removing the block later never runs it again",
    )


class Backup(Model):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    endpoint: str = Field(pattern=HOSTNAME_PATTERN, description="e.g. fsn1.your-objectstorage.com")
    region: str = Field(pattern=r"^[a-z0-9-]{2,30}$", description="e.g. fsn1")
    repo_path: str = Field(default="/pgbackrest", pattern=r"^/[A-Za-z0-9_./-]{0,200}$")
    retention_full_days: int = Field(default=30, ge=1, le=3650, description="how long full backups are kept")
    # Used by tests: time retention counts whole days.
    retention_full_count: int | None = Field(
        default=None, ge=1, le=100, description="keep this many full backups instead (overrides retentionFullDays)"
    )
    process_max: int = Field(default=4, ge=1, le=32, description="pgBackRest's parallel processes")
    archive_timeout_seconds: int = Field(
        default=60, ge=10, le=3600, description="PostgreSQL's archive_timeout: a WAL segment is archived this often"
    )
    archive_push_queue_max: Size = Field(
        default="4GiB", description="the WAL that may wait while the store is unreachable (beyond it, WAL is dropped)"
    )
    # While the store is unreachable, one async push attempt takes about 8x this before it gives
    # up, and the queue bound is only enforced between attempts (see pgbackrest_conf).
    archive_push_io_timeout_seconds: int = Field(
        default=10,
        ge=3,
        le=600,
        description="pgBackRest's io-timeout for WAL pushes only: how fast a dead store is noticed, so how far the "
        "queue can overshoot its bound",
    )
    full_schedule: Calendar = Field(
        default="Sun *-*-* 02:00:00", description="systemd OnCalendar of the weekly full backup"
    )
    diff_schedule: Calendar = Field(
        default="Mon..Sat *-*-* 02:00:00", description="systemd OnCalendar of the differential backups"
    )


class Replication(Model):
    max_slot_wal_keep_size: Size = Field(
        default="10GB", description="bounds the WAL a dead replica's slot may hold on the primary"
    )


class Dns(Model):
    provider: Literal["hetzner", "route53"]
    zone: str = Field(pattern=r"^[a-z0-9.-]{3,253}$", description="e.g. example.com (a Hetzner zone is found by name)")
    zone_id: str | None = Field(
        default=None, pattern=r"^[A-Z0-9]{1,32}$", description="the Route53 hosted zone id, required for route53"
    )
    record: str = Field(default="db", pattern=r"^[a-z0-9-]{1,63}$", description="the name in the zone")
    ttl: int = Field(default=60, ge=30, le=86400, description="seconds")

    @model_validator(mode="after")
    def _route53_zone(self) -> Dns:
        if self.provider == "route53" and not self.zone_id:
            raise ValueError("provider route53 needs zoneId (the hosted zone id, e.g. Z0123456789ABC)")
        return self


URL_PATTERN = r"^https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
HttpUrl = Annotated[
    str, pattern(URL_PATTERN, "write an http(s) URL without a trailing query, e.g. https://hc-ping.com")
]


class AlertJob(Model):
    """How often a job reports, and how late a report may be before the service alerts."""

    # Healthchecks.io itself takes 60 s at least; the lower bound here is for the rehearsal's receiver.
    period_seconds: int = Field(
        ge=10,
        le=31536000,
        description="how often the job reports (the check's period, Healthchecks.io takes 60 or more)",
    )
    grace_seconds: int = Field(
        ge=10,
        le=31536000,
        description="how late a report may be before the check alerts (Healthchecks.io takes 60 or more)",
    )


class AlertJobs(Model):
    backup_full: AlertJob = Field(
        default=AlertJob(period_seconds=7 * 86400, grace_seconds=4 * 3600),
        description="the weekly full backup (period: the longest gap backup.fullSchedule allows)",
    )
    backup_diff: AlertJob = Field(
        default=AlertJob(period_seconds=86400, grace_seconds=4 * 3600),
        description="the differential backups (period: the longest gap backup.diffSchedule allows)",
    )
    archive: AlertJob = Field(
        default=AlertJob(period_seconds=300, grace_seconds=600),
        description="WAL archiving, checked on the primary this often",
    )
    replication: AlertJob = Field(
        default=AlertJob(period_seconds=300, grace_seconds=600), description="streaming, checked on each replica"
    )
    alive: AlertJob = Field(
        default=AlertJob(period_seconds=60, grace_seconds=240),
        description="the server and its PostgreSQL answer, checked on every server",
    )
    drill: AlertJob = Field(
        default=AlertJob(period_seconds=7 * 86400, grace_seconds=86400),
        description="the restore drill, on the drill server (period: the longest gap drill.schedule allows)",
    )
    verify: AlertJob = Field(
        default=AlertJob(period_seconds=7 * 86400, grace_seconds=86400),
        description="pgbackrest verify of the repository, on the primary (period: the longest gap "
        "drill.verifySchedule allows)",
    )
    logical_dump: AlertJob = Field(
        default=AlertJob(period_seconds=86400, grace_seconds=6 * 3600),
        description="the scheduled logical dump (logicalBackup), on the server that takes it (period: the longest "
        "gap logicalBackup.schedule allows)",
    )


class Alerts(Model):
    """Heartbeats to a Healthchecks-compatible service (target hetzner): every job reports, silence alerts."""

    ping_url: HttpUrl = Field(
        default="https://hc-ping.com",
        description="the ping base URL (a check's URL is "
        "<pingUrl>/<alertsPingKey>/<stack>-<generation>-<server>-<job>)",
    )
    api_url: HttpUrl = Field(
        default="https://healthchecks.io",
        description="the Healthchecks instance whose management API (<apiUrl>/api/v3/checks/) creates the checks "
        "when alertsApiKey is set",
    )
    jobs: AlertJobs = Field(default=AlertJobs(), description="period and grace of each job's check")
    archive_max_age_seconds: int = Field(
        default=900,
        ge=20,
        le=86400,
        description="archive fails when the newest archived WAL is older than this (above backup.archiveTimeoutSeconds "
        "plus jobs.archive.periodSeconds)",
    )
    replication_max_lag_seconds: int = Field(
        default=300, ge=1, le=86400, description="replication fails when a replica's replay lag is above this"
    )
    tags: str = Field(
        default="pgstack", pattern=r"^[A-Za-z0-9 _.-]{0,100}$", description="Healthchecks tags of every check"
    )


class Postgres(Model):
    version: int = Field(
        default=DEFAULT_POSTGRES_VERSION,
        description=f"the major version of every generation (pgstack supports {versions_text()})",
    )

    @field_validator("version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value not in SUPPORTED_POSTGRES_VERSIONS:
            raise ValueError(f"not supported; pgstack supports PostgreSQL {versions_text(SUPPORTED_POSTGRES_VERSIONS)}")
        return value


class SandboxOverrides(Model):
    """Keys only the local rehearsal may set (see sandbox/overlay.py); refused in a real stack."""

    package_source: Literal["pgdg", "distro"] = Field(
        default="pgdg", description="PostgreSQL from apt.postgresql.org, or from Debian (the guests have no internet)"
    )
    s3_verify_tls: bool = Field(default=True, description="false for the local S3's self-signed certificate")
    s3_port: int = Field(default=443, ge=1, le=65535, description="the local S3 listens on a high port")
    alerts_verify_tls: bool = Field(
        default=True, description="false for the local Healthchecks receiver's self-signed certificate"
    )


def _internal(description: str) -> Any:
    """Set by the program, not by the stack file: not a config key."""
    return Field(description=description, json_schema_extra={"config_key": False})


class Settings(Model):
    """Everything the program needs, validated as a whole.

    The fields are the `pgstack:*` keys, in the order Pulumi.yaml documents them.
    """

    project: str = _internal("the Pulumi project")
    stack: str = _internal("the Pulumi stack")
    target: Literal["hetzner", "aws"] = Field(description="Where the database runs.")
    clusters: dict[Generation, Cluster] = Field(
        description="The cluster generations, by name (g1, g2, ...). A restored generation is built next to its "
        "source from the source's backups."
    )
    active: str = Field(
        description="The generation clients use (the DNS record and database_url point at its primary)."
    )
    database: Database = Field(description="The database the roles use.")
    roles: Roles = Field(
        description="Role names are PostgreSQL identifiers, each used once, and none of "
        f"{', '.join(sorted(RESERVED_ROLES))} or pg_*."
    )
    hetzner: Hetzner | None = Field(default=None, description="Required for target hetzner.")
    admin_cidrs: list[Cidr] = Field(
        default=[],
        description="Required for hetzner. CIDRs allowed to reach SSH (TCP 22) on the public interface. "
        "0.0.0.0/0 needs allowSshFromAnywhere.",
    )
    allow_ssh_from_anywhere: bool = Field(
        default=False, description="Explicit opt-in to let adminCidrs contain 0.0.0.0/0 or ::/0."
    )
    ssh_public_key: str | None = Field(
        default=None,
        pattern=r"^ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( [^\n]*)?$",
        description="Required for hetzner. The admin SSH public key (ssh-ed25519 or ssh-rsa) put on the servers "
        "(one key per stack).",
    )
    ssh_private_key: str | None = secret(
        "Required for hetzner and aws. hetzner: the private key of sshPublicKey; aws: the key that logs in to "
        "aws.bastion. Used by the remote commands."
    )
    postgres: Postgres = Field(default=Postgres(), description="The PostgreSQL server.")
    postgresql: dict[GucName, GucValue] = Field(
        default={},
        description="postgresql.conf overrides, setting name to value (e.g. shared_buffers: 2GB). Settings pgstack "
        "manages (listen_addresses, archive_*, ...) are refused, and on target aws those that keep RDS safe ("
        f"{', '.join(PROTECTED_PARAMETERS)}).",
    )
    backup: Backup | None = Field(
        default=None,
        description="pgBackRest repository on S3-compatible object storage (target hetzner; target aws keeps its "
        "backups in RDS). Without it, no backups are taken and no generation can be restored.",
    )
    s3_access_key: str | None = secret("Object storage access key, issued in the Hetzner console.")
    s3_secret_key: str | None = secret("Object storage secret key.")
    backup_cipher_passphrase: str | None = secret(
        "Optional. Adopt an existing pgBackRest repository: its passphrase (repo1-cipher-pass). Unset, pgstack "
        "generates one once per stack. A repository's passphrase can never change: when a generation's stanza "
        "already exists in the bucket and this passphrase does not open it, the program stops before changing "
        "anything."
    )
    import_source_url: str | None = secret(
        "Required by an import from source url, and by every import that verifies. The source database as a libpq "
        "URL (postgres://USER:PASSWORD@HOST:5432/DATABASE, e.g. Heroku's DATABASE_URL); sslmode require or "
        "stricter (the default require)."
    )
    replication: Replication = Field(default=Replication(), description="Streaming replication to the replicas.")
    dns: Dns | None = Field(default=None, description="Optional DNS name for the active primary.")
    aws: Aws | None = Field(
        default=None, description=f"Required for target aws (PostgreSQL {versions_text()} on RDS, see docs/aws.md)."
    )
    pagerduty_endpoint: str | None = secret(
        "Optional, target aws. The PagerDuty CloudWatch integration URL that critical alarms go to; it embeds the "
        "integration key. Unset: critical alarms go to the warning emails."
    )
    alerts: Alerts | None = Field(
        default=None,
        description="Optional, target hetzner. Heartbeats of every scheduled job to a Healthchecks-compatible "
        "service (healthchecks.io or self-hosted), so an alert comes from outside even when a whole server is gone. "
        "Needs alertsPingKey.",
    )
    alerts_ping_key: str | None = secret(
        "Required with alerts. The Healthchecks project's ping key; it is part of every ping URL and lives on the "
        "servers only in a root-only file."
    )
    alerts_api_key: str | None = secret(
        "Optional, with alerts. A Healthchecks API key (read-write) of the same project: the program creates and "
        "updates the checks with it. Unset: create the checks by hand (README, Alerting)."
    )
    drill: Drill = Field(
        default=Drill(),
        description="Target hetzner, with backup. Restore drills on a schedule (the newest backup restored next "
        "to a live cluster, checked and thrown away; README, Restore drills), pgbackrest verify of the "
        "repository, and the write canary they measure the RPO with.",
    )
    logical_backup: LogicalBackup | None = Field(
        default=None,
        description="Optional, target hetzner, with backup. Scheduled logical dumps (pg_dump -Fc) of the database, "
        "encrypted on the server with age to public keys, into the backup bucket under their own prefix, the "
        "newest `keep` kept (README, Logical dumps). Unset: no dumps.",
    )
    monitoring: Monitoring = Field(
        default=Monitoring(),
        description="Target hetzner. Exporters on every server (always), the alert rules' thresholds, and an "
        "optional monitoring server (Prometheus and Alertmanager) with its receivers.",
    )
    monitoring_smtp_password: str | None = secret("Optional. The SMTP password of monitoring.receivers.email.")
    monitoring_webhook_url: str | None = secret(
        "Optional. A webhook (http or https URL) the monitoring server sends every alert to; secret, as such URLs "
        "carry tokens."
    )
    monitoring_pagerduty_routing_key: str | None = secret(
        "Optional. A PagerDuty Events API v2 routing key: critical alerts page through it."
    )
    sandbox: SandboxOverrides = Field(
        default=SandboxOverrides(),
        description="Only the local rehearsal may set this (refused in a real stack); see sandbox/overlay.py.",
        json_schema_extra={"sandbox_only": True},
    )

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
        if not role.cidrs and role is self.roles.monitoring and self.monitoring.server is not None:
            return [f"{self.monitoring.server.ip}/32"]
        return list(role.cidrs) or [self.private_cidr]

    @property
    def private_cidr(self) -> str:
        return self.hetzner.subnet_cidr if self.hetzner else "10.0.0.0/8"

    @property
    def human_cidrs(self) -> list[str]:
        return list(self.roles.human_cidrs) or list(self.admin_cidrs)
