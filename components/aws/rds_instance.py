"""RdsInstance: one cluster generation on RDS, a PostgreSQL instance `{stack}-{gen}-db`.

Encrypted with the stack's KMS key, in the stack's subnet and security group, with the shared
parameter group, 31 days of point-in-time backups, deletion protection, Performance Insights,
enhanced monitoring and the postgresql/upgrade logs in CloudWatch. With `restore`, the instance
is created as a point-in-time restore of another generation (RdsRestore, components/rds_restore.py).

Inputs RDS can only take at creation are ignored after it, so no config edit ever replaces a
live database: a different restore point, master user or KMS key means a new generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

# Each of these forces a replacement in the provider. They are creation settings here: the
# restore block (edited, or removed after a cutover), the master user name and the KMS keys.
IGNORED_AFTER_CREATE = ["restoreToPointInTime", "username", "kmsKeyId", "performanceInsightsKmsKeyId"]
LOG_EXPORTS = ["postgresql", "upgrade"]


@dataclass
class RestoreSource:
    source_identifier: pulumi.Input[str]
    # UTC RFC 3339 (rds_restore.rds_restore_time), or None for the latest restorable time.
    restore_time: str | None


@dataclass
class RdsInstanceArgs:
    identifier: str
    instance_class: str
    engine_version: str
    master_username: str
    master_password: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    subnet_group_name: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    parameter_group_name: pulumi.Input[str]
    monitoring_role_arn: pulumi.Input[str]
    allocated_storage_gb: int = 100
    max_allocated_storage_gb: int = 0
    storage_type: str = "gp3"
    multi_az: bool = True
    backup_retention_days: int = 31
    backup_window: str | None = None
    maintenance_window: str | None = None
    auto_minor_version_upgrade: bool = False
    apply_immediately: bool = False
    performance_insights_retention_days: int = 7
    monitoring_interval_seconds: int = 60
    ca_cert_identifier: str | None = None
    deletion_protection: bool = True
    restore: RestoreSource | None = None
    tags: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class RdsInstance(pulumi.ComponentResource):
    def __init__(self, name: str, args: RdsInstanceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:rds_instance:RdsInstance", name, None, opts)
        restore = None
        if args.restore is not None:
            restore = aws.rds.InstanceRestoreToPointInTimeArgs(
                source_db_instance_identifier=args.restore.source_identifier,
                restore_time=args.restore.restore_time,
                use_latest_restorable_time=True if args.restore.restore_time is None else None,
            )
        self.instance = aws.rds.Instance(
            f"{name}-db",
            identifier=args.identifier,
            engine="postgres",
            engine_version=args.engine_version,
            # Minor upgrades are planned (seed 001): on only for a chosen maintenance window.
            auto_minor_version_upgrade=args.auto_minor_version_upgrade,
            allow_major_version_upgrade=False,
            instance_class=args.instance_class,
            allocated_storage=args.allocated_storage_gb,
            max_allocated_storage=args.max_allocated_storage_gb or None,
            storage_type=args.storage_type,
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            multi_az=args.multi_az,
            db_subnet_group_name=args.subnet_group_name,
            vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,
            port=5432,
            parameter_group_name=args.parameter_group_name,
            ca_cert_identifier=args.ca_cert_identifier,
            # A restore takes the source's master user; the password is set right after it.
            username=args.master_username,
            password=pulumi.Output.secret(args.master_password),
            iam_database_authentication_enabled=False,
            backup_retention_period=args.backup_retention_days,
            backup_window=args.backup_window,
            maintenance_window=args.maintenance_window,
            copy_tags_to_snapshot=True,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=False,
            final_snapshot_identifier=f"{args.identifier}-final",
            # Kept after a deletion, so a retired generation stays restorable for its retention.
            delete_automated_backups=False,
            apply_immediately=args.apply_immediately,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=args.kms_key_arn,
            performance_insights_retention_period=args.performance_insights_retention_days,
            monitoring_interval=args.monitoring_interval_seconds,
            monitoring_role_arn=args.monitoring_role_arn,
            enabled_cloudwatch_logs_exports=LOG_EXPORTS,
            restore_to_point_in_time=restore,
            tags={**args.tags, "Name": args.identifier},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                ignore_changes=IGNORED_AFTER_CREATE,
                additional_secret_outputs=["password"],
            ),
        )
        self.identifier = args.identifier
        self.address: pulumi.Output[str] = self.instance.address
        self.register_outputs({"identifier": self.identifier, "address": self.address})
