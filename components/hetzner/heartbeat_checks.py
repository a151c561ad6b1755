"""HeartbeatChecks: the checks of every server's heartbeats, and how a server reaches them.

Each server reports its jobs (alive, archive, replication, backup-full, backup-diff, drill, verify,
logical-dump) to a
Healthchecks-compatible service; the check of a job is `<stack>-<generation>-<server>-<job>`
(prod-g1-primary-backup-full), so a new generation gets its own checks. With an API key, this
component creates or updates the checks through the management API, by a pulumi-command
local.Command (a preview changes nothing) that runs components.healthchecks_api with the key and
the check list on stdin, never in its command text. It runs again when the list or the key
changes. Without an API key, no resource is made: the README lists the checks to create by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from config.model import AlertJob, Alerts

# The project's virtualenv (Pulumi.yaml: runtime.options.virtualenv), relative to the project
# directory the command provider runs in.
PYTHON = ".venv/bin/python"

# job -> what its check says when it alerts (the check's description on the service).
JOBS = {
    "alive": "the server or its PostgreSQL stopped answering (every server, every alive period)",
    "archive": "WAL archiving is behind the bound or a WAL gap is open (the primary)",
    "replication": "the replica does not stream, or its replay lag is above the bound (each replica)",
    "backup-full": "the weekly full backup failed or did not run (the primary)",
    "backup-diff": "a differential backup failed or did not run (the primary)",
    "drill": "the restore drill failed or did not run (the drill server: the first replica, or the primary)",
    "verify": "pgbackrest verify found damage in the repository, or did not run (the primary)",
    "logical-dump": "the logical dump failed or did not run (the first replica, or the primary while that replica "
    "does not stream)",
}


def job_settings(alerts: Alerts, job: str) -> AlertJob:
    jobs = alerts.jobs
    return {
        "alive": jobs.alive,
        "archive": jobs.archive,
        "replication": jobs.replication,
        "backup-full": jobs.backup_full,
        "backup-diff": jobs.backup_diff,
        "drill": jobs.drill,
        "verify": jobs.verify,
        "logical-dump": jobs.logical_dump,
    }[job]


def server_jobs(backups: bool, logical_dump: bool = False) -> list[str]:
    """Every server gets every check: a job reports where it applies (archive and backups on the
    primary, replication on a standby), so after a promotion the same checks carry on. A check
    that never got a ping stays "new", and Healthchecks does not alert on it (the drill reports only
    from the drill server, the logical dump from the server that takes it)."""
    jobs = ["alive", "replication", *(["archive", "backup-full", "backup-diff", "drill", "verify"] if backups else [])]
    return jobs + (["logical-dump"] if backups and logical_dump else [])


def watchdog_check(alerts: Alerts, slug: str, period_seconds: int, grace_seconds: int) -> dict[str, str | int]:
    """The monitoring server's Watchdog: Alertmanager sends it every period, so silence means the
    server, Prometheus or Alertmanager is gone."""
    return {
        "name": slug,
        "slug": slug,
        "timeout": period_seconds,
        "grace": grace_seconds,
        "tags": f"{alerts.tags} monitoring".strip(),
        "desc": "pgstack: alerts when the monitoring server's Watchdog stops (the server, Prometheus or "
        "Alertmanager is down, so no other alert would come)",
    }


def checks(
    alerts: Alerts,
    servers: list[str],
    backups: bool,
    extra: list[dict[str, str | int]] | None = None,
    logical_dump: bool = False,
) -> list[dict[str, str | int]]:
    out: list[dict[str, str | int]] = []
    for server in servers:
        for job in server_jobs(backups, logical_dump):
            spec = job_settings(alerts, job)
            slug = f"{server}-{job}"
            out.append(
                {
                    "name": slug,
                    "slug": slug,
                    "timeout": spec.period_seconds,
                    "grace": spec.grace_seconds,
                    "tags": f"{alerts.tags} {server}".strip(),
                    "desc": f"pgstack: alerts when {JOBS[job]}",
                }
            )
    return out + list(extra or [])


@dataclass
class HeartbeatChecksArgs:
    alerts: Alerts
    servers: list[str]  # server names, <stack>-<generation>-<role>
    backups: bool
    api_key: pulumi.Input[str] | None  # secret; None: the checks are made by hand
    verify_tls: bool = True
    extra: list[dict[str, str | int]] | None = None  # checks of no database server (the Watchdog)
    logical_dump: bool = False  # the logicalBackup block is set


class HeartbeatChecks(pulumi.ComponentResource):
    def __init__(self, name: str, args: HeartbeatChecksArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:heartbeat_checks:HeartbeatChecks", name, None, opts)
        self.checks = checks(args.alerts, args.servers, args.backups, args.extra, args.logical_dump)
        self.command: command.local.Command | None = None
        if args.api_key is not None:
            api_url = args.alerts.api_url
            check_list = self.checks
            spec: pulumi.Output[str] = pulumi.Output.secret(args.api_key).apply(
                lambda key: json.dumps({"api_url": api_url, "api_key": key, "checks": check_list}, sort_keys=True)
            )
            text = f"{PYTHON} -m components.healthchecks_api" + ("" if args.verify_tls else " --insecure")
            self.command = command.local.Command(
                f"{name}-api",
                create=text,
                # The checks are not secret: a changed list shows in the diff as a changed trigger.
                triggers=[api_url, json.dumps(check_list, sort_keys=True)],
                stdin=spec,  # secret: it holds the API key
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"checks": [c["slug"] for c in self.checks]})
