"""The monitoring server's configuration: prometheus.yml and alertmanager.yml, as pure renders.

Prometheus scrapes both exporters of every server over TLS (the stack CA) with basic auth, and
labels each target with the server's name (`instance` and `server`), so an alert names the
server, not an address. Alertmanager sends everything to the team's receivers, critical alerts
to PagerDuty as well, and the always-firing Watchdog to the heartbeat service only: when the
monitoring server or its pipeline dies, the heartbeat goes late and alerts from outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

# Where the monitoring step puts what the renders refer to (components/scripts/monitoring.sh).
ETC = "/etc/prometheus"
CA_FILE = f"{ETC}/pgstack-ca.crt"
SCRAPE_PASSWORD_FILE = f"{ETC}/pgstack-scrape.pass"
RULES_FILE = f"{ETC}/pgstack.rules.yml"
SCRAPE_USER = "prometheus"
EXPORTER_PORTS = {"node": 9100, "postgres": 9187}


@dataclass(frozen=True)
class Target:
    server: str  # <stack>-<generation>-<role>
    ip: str
    generation: str


@dataclass(frozen=True)
class PrometheusConf:
    stack: str
    targets: tuple[Target, ...]
    scrape_interval_seconds: int = 30


def prometheus_yml(conf: PrometheusConf) -> str:
    interval = f"{conf.scrape_interval_seconds}s"
    jobs = []
    for job, port in EXPORTER_PORTS.items():
        relabel = (
            # postgres_exporter labels its own metrics server="<its DSN host:port>": the target's
            # server label (the server's name) is the one alerts name.
            {"metric_relabel_configs": [{"action": "labeldrop", "regex": "exported_server"}]}
            if job == "postgres"
            else {}
        )
        jobs.append(
            {
                "job_name": job,
                "scheme": "https",
                # The servers' certificates name their private IP, which is what is dialled.
                "tls_config": {"ca_file": CA_FILE},
                "basic_auth": {"username": SCRAPE_USER, "password_file": SCRAPE_PASSWORD_FILE},
                "static_configs": [
                    {
                        "targets": [f"{t.ip}:{port}"],
                        "labels": {"instance": t.server, "server": t.server, "generation": t.generation},
                    }
                    for t in conf.targets
                ],
                **relabel,
            }
        )
    doc = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"stack": conf.stack},
        },
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]},
        "scrape_configs": jobs,
    }
    return "# Rendered by pgstack: edits are overwritten on the next `pulumi up`.\n" + yaml.safe_dump(
        doc, sort_keys=False
    )


@dataclass(frozen=True)
class Email:
    to: str
    sender: str
    smarthost: str
    username: str | None = None
    password: str | None = None  # secret


@dataclass(frozen=True)
class AlertmanagerConf:
    """Secret as a whole once rendered: it may hold the webhook URL, SMTP password, routing key."""

    watchdog_url: str  # the heartbeat check's ping URL (holds the ping key)
    watchdog_period_seconds: int
    email: Email | None = None
    webhook_url: str | None = None
    pagerduty_routing_key: str | None = None
    group_wait_seconds: int = 30
    group_interval_seconds: int = 300
    repeat_interval_seconds: int = 4 * 3600
    verify_tls: bool = True  # false only in the rehearsal (self-signed receivers)
    group_by: tuple[str, ...] = field(default=("alertname", "instance"))


def _http_config(verify: bool) -> dict[str, object]:
    return {} if verify else {"http_config": {"tls_config": {"insecure_skip_verify": True}}}


def alertmanager_yml(conf: AlertmanagerConf) -> str:
    team: dict[str, object] = {"name": "team"}
    if conf.email is not None:
        team["email_configs"] = [{"to": conf.email.to, "send_resolved": True}]
    if conf.webhook_url is not None:
        team["webhook_configs"] = [{"url": conf.webhook_url, "send_resolved": True, **_http_config(conf.verify_tls)}]
    page = {**team, "name": "page"}
    if conf.pagerduty_routing_key is not None:
        page["pagerduty_configs"] = [{"routing_key": conf.pagerduty_routing_key, "send_resolved": True}]
    # Alertmanager re-sends only at a group flush more than repeat_interval after the last send,
    # so every second flush (measured: every 20 s with both at 10 s): at a quarter of the period,
    # a Watchdog goes out twice per period.
    period = f"{max(1, conf.watchdog_period_seconds // 4)}s"
    doc: dict[str, object] = {}
    if conf.email is not None:
        smtp: dict[str, object] = {
            "smtp_smarthost": conf.email.smarthost,
            "smtp_from": conf.email.sender,
            "smtp_require_tls": True,
        }
        if conf.email.username is not None:
            smtp["smtp_auth_username"] = conf.email.username
            smtp["smtp_auth_password"] = conf.email.password or ""
        doc["global"] = smtp
    doc["route"] = {
        "receiver": "team",
        "group_by": list(conf.group_by),
        "group_wait": f"{conf.group_wait_seconds}s",
        "group_interval": f"{conf.group_interval_seconds}s",
        "repeat_interval": f"{conf.repeat_interval_seconds}s",
        "routes": [
            # Sent on every period, never resolved: each send is the heartbeat's ping.
            {
                "matchers": ['alertname="Watchdog"'],
                "receiver": "watchdog",
                "group_wait": "0s",
                "group_interval": period,
                "repeat_interval": period,
            },
            {"matchers": ['severity="critical"'], "receiver": "page"},
        ],
    }
    doc["receivers"] = [
        team,
        page,
        {
            "name": "watchdog",
            "webhook_configs": [{"url": conf.watchdog_url, "send_resolved": False, **_http_config(conf.verify_tls)}],
        },
    ]
    return "# Rendered by pgstack: edits are overwritten on the next `pulumi up`.\n" + yaml.safe_dump(
        doc, sort_keys=False
    )
