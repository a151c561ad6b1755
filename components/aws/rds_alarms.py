"""RdsAlarms: CPU, freeable memory, connections and free storage of one RDS instance, each at two levels.

Warning alarms publish to the warning topic (email), critical ones to the critical topic
(PagerDuty). The OK transition goes to the same topic, so a PagerDuty incident resolves itself.
pgstack puts them on the active generation only. A restored instance under inspection, or a
stopped previous one, must not page anybody.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class Level:
    cpu_percent: float
    freeable_memory_mb: float
    connections: float  # absolute count
    free_storage_gb: float = 0  # GiB; 0: no storage alarm at this level


@dataclass
class RdsAlarmsArgs:
    identifier: str
    warning: Level
    critical: Level
    warning_topic_arn: pulumi.Input[str]
    critical_topic_arn: pulumi.Input[str]
    period_seconds: int = 60
    evaluation_periods: int = 5


class RdsAlarms(pulumi.ComponentResource):
    def __init__(self, name: str, args: RdsAlarmsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:rds_alarms:RdsAlarms", name, None, opts)
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        for level, thresholds, topic in (
            ("warning", args.warning, args.warning_topic_arn),
            ("critical", args.critical, args.critical_topic_arn),
        ):
            for what, metric, comparison, threshold, unit_hint in (
                ("cpu", "CPUUtilization", "GreaterThanOrEqualToThreshold", thresholds.cpu_percent, "%"),
                (
                    "memory",
                    "FreeableMemory",
                    "LessThanOrEqualToThreshold",
                    thresholds.freeable_memory_mb * MIB,
                    f" bytes ({thresholds.freeable_memory_mb:g} MiB)",
                ),
                ("connections", "DatabaseConnections", "GreaterThanOrEqualToThreshold", thresholds.connections, ""),
                (
                    "storage",
                    "FreeStorageSpace",
                    "LessThanOrEqualToThreshold",
                    thresholds.free_storage_gb * GIB,
                    f" bytes ({thresholds.free_storage_gb:g} GiB)",
                ),
            ):
                if what == "storage" and not thresholds.free_storage_gb:
                    continue
                key = f"{what}-{level}"
                self.alarms[key] = aws.cloudwatch.MetricAlarm(
                    f"{name}-{key}",
                    name=f"{args.identifier}-{key}",
                    alarm_description=(
                        f"pgstack {level}: {metric} of {args.identifier} "
                        f"{'>=' if 'Greater' in comparison else '<='} {threshold:g}{unit_hint}"
                    ),
                    namespace="AWS/RDS",
                    metric_name=metric,
                    dimensions={"DBInstanceIdentifier": args.identifier},
                    statistic="Average" if what != "connections" else "Maximum",
                    period=args.period_seconds,
                    evaluation_periods=args.evaluation_periods,
                    threshold=threshold,
                    comparison_operator=comparison,
                    treat_missing_data="missing",
                    alarm_actions=[topic],
                    ok_actions=[topic],
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.register_outputs({})
