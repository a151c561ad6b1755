"""The typed `pgstack:aws` block (target aws: PostgreSQL 15 on RDS) and its cross-field rules.

Pure like model.py. It imports nothing from model.py (model.py imports this module for
`Settings.aws`), so it carries its own small base class and CIDR check.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .errors import ConfigError

if TYPE_CHECKING:
    from .model import Settings

VPC_ID_PATTERN = r"^vpc-[0-9a-f]{8,17}$"
SUBNET_ID_PATTERN = r"^subnet-[0-9a-f]{8,17}$"
SECURITY_GROUP_ID_PATTERN = r"^sg-[0-9a-f]{8,17}$"
REGION_PATTERN = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"
KMS_KEY_ARN_PATTERN = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]{1,64}$"
INSTANCE_CLASS_PATTERN = r"^db\.[a-z0-9]+\.[a-z0-9]+$"
# PostgreSQL 15 only: "15" lets RDS pick (and keep) the minor version, "15.7" pins it.
ENGINE_VERSION_PATTERN = r"^15(\.[0-9]{1,2})?$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
HOST_PATTERN = r"^[A-Za-z0-9.:-]{1,253}$"
SSH_USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
BACKUP_WINDOW_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"
MAINTENANCE_WINDOW_PATTERN = (
    r"^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-"
    r"(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$"
)
# How to fix a value that does not match (config/__init__.py shows these instead of the regex).
PATTERN_HINTS = {
    VPC_ID_PATTERN: "write the VPC's ID, e.g. vpc-0a1b2c3d4e5f60789",
    SUBNET_ID_PATTERN: "write a subnet ID, e.g. subnet-0a1b2c3d4e5f60001",
    SECURITY_GROUP_ID_PATTERN: "write a security group ID, e.g. sg-0a1b2c3d4e5f60010",
    REGION_PATTERN: "write an AWS region, e.g. eu-west-2",
    KMS_KEY_ARN_PATTERN: "write a KMS key ARN, arn:aws:kms:<region>:<account>:key/<key id> (not an alias)",
    INSTANCE_CLASS_PATTERN: "write an RDS instance class, e.g. db.m6g.large",
    ENGINE_VERSION_PATTERN: "pgstack runs PostgreSQL 15 on RDS: write 15, or 15.x to pin the minor version",
    EMAIL_PATTERN: "write an email address, e.g. ops@example.com",
    HOST_PATTERN: "write a host name or IP address",
    SSH_USER_PATTERN: "write a Unix user name, e.g. ec2-user",
    BACKUP_WINDOW_PATTERN: "write a daily UTC window hh:mm-hh:mm, e.g. 02:00-03:00",
    MAINTENANCE_WINDOW_PATTERN: "write a weekly UTC window ddd:hh:mm-ddd:hh:mm, e.g. sun:04:00-sun:05:00",
}
# What RDS accepts as a DB instance identifier; pgstack's are {stack}-{generation}-db.
RDS_IDENTIFIER = re.compile(r"^[a-z](?!.*--)[a-z0-9-]{0,61}[a-z0-9]$")

# PostgreSQL settings that keep RDS safe: `pgstack:postgresql` may not weaken them.
PROTECTED_PARAMETERS = {
    "rds.force_ssl": "TLS is required on every connection",
    "ssl_min_protocol_version": "TLS 1.2 is the floor",
    "password_encryption": "passwords are SCRAM verifiers",
    "max_connections": "set database.maxConnections instead (it is checked against the role limits)",
}
# Master user names RDS or pgstack keep for themselves.
RESERVED_MASTER_NAMES = {"rdsadmin", "rdsrepladmin", "replicator", "readonly", "write", "public"}


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a valid CIDR ({exc}); write it as network/prefix, e.g. 10.0.0.0/16"
        ) from None
    if net.prefixlen == 0:
        raise ValueError(f"{net} would open PostgreSQL to every address; list your VPC ranges or security groups")
    return str(net)


Cidr = Annotated[str, AfterValidator(_cidr)]
SecurityGroupId = Annotated[str, Field(pattern=SECURITY_GROUP_ID_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)


class Thresholds(_Model):
    warning: float = Field(gt=0)
    critical: float = Field(gt=0)


class Alarms(_Model):
    """CloudWatch alarms on the active instance: warnings by email, critical ones to PagerDuty."""

    warning_emails: list[Annotated[str, Field(pattern=EMAIL_PATTERN)]] = []
    cpu_percent: Thresholds = Thresholds(warning=80, critical=95)
    # Alarms when free memory falls *below* these (MiB).
    freeable_memory_mb: Thresholds = Thresholds(warning=1024, critical=256)
    # Percent of the instance's max_connections (database.maxConnections or the role sum).
    connections_percent: Thresholds = Thresholds(warning=80, critical=95)
    period_seconds: Literal[60, 300, 900, 3600] = 60
    evaluation_periods: int = Field(default=5, ge=1, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> Alarms:
        for key, t in (("cpuPercent", self.cpu_percent), ("connectionsPercent", self.connections_percent)):
            if not t.warning < t.critical <= 100:
                raise ValueError(f"{key}: need warning < critical <= 100 (got {t.warning} and {t.critical})")
        m = self.freeable_memory_mb
        if not m.warning > m.critical:
            raise ValueError(
                f"freeableMemoryMb alarms when memory falls below the threshold: warning ({m.warning}) must "
                f"be above critical ({m.critical})"
            )
        return self


class Bastion(_Model):
    """The host in the VPC that applies the role SQL to RDS (psql over TLS)."""

    host: str = Field(pattern=HOST_PATTERN)
    user: str = Field(default="ec2-user", pattern=SSH_USER_PATTERN)
    # The bastion's security group; it is let in on 5432 so the role setup can connect.
    security_group_id: SecurityGroupId | None = None
    # verify-full checks the instance certificate against the RDS CA bundle of the region.
    ssl_mode: Literal["verify-full", "require"] = "verify-full"


class Aws(_Model):
    region: str = Field(pattern=REGION_PATTERN)
    # Given by ID: teams on RDS already have a VPC, its routing and its bastion.
    vpc_id: str = Field(pattern=VPC_ID_PATTERN)
    subnet_ids: list[Annotated[str, Field(pattern=SUBNET_ID_PATTERN)]] = Field(min_length=2)
    instance_class: str = Field(pattern=INSTANCE_CLASS_PATTERN)
    engine_version: str = Field(default="15", pattern=ENGINE_VERSION_PATTERN)
    allocated_storage_gb: int = Field(default=100, ge=20, le=65536)
    # Storage autoscaling ceiling; 0 turns autoscaling off.
    max_allocated_storage_gb: int = Field(default=0, ge=0, le=65536)
    storage_type: Literal["gp3", "gp2", "io1", "io2"] = "gp3"
    multi_az: bool = True
    # None: pgstack creates a KMS key for the stack (kept in AWS if removed from the program).
    kms_key_arn: str | None = Field(default=None, pattern=KMS_KEY_ARN_PATTERN)
    allowed_security_group_ids: list[SecurityGroupId] = []
    allowed_cidrs: list[Cidr] = []
    master_username: str = Field(default="pgstack_admin", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    backup_retention_days: int = Field(default=31, ge=1, le=35)
    backup_window: str | None = Field(default=None, pattern=BACKUP_WINDOW_PATTERN)
    maintenance_window: str | None = Field(default=None, pattern=MAINTENANCE_WINDOW_PATTERN)
    # Off: minor upgrades are planned (seed 001 turns it on for one maintenance window).
    auto_minor_version_upgrade: bool = False
    apply_immediately: bool = False
    performance_insights_retention_days: int = 7
    monitoring_interval_seconds: Literal[1, 5, 10, 15, 30, 60] = 60
    ca_cert_identifier: str = Field(default="rds-ca-rsa2048-g1", pattern=r"^[a-z0-9-]{1,64}$")
    # Stop the previously active instance after a cutover, so no connection lingers there.
    stop_previous_on_cutover: bool = True
    bastion: Bastion
    alarms: Alarms = Alarms()
    tags: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9 _.:/=+@-]{1,128}$")], str] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Aws:
        if len(set(self.subnet_ids)) != len(self.subnet_ids):
            raise ValueError("subnetIds lists a subnet twice; RDS needs subnets in at least two availability zones")
        if self.max_allocated_storage_gb and self.max_allocated_storage_gb <= self.allocated_storage_gb:
            raise ValueError(
                f"maxAllocatedStorageGb ({self.max_allocated_storage_gb}) must be above allocatedStorageGb "
                f"({self.allocated_storage_gb}), or 0 to turn storage autoscaling off"
            )
        pi = self.performance_insights_retention_days
        if not (pi == 7 or (pi % 31 == 0 and 31 <= pi <= 713) or pi == 731):
            raise ValueError(
                f"performanceInsightsRetentionDays {pi}: RDS accepts 7 (free), a multiple of 31 up to 713, or 731"
            )
        if not (self.allowed_security_group_ids or self.allowed_cidrs or self.bastion.security_group_id):
            raise ValueError("nothing may reach the database: list allowedSecurityGroupIds (your apps) or allowedCidrs")
        if self.master_username in RESERVED_MASTER_NAMES or self.master_username.startswith(("pg_", "rds_")):
            raise ValueError(f"masterUsername {self.master_username!r} is reserved by RDS or pgstack; pick another")
        return self

    def identifier(self, stack: str, generation: str) -> str:
        """The RDS instance identifier of a generation (also its Pulumi resource name)."""
        return f"{stack}-{generation}-db"


def check(settings: Settings) -> None:
    """Cross-field rules for target aws; config.rules calls this after the common ones."""
    aws = settings.aws
    if aws is None:
        raise ConfigError(
            "aws", "target aws needs the aws block (region, vpcId, subnetIds, instanceClass, bastion); see Pulumi.yaml"
        )
    if settings.hetzner is not None:
        raise ConfigError("hetzner", "target aws does not use the hetzner block; remove it")
    if settings.backup is not None:
        raise ConfigError(
            "backup", "target aws keeps its backups in RDS (aws.backupRetentionDays); remove the pgBackRest block"
        )
    for key, cidrs in (
        ("roles.app.cidrs", settings.roles.app.cidrs),
        ("roles.migrator.cidrs", settings.roles.migrator.cidrs),
        ("roles.reporting.cidrs", settings.roles.reporting.cidrs),
        ("roles.humanCidrs", settings.roles.human_cidrs),
    ):
        if cidrs:
            raise ConfigError(
                key,
                "RDS has no pg_hba.conf, so per-role CIDRs cannot be enforced there; remove them and list "
                "the sources in aws.allowedCidrs / aws.allowedSecurityGroupIds",
            )
    for gen, cluster in settings.clusters.items():
        if cluster.primary_ip is not None:
            raise ConfigError(
                f"clusters.{gen}.primaryIp", "RDS chooses its own addresses; remove primaryIp for target aws"
            )
        if cluster.replica_ips:
            raise ConfigError(
                f"clusters.{gen}.replicaIps", "target aws has no pgstack replicas; remove them and use aws.multiAz"
            )
        ident = aws.identifier(settings.stack, gen)
        if not RDS_IDENTIFIER.match(ident):
            raise ConfigError(
                f"clusters.{gen}",
                f"the RDS identifier {ident!r} (stack-generation-db) is not valid: use a stack name of lowercase "
                "letters, digits and single hyphens, and keep it under 55 characters",
            )
    for gen in settings.clusters:
        seen = [gen]
        while (restore := settings.clusters[seen[-1]].restore) is not None and restore.source in settings.clusters:
            if restore.source in seen:
                raise ConfigError(
                    f"clusters.{gen}.restore.from",
                    f"restores form a cycle ({' <- '.join([*seen, restore.source])}); a restore needs a source "
                    "that exists first",
                )
            seen.append(restore.source)
    names = {r.name for r in settings.roles.logins()} | {settings.roles.owner}
    if aws.master_username in names:
        raise ConfigError(
            "aws.masterUsername", f"{aws.master_username!r} is also a role in pgstack:roles; give the master its own"
        )
    for name in settings.postgresql:
        if name in PROTECTED_PARAMETERS:
            raise ConfigError(f"postgresql.{name}", f"pgstack sets this on RDS: {PROTECTED_PARAMETERS[name]}")
