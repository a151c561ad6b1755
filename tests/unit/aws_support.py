"""Helpers for the aws tests: run the staging stack with edits, and compare two runs."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from components.preflight.rds import InstanceState
from sandbox import program
from tests.conftest import run_stack
from tests.unit.support import IdMocks, drop_restore, inputs, reg, set_active  # noqa: F401 - re-exported for the aws tests

INSTANCE = "aws:rds/instance:Instance"
RDS_COMPONENT = "pgstack:rds_instance:RdsInstance"
RECORD = "aws:route53/record:Record"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ALARMS = "pgstack:rds_alarms:RdsAlarms"
EVENTS = "pgstack:rds_events:RdsEvents"
EVENT_SUBSCRIPTION = "aws:rds/eventSubscription:EventSubscription"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
PARAMS = "aws:rds/parameterGroup:ParameterGroup"
KMS_KEY = "aws:kms/key:Key"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
TOPIC = "aws:sns/topic:Topic"
REMOTE = "command:remote:Command"
LOCAL = "command:local:Command"
PASSWORD = "random:index/randomPassword:RandomPassword"
RRSET = "hcloud:index/zoneRrset:ZoneRrset"

PAGERDUTY = "https://events.pagerduty.com/integration/0123456789abcdef0123456789abcdef/enqueue"
# A fixed past time: config refuses future restore targets.
TARGET = "2025-01-15T10:00:00+01:00"
TARGET_UTC = "2025-01-15T09:00:00Z"


def run(*edits, mocks: IdMocks | None = None) -> program.RunResult:
    """The staging stack with a PagerDuty endpoint (secret) and `edits` applied in order."""

    def edit(cfg: dict) -> None:
        cfg["pgstack:pagerdutyEndpoint"] = PAGERDUTY
        for e in edits:
            e(cfg)

    return run_stack("staging", edit=edit, mocks=mocks or IdMocks())


@functools.cache
def base() -> program.RunResult:
    """The unedited staging stack, run once per test session (the runs are the slow part)."""
    return run()


def add_restore(gen: str = "g2", source: str = "g1", target: str = TARGET):
    def edit(cfg: dict) -> None:
        cfg["pgstack:clusters"][gen] = {"restore": {"from": source, "targetTime": target}}

    return edit


def set_aws(**values):
    def edit(cfg: dict) -> None:
        cfg["pgstack:aws"].update(values)

    return edit


def snapshot(result: program.RunResult) -> dict[tuple[str, str], dict[str, Any]]:
    """Every registration's inputs, with ids replaced by resource names (ids differ per run)."""
    mocks = result.mocks
    assert isinstance(mocks, IdMocks)
    return {(r.type, r.name): mocks.normalize(r.inputs) for r in mocks.registrations}


@dataclass
class Diff:
    appeared: set[tuple[str, str]]
    gone: set[tuple[str, str]]
    changed: dict[tuple[str, str], set[str]]  # resource -> the input keys that differ


def diff(before: program.RunResult, after: program.RunResult) -> Diff:
    a, b = snapshot(before), snapshot(after)
    changed = {}
    for key in a.keys() & b.keys():
        keys = {k for k in a[key].keys() | b[key].keys() if a[key].get(k) != b[key].get(k)}
        if keys:
            changed[key] = keys
    return Diff(set(b) - set(a), set(a) - set(b), changed)


class FakeInspector:
    """An RdsInspector from plain data, for tests that need no AWS API at all."""

    def __init__(
        self,
        instances: dict[str, InstanceState] | None = None,
        windows: dict[str, tuple[dt.datetime, dt.datetime]] | None = None,
    ):
        self.instances = instances or {}
        self.windows = windows or {}
        self.asked: list[str] = []

    def instance(self, identifier: str) -> InstanceState | None:
        self.asked.append(identifier)
        return self.instances.get(identifier)

    def restore_window(self, identifier: str) -> tuple[dt.datetime, dt.datetime] | None:
        return self.windows.get(identifier)
