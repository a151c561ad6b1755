"""The typed `pgstack:aws` block (target aws: PostgreSQL on RDS, see docs/aws.md).

Pure like model.py, and below it: model.py imports this module for `Settings.aws`, so the rules
that need the whole Settings (target aws's cross-field rules) live in rules.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .fields import DEFAULT_POSTGRES_VERSION, Model, parse_cidr, pattern

# The pattern-checked strings of the block, each with the hint shown when a value does not match.
Region = Annotated[str, pattern(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", "write an AWS region, e.g. eu-west-2")]
VpcId = Annotated[str, pattern(r"^vpc-[0-9a-f]{8,17}$", "write the VPC's ID, e.g. vpc-0a1b2c3d4e5f60789")]
SubnetId = Annotated[str, pattern(r"^subnet-[0-9a-f]{8,17}$", "write a subnet ID, e.g. subnet-0a1b2c3d4e5f60001")]
SecurityGroupId = Annotated[
    str, pattern(r"^sg-[0-9a-f]{8,17}$", "write a security group ID, e.g. sg-0a1b2c3d4e5f60010")
]
InstanceClass = Annotated[str, pattern(r"^db\.[a-z0-9]+\.[a-z0-9]+$", "write an RDS instance class, e.g. db.m6g.large")]
# "15" lets RDS pick (and keep) the minor version, "15.7" pins it. Any major matches here: rules.py
# checks that it is postgres.version, and says so in the message.
EngineVersion = Annotated[
    str,
    pattern(
        r"^[0-9]{2}(\.[0-9]{1,2})?$", "write a PostgreSQL version: a major version such as 15, or 15.x to pin the minor"
    ),
]
KmsKeyArn = Annotated[
    str,
    pattern(
        r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]{1,64}$",
        "write a KMS key ARN, arn:aws:kms:<region>:<account>:key/<key id> (not an alias)",
    ),
]
Email = Annotated[
    str, pattern(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", "write an email address, e.g. ops@example.com")
]
Host = Annotated[str, pattern(r"^[A-Za-z0-9.:-]{1,253}$", "write a host name or IP address")]
SshUser = Annotated[str, pattern(r"^[a-z_][a-z0-9_-]{0,31}$", "write a Unix user name, e.g. ec2-user")]
BackupWindow = Annotated[
    str,
    pattern(
        r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$",
        "write a daily UTC window hh:mm-hh:mm, e.g. 02:00-03:00",
    ),
]
MaintenanceWindow = Annotated[
    str,
    pattern(
        r"^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-"
        r"(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$",
        "write a weekly UTC window ddd:hh:mm-ddd:hh:mm, e.g. sun:04:00-sun:05:00",
    ),
]
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


def _allowed_cidr(value: str) -> str:
    net = parse_cidr(value, example="10.0.0.0/16")
    if net.prefixlen == 0:
        raise ValueError(f"{net} would open PostgreSQL to every address; list your VPC ranges or security groups")
    return str(net)


AllowedCidr = Annotated[str, AfterValidator(_allowed_cidr)]


class Thresholds(Model):
    warning: float = Field(gt=0, description="the warning threshold")
    critical: float = Field(gt=0, description="the critical threshold")


class Alarms(Model):
    """CloudWatch alarms on the active instance: warnings by email, critical ones to PagerDuty."""

    warning_emails: list[Email] = Field(
        default=[], description="where warnings go (and critical alarms, without pagerdutyEndpoint)"
    )
    cpu_percent: Thresholds = Field(default=Thresholds(warning=80, critical=95), description="CPU utilisation")
    freeable_memory_mb: Thresholds = Field(
        default=Thresholds(warning=1024, critical=256),
        description="alarms when free memory falls *below* these (MiB), so warning is above critical",
    )
    connections_percent: Thresholds = Field(
        default=Thresholds(warning=80, critical=95),
        description="percent of the instance's max_connections (database.maxConnections or the role sum)",
    )
    free_storage_gb: Thresholds = Field(
        default=Thresholds(warning=10, critical=5),
        description="alarms when free storage falls *below* these (GiB), so warning is above critical, and absolute "
        "since storage autoscaling grows the allocation",
    )
    period_seconds: Literal[60, 300, 900, 3600] = Field(default=60, description="one evaluation period")
    evaluation_periods: int = Field(default=5, ge=1, le=60, description="periods in breach before an alarm fires")

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
        f = self.free_storage_gb
        if not f.warning > f.critical:
            raise ValueError(
                f"freeStorageGb alarms when free storage falls below the threshold: warning ({f.warning}) must "
                f"be above critical ({f.critical})"
            )
        return self


class Bastion(Model):
    """The host in the VPC that applies the role SQL to RDS (psql over TLS)."""

    host: Host = Field(description="its host name or IP address")
    user: SshUser = Field(default="ec2-user", description="the SSH user (sshPrivateKey logs in as it)")
    security_group_id: SecurityGroupId | None = Field(
        default=None, description="the bastion's security group, let in on 5432 so the role setup can connect"
    )
    ssl_mode: Literal["verify-full", "require"] = Field(
        default="verify-full",
        description="verify-full checks the instance certificate against the RDS CA bundle of the region",
    )


class Aws(Model):
    region: Region = Field(description="e.g. eu-west-2")
    # Given by ID: teams on RDS already have a VPC, its routing and its bastion.
    vpc_id: VpcId = Field(description="an existing VPC, given by ID (pgstack does not create one)")
    subnet_ids: list[SubnetId] = Field(
        min_length=2, description="private subnets of the VPC in different availability zones, given by ID"
    )
    instance_class: InstanceClass = Field(description="e.g. db.m6g.large")
    engine_version: EngineVersion = Field(
        default=str(DEFAULT_POSTGRES_VERSION),
        description="postgres.version (RDS picks and keeps the minor version), or that major with a minor, e.g. "
        "15.7, to pin it",
    )
    allocated_storage_gb: int = Field(default=100, ge=20, le=65536)
    max_allocated_storage_gb: int = Field(default=0, ge=0, le=65536, description="0 = no storage autoscaling")
    storage_type: Literal["gp3", "gp2", "io1", "io2"] = "gp3"
    multi_az: bool = True
    kms_key_arn: KmsKeyArn | None = Field(
        default=None,
        description="encrypt with this key (unset: pgstack creates one for the stack, kept in AWS if ever removed)",
    )
    allowed_security_group_ids: list[SecurityGroupId] = Field(
        default=[], description="who reaches 5432: your applications' security groups"
    )
    allowed_cidrs: list[AllowedCidr] = Field(
        default=[], description="who reaches 5432 (0.0.0.0/0 and ::/0 are refused)"
    )
    master_username: str = Field(
        default="pgstack_admin",
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="its password is generated. Not a role of pgstack:roles, not pg_* or rds_*, and none of "
        f"{', '.join(sorted(RESERVED_MASTER_NAMES))}",
    )
    backup_retention_days: int = Field(default=31, ge=1, le=35, description="the point-in-time restore window")
    backup_window: BackupWindow | None = Field(
        default=None, description="daily, hh:mm-hh:mm UTC (unset: RDS picks one)"
    )
    maintenance_window: MaintenanceWindow | None = Field(
        default=None, description="weekly, ddd:hh:mm-ddd:hh:mm UTC (unset: RDS picks one)"
    )
    auto_minor_version_upgrade: bool = Field(
        default=False, description="off: minor upgrades are planned (seed 001 turns it on for one maintenance window)"
    )
    apply_immediately: bool = Field(default=False, description="apply changes now, not in the maintenance window")
    performance_insights_retention_days: int = Field(
        default=7, description="7 (free), a multiple of 31 up to 713, or 731"
    )
    monitoring_interval_seconds: Literal[1, 5, 10, 15, 30, 60] = Field(default=60, description="enhanced monitoring")
    ca_cert_identifier: str = Field(default="rds-ca-rsa2048-g1", pattern=r"^[a-z0-9-]{1,64}$")
    stop_previous_on_cutover: bool = Field(
        default=True,
        description="after `active` changes, the previously active instance is stopped so no connection lingers "
        "(AWS starts it again after 7 days)",
    )
    bastion: Bastion = Field(description="where the role SQL runs, with psql")
    alarms: Alarms = Field(
        default=Alarms(),
        description="CloudWatch alarms on the active instance: warnings by email, critical ones to pagerdutyEndpoint",
    )
    tags: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9 _.:/=+@-]{1,128}$")], str] = Field(
        default={}, description="added to every AWS resource of the stack"
    )

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
