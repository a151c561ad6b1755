"""RdsBase: what every RDS generation of a stack shares.

The KMS key, the subnet group, the security group (5432 from the configured sources only), the
parameter group (TLS forced, logging), the enhanced-monitoring role and the master password.
They are shared so that a restored generation gets the same network, key, settings and
password as its source, and a cutover changes nothing but which instance clients reach.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

POSTGRES_PORT = 5432
ENHANCED_MONITORING_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"

# (value, apply method). Logging follows seed 001: slow statements, connections, locks, temp
# files and DDL reach the CloudWatch postgresql log group. The log_* settings are dynamic.
# The rest use pending-reboot, which RDS accepts for static and dynamic settings alike. A new
# instance starts with its whole group applied either way.
DEFAULT_PARAMETERS: dict[str, tuple[str, str]] = {
    "rds.force_ssl": ("1", "pending-reboot"),
    "ssl_min_protocol_version": ("TLSv1.2", "pending-reboot"),
    "password_encryption": ("scram-sha-256", "pending-reboot"),
    "log_min_duration_statement": ("1000", "immediate"),
    "log_connections": ("1", "immediate"),
    "log_disconnections": ("1", "immediate"),
    "log_lock_waits": ("1", "immediate"),
    "log_temp_files": ("10240", "immediate"),
    "log_autovacuum_min_duration": ("10000", "immediate"),
    "log_statement": ("ddl", "immediate"),
}


def parameters(max_connections: int, overrides: dict[str, str]) -> dict[str, tuple[str, str]]:
    """The parameter group's settings: pgstack's defaults, then `pgstack:postgresql` overrides.

    config.rules refuses overrides of the TLS, password and connection settings.
    """
    params = dict(DEFAULT_PARAMETERS)
    params["max_connections"] = (str(max_connections), "pending-reboot")
    for name, value in overrides.items():
        params[name] = (value, "immediate" if name.startswith("log_") else "pending-reboot")
    return params


@dataclass
class RdsBaseArgs:
    vpc_id: str
    subnet_ids: list[str]
    allowed_security_group_ids: list[str]
    allowed_cidrs: list[str]
    # The parameter group family of the major version (postgres.layout: postgres15).
    family: str
    parameters: dict[str, tuple[str, str]]
    # None: create a key for the stack.
    kms_key_arn: str | None = None


def _slug(value: str) -> str:
    """A resource-name-safe form of a CIDR or an id: stable, so URNs survive reordering."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", value).strip("-")


class RdsBase(pulumi.ComponentResource):
    def __init__(self, name: str, args: RdsBaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:rds_base:RdsBase", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.kms_key: aws.kms.Key | None = None
        if args.kms_key_arn is None:
            # Removing the key from the program must never schedule its deletion: every instance
            # and snapshot encrypted with it would become unreadable. Kept in AWS instead.
            self.kms_key = aws.kms.Key(
                f"{name}-key",
                description=f"pgstack {name}: RDS storage and Performance Insights",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
            aws.kms.Alias(
                f"{name}-key-alias", name=f"alias/pgstack-{name}", target_key_id=self.kms_key.key_id, opts=child
            )
            self.kms_key_arn: pulumi.Output[str] = self.kms_key.arn
        else:
            self.kms_key_arn = pulumi.Output.from_input(args.kms_key_arn)

        self.subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=list(args.subnet_ids),
            description=f"pgstack {name}: private subnets of {args.vpc_id}",
            opts=child,
        )

        # No inline rules (they fight separate rule resources) and no egress: RDS answers on
        # established connections and needs nothing else.
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
            description=f"pgstack {name}: PostgreSQL from the configured sources only",
            opts=child,
        )
        self.ingress: list[aws.vpc.SecurityGroupIngressRule] = []
        for sg in args.allowed_security_group_ids:
            self.ingress.append(
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-from-{_slug(sg)}",
                    security_group_id=self.security_group.id,
                    referenced_security_group_id=sg,
                    ip_protocol="tcp",
                    from_port=POSTGRES_PORT,
                    to_port=POSTGRES_PORT,
                    description=f"PostgreSQL from {sg}",
                    opts=child,
                )
            )
        for cidr in args.allowed_cidrs:
            ipv6 = ":" in cidr
            self.ingress.append(
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-from-{_slug(cidr)}",
                    security_group_id=self.security_group.id,
                    ip_protocol="tcp",
                    from_port=POSTGRES_PORT,
                    to_port=POSTGRES_PORT,
                    description=f"PostgreSQL from {cidr}",
                    opts=child,
                    cidr_ipv4=None if ipv6 else cidr,
                    cidr_ipv6=cidr if ipv6 else None,
                )
            )

        self.parameter_group = aws.rds.ParameterGroup(
            f"{name}-params",
            family=args.family,
            description=f"pgstack {name}: TLS only, SCRAM, logging",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name=k, value=v, apply_method=m)
                for k, (v, m) in sorted(args.parameters.items())
            ],
            opts=child,
        )

        self.monitoring_role = aws.iam.Role(
            f"{name}-monitoring",
            description=f"pgstack {name}: RDS enhanced monitoring",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "monitoring.rds.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            opts=child,
        )
        self.monitoring_policy = aws.iam.RolePolicyAttachment(
            f"{name}-monitoring-policy",
            role=self.monitoring_role.name,
            policy_arn=ENHANCED_MONITORING_POLICY,
            opts=child,
        )

        # One master password for every generation: a restored instance is set to it after the
        # restore, so the role setup and the runbooks never need to know which generation it is.
        master = random.RandomPassword(
            f"{name}-master-password",
            length=40,
            # RDS refuses / " @ and spaces; alphanumerics are also URL- and shell-safe.
            special=False,
            keepers={"version": "1"},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]),
        )
        self.master_password: pulumi.Output[str] = pulumi.Output.secret(master.result)

        self.register_outputs(
            {
                "kms_key_arn": self.kms_key_arn,
                "security_group_id": self.security_group.id,
                "subnet_group_name": self.subnet_group.name,
                "parameter_group_name": self.parameter_group.name,
                "monitoring_role_arn": self.monitoring_role.arn,
            }
        )
