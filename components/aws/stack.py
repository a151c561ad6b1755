"""build_aws(settings): target aws, PostgreSQL on RDS (seed 001).

Per stack: an explicit AWS provider (the region of the config, which the boto3 checks use too),
RdsBase (KMS key, subnet group, security group, parameter group, monitoring role, master
password) and AlertTopics. Per generation: RdsInstance and the role setup, run on the bastion.
For the active generation: RdsAlarms, the DnsCutover weight, and CutoverStop for the
previously active instance. Restores are checked against RDS before anything is registered
(components.preflight).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components.preflight.rds import rds_restore_time
from components.shared import remote
from components.shared.credentials import Credentials
from components.shared.dns_cutover import DnsCutover, DnsCutoverArgs
from components.shared.roles import database_url, login_versions, role_model
from config import Settings
from postgres.layout import layout

from . import rds_base
from .alert_topics import AlertTopics, AlertTopicsArgs
from .rds_alarms import Level, RdsAlarms, RdsAlarmsArgs
from .rds_base import RdsBase, RdsBaseArgs
from .rds_cutover_stop import CutoverStop, CutoverStopArgs
from .rds_events import RdsEvents, RdsEventsArgs
from .rds_instance import RdsInstance, RdsInstanceArgs, RestoreSource


@dataclass
class BastionSsh(remote.Ssh):
    """SSH to the bastion: like a Hetzner server, but as its own (non-root) user."""

    user: str = "ec2-user"

    def connection(self) -> command.remote.ConnectionArgs:
        return command.remote.ConnectionArgs(
            host=self.host,
            user=self.user,
            private_key=pulumi.Output.secret(self.private_key),
            dial_error_limit=30,
        )


def ca_bundle_url(region: str) -> str:
    return f"https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem"


def build_aws(settings: Settings) -> None:
    cfg = settings.aws
    assert cfg is not None  # config.rules guarantees it for target aws
    pg = layout(settings.postgres.version)

    stack = settings.stack
    tags = {"pgstack-stack": stack, **cfg.tags}
    provider = aws.Provider(f"{stack}-aws", region=cfg.region, default_tags=aws.ProviderDefaultTagsArgs(tags=tags))
    with_aws = pulumi.ResourceOptions(providers=[provider])

    base = RdsBase(
        f"{stack}-rds",
        RdsBaseArgs(
            vpc_id=cfg.vpc_id,
            subnet_ids=list(cfg.subnet_ids),
            allowed_security_group_ids=sorted(
                {
                    *cfg.allowed_security_group_ids,
                    *([cfg.bastion.security_group_id] if cfg.bastion.security_group_id else []),
                }
            ),
            allowed_cidrs=list(cfg.allowed_cidrs),
            family=pg.rds_family,
            parameters=rds_base.parameters(settings.max_connections, dict(settings.postgresql)),
            kms_key_arn=cfg.kms_key_arn,
        ),
        with_aws,
    )
    topics = AlertTopics(
        f"{stack}-alerts",
        AlertTopicsArgs(
            warning_emails=list(cfg.alarms.warning_emails),
            pagerduty_endpoint=pulumi.Output.secret(settings.pagerduty_endpoint)
            if settings.pagerduty_endpoint
            else None,
        ),
        with_aws,
    )

    creds = Credentials(f"{stack}-role", login_versions(settings, replicator=False))
    role_sql = role_model(settings, creds, replicator=False)
    # The script reads the first line into PGPASSWORD; the rest is psql's input.
    roles_stdin: pulumi.Output[str] = pulumi.Output.secret(
        pulumi.Output.all(base.master_password, role_sql).apply(lambda parts: f"{parts[0]}\n{parts[1]}")
    )
    bastion = BastionSsh(
        host=cfg.bastion.host, private_key=pulumi.Output.secret(settings.ssh_private_key or ""), user=cfg.bastion.user
    )

    instances: dict[str, RdsInstance] = {}
    # Sources first, so a restore can name (and depend on) its source's instance.
    for gen in _creation_order(settings):
        cluster = settings.clusters[gen]
        ident = cfg.identifier(stack, gen)
        restore = None
        depends: list[pulumi.Resource] = []
        if cluster.restore is not None:
            target = cluster.restore.target()
            source = instances[cluster.restore.source]
            restore = RestoreSource(
                source_identifier=source.instance.identifier,
                restore_time=rds_restore_time(target) if target is not None else None,
            )
            depends.append(source.instance)
        inst = RdsInstance(
            f"{stack}-{gen}",
            RdsInstanceArgs(
                identifier=ident,
                instance_class=cfg.instance_class,
                engine_version=cfg.engine_version,
                master_username=cfg.master_username,
                master_password=base.master_password,
                kms_key_arn=base.kms_key_arn,
                subnet_group_name=base.subnet_group.name,
                security_group_id=base.security_group.id,
                parameter_group_name=base.parameter_group.name,
                monitoring_role_arn=base.monitoring_role.arn,
                allocated_storage_gb=cfg.allocated_storage_gb,
                max_allocated_storage_gb=cfg.max_allocated_storage_gb,
                storage_type=cfg.storage_type,
                multi_az=cfg.multi_az,
                backup_retention_days=cfg.backup_retention_days,
                backup_window=cfg.backup_window,
                maintenance_window=cfg.maintenance_window,
                auto_minor_version_upgrade=cfg.auto_minor_version_upgrade,
                apply_immediately=cfg.apply_immediately,
                performance_insights_retention_days=cfg.performance_insights_retention_days,
                monitoring_interval_seconds=cfg.monitoring_interval_seconds,
                ca_cert_identifier=cfg.ca_cert_identifier,
                deletion_protection=cluster.delete_protection,
                restore=restore,
                tags={"pgstack-cluster": gen},
                depends_on=[*depends, base.monitoring_policy],
            ),
            with_aws,
        )
        instances[gen] = inst
        # Every generation gets the current roles and passwords: a restore brings back the ones
        # of its restore time.
        remote.step(
            f"{stack}-{gen}-roles",
            bastion,
            "rds_roles",
            inst.address.apply(
                lambda host: {
                    "PG_VERSION": pg.version,
                    "DB_HOST": host,
                    "DB_PORT": 5432,
                    "MASTER_USER": cfg.master_username,
                    "SSL_MODE": cfg.bastion.ssl_mode,
                    "CA_BUNDLE_URL": ca_bundle_url(cfg.region),
                }
            ),
            inst,
            [inst.instance],
            stdin=roles_stdin,
        )

    active = instances[settings.active]
    alarms = cfg.alarms
    limit = settings.max_connections
    RdsAlarms(
        f"{stack}-{settings.active}-alarms",
        RdsAlarmsArgs(
            identifier=active.identifier,
            warning=Level(
                alarms.cpu_percent.warning,
                alarms.freeable_memory_mb.warning,
                round(limit * alarms.connections_percent.warning / 100),
                alarms.free_storage_gb.warning,
            ),
            critical=Level(
                alarms.cpu_percent.critical,
                alarms.freeable_memory_mb.critical,
                round(limit * alarms.connections_percent.critical / 100),
                alarms.free_storage_gb.critical,
            ),
            warning_topic_arn=topics.warning.arn,
            critical_topic_arn=topics.critical.arn,
            period_seconds=alarms.period_seconds,
            evaluation_periods=alarms.evaluation_periods,
        ),
        pulumi.ResourceOptions(providers=[provider], depends_on=[active]),
    )
    # The push side for RDS: AWS's own events of the active instance, to the paging topic.
    RdsEvents(
        f"{stack}-{settings.active}-events",
        RdsEventsArgs(identifier=active.identifier, topic_arn=topics.critical.arn),
        pulumi.ResourceOptions(providers=[provider], depends_on=[active]),
    )

    host: pulumi.Input[str] = active.address
    switched: list[pulumi.Resource] = [active.instance]
    if settings.dns is not None:
        cutover = DnsCutover(
            f"{stack}-cutover",
            DnsCutoverArgs(
                dns=settings.dns,
                targets={gen: inst.address for gen, inst in instances.items()},
                active=settings.active,
                record_type="CNAME",
            ),
            with_aws,
        )
        host = cutover.fqdn
        switched += list(cutover.records.values())
    if cfg.stop_previous_on_cutover:
        CutoverStop(
            f"{stack}-cutover-stop",
            CutoverStopArgs(
                region=cfg.region,
                active_identifier=active.identifier,
                active_generation=settings.active,
                depends_on=switched,
            ),
        )

    app = creds[settings.roles.app.name]
    pulumi.export("active_cluster", settings.active)
    pulumi.export("active_endpoint", active.address)
    pulumi.export("endpoints", {gen: inst.address for gen, inst in instances.items()})
    if settings.dns is not None:
        pulumi.export("dns_name", host)
    pulumi.export("master_username", cfg.master_username)
    # sslmode=require, not verify-full: through the CNAME the host name differs from the one in
    # the instance certificate. Clients that verify connect to active_endpoint instead.
    pulumi.export("database_url", database_url(settings.roles.app.name, app.password, host, settings.database.name))


def _creation_order(settings: Settings) -> list[str]:
    """Generations with every restore source before the generations restored from it."""
    order: list[str] = []

    def visit(gen: str) -> None:
        if gen in order:
            return
        restore = settings.clusters[gen].restore
        if restore is not None:
            visit(restore.source)  # config.rules refuses cycles
        order.append(gen)

    for gen in sorted(settings.clusters):
        visit(gen)
    return order
