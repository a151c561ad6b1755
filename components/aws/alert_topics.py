"""AlertTopics: the two SNS topics alarms publish to, warning and critical (seed 001).

Warnings go to email. Critical alarms go to PagerDuty through its HTTPS CloudWatch integration.
The endpoint URL embeds the integration key, so it stays a secret input and output. Without a
PagerDuty endpoint, the critical topic mails the warning addresses too, so a critical alarm
still reaches someone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class AlertTopicsArgs:
    warning_emails: list[str]
    pagerduty_endpoint: pulumi.Input[str] | None = None  # secret


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", value).strip("-")


class AlertTopics(pulumi.ComponentResource):
    def __init__(self, name: str, args: AlertTopicsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:alert_topics:AlertTopics", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Not KMS-encrypted: CloudWatch cannot publish to a topic under the AWS-managed SNS key,
        # and alarm messages carry metric values, not data.
        self.warning = aws.sns.Topic(f"{name}-warning", name=f"{name}-warning", opts=child)
        self.critical = aws.sns.Topic(f"{name}-critical", name=f"{name}-critical", opts=child)

        def email(topic: aws.sns.Topic, level: str, address: str) -> None:
            aws.sns.TopicSubscription(
                f"{name}-{level}-{_slug(address)}", topic=topic.arn, protocol="email", endpoint=address, opts=child
            )

        for address in args.warning_emails:
            email(self.warning, "warning", address)
        if args.pagerduty_endpoint is not None:
            aws.sns.TopicSubscription(
                f"{name}-critical-pagerduty",
                topic=self.critical.arn,
                protocol="https",
                endpoint=pulumi.Output.secret(args.pagerduty_endpoint),
                # PagerDuty confirms the subscription itself.
                endpoint_auto_confirms=True,
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["endpoint"]),
            )
        else:
            for address in args.warning_emails:
                email(self.critical, "critical", address)
        self.register_outputs({"warning_arn": self.warning.arn, "critical_arn": self.critical.arn})
