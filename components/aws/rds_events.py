"""RdsEvents: the RDS instance events that mean trouble, pushed to the critical SNS topic.

RDS backups are AWS's job, so no heartbeat watches them; RDS says itself when an instance fails.
The categories, and why (the README's Alerting section lists them too):

- failure: the instance failed, or cannot be recovered or started (e.g. RDS-EVENT-0031, 0035);
- failover: a Multi-AZ failover started or completed (0013, 0015, 0049): clients were cut off;
- low storage: the allocated storage is nearly used up (0007, 0089): writes stop when it is;
- recovery: RDS is recovering the instance after a failure (0020, 0021, 0023);
- backup is left out on purpose: it reports every routine automated backup (start, finish), which
  would page daily; the free-storage alarms and the failure category cover what stops a backup.

Like the alarms, on the active generation only: a restored instance under inspection, or a stopped
previous one, must not page anybody.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

CATEGORIES = ["failure", "failover", "low storage", "recovery"]


@dataclass
class RdsEventsArgs:
    identifier: str
    topic_arn: pulumi.Input[str]


class RdsEvents(pulumi.ComponentResource):
    def __init__(self, name: str, args: RdsEventsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:rds_events:RdsEvents", name, None, opts)
        self.subscription = aws.rds.EventSubscription(
            f"{name}-critical",
            name=f"{args.identifier}-critical-events",
            sns_topic=args.topic_arn,
            source_type="db-instance",
            source_ids=[args.identifier],
            event_categories=list(CATEGORIES),
            enabled=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"arn": self.subscription.arn})
