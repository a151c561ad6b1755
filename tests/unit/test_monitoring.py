"""Monitoring under mocks: exporters on every server, the monitoring role, the monitoring server's
configuration, and the config rules; the renders checked by promtool and amtool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from config import ConfigError
from monitoring import rules as monitoring_rules
from monitoring import server as monitoring_conf
from sandbox import program
from tests.conftest import SECRETS, run_stack
from tests.unit.support import COMMAND, SERVER, IdMocks, command_text, one, password_for, script_param

WEBHOOK = "https://hooks.example.net/services/T000/B000/secret-webhook-token"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
SMTP_PASSWORD = "smtp-password-not-for-logs"
DB_SERVERS = {"prod-g1-primary": "10.0.1.5", "prod-g1-replica-1": "10.0.1.6"}
MONITORING = "prod-monitoring"


def with_receivers(cfg: dict) -> None:
    cfg["pgstack:monitoringWebhookUrl"] = WEBHOOK
    cfg["pgstack:monitoringPagerdutyRoutingKey"] = ROUTING_KEY
    cfg["pgstack:monitoringSmtpPassword"] = SMTP_PASSWORD


@pytest.fixture(scope="module")
def prod() -> program.RunResult:
    return run_stack("prod", edit=with_receivers, mocks=IdMocks())


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing: ./dev installs it (Debian's prometheus / prometheus-alertmanager)")
        pytest.skip(f"{name} is not installed")
    return path


# ---- exporters on every server -------------------------------------------------------------


def test_every_database_server_runs_the_exporters_with_both_secrets_on_stdin_only(prod):
    scrape = prod.outputs["scrape_password"]
    role_password = password_for("prod-role-monitoring", 40)
    for server, ip in DB_SERVERS.items():
        step = one(prod.mocks, COMMAND, f"{server}-exporters")
        text = command_text(step)
        assert script_param(text, "PRIVATE_IP") == ip, f"{server}-exporters: listens on {ip}"
        assert script_param(text, "MONITORING_ROLE") == "monitoring"
        assert program.is_secret(step.inputs["stdin"]), f"{server}-exporters: stdin is not secret"
        assert program.unwrap(step.inputs["stdin"]) == f"{scrape}\n{role_password}\n"
        assert scrape not in text and role_password not in text, f"{server}-exporters: a secret in the command text"
    assert "scrape_password" in prod.secret_outputs


def test_the_primary_exporters_come_after_the_roles_that_create_the_monitoring_role(prod):
    deps = one(prod.mocks, COMMAND, "prod-g1-primary-exporters").options["dependencies"]
    assert "prod-g1-primary-pgbackrest" in deps, deps  # which runs after roles and slots


def test_the_monitoring_role_reads_statistics_and_connects_to_postgres_only(prod):
    sql = program.unwrap(one(prod.mocks, COMMAND, "prod-g1-primary-roles").inputs["stdin"])
    assert "GRANT pg_monitor TO monitoring;" in sql
    assert "GRANT CONNECT ON DATABASE postgres TO monitoring;" in sql
    assert "GRANT readonly TO monitoring" not in sql and "GRANT write TO monitoring" not in sql
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;" in sql
    hba = script_param(command_text(one(prod.mocks, COMMAND, "prod-g1-primary-configure")), "HBA_CONF")
    lines = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    monitoring = [line for line in lines if line[2] == "monitoring"]
    # From the monitoring server only, with TLS, and to the postgres database only.
    assert monitoring == [["hostssl", "postgres", "monitoring", "10.0.1.200/32", "scram-sha-256"]], monitoring
    conf = script_param(command_text(one(prod.mocks, COMMAND, "prod-g1-primary-configure")), "PG_CONF")
    assert "\nshared_preload_libraries = 'pg_stat_statements'\n" in conf
    assert "\nlog_min_duration_statement = 1000\n" in conf


def test_without_a_monitoring_server_the_role_comes_from_the_private_subnet():
    result = run_stack("prod", edit=lambda cfg: cfg.pop("pgstack:monitoring"))
    assert not result.mocks.of_type("pgstack:monitoring_server:MonitoringServer")
    hba = script_param(command_text(one(result.mocks, COMMAND, "prod-g1-primary-configure")), "HBA_CONF")
    assert "hostssl postgres        monitoring      10.0.1.0/24" in hba
    # The exporters run anyway: an existing Prometheus can scrape them.
    assert one(result.mocks, COMMAND, "prod-g1-replica-1-exporters")


# ---- the monitoring server -----------------------------------------------------------------


def test_the_monitoring_server_is_on_the_network_behind_the_firewall(prod):
    server = one(prod.mocks, SERVER, MONITORING)
    assert server.inputs["networks"][0]["ip"] == "10.0.1.200"
    assert server.inputs["firewallIds"], "the monitoring server is not behind the stack firewall"
    assert server.parent == MONITORING


def test_prometheus_scrapes_both_exporters_of_every_server_with_tls_and_basic_auth(prod):
    text = command_text(one(prod.mocks, COMMAND, "prod-monitoring-configure"))
    conf = yaml.safe_load(script_param(text, "PROMETHEUS_YML"))
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    assert set(jobs) == {"node", "postgres"}
    for job, port in (("node", 9100), ("postgres", 9187)):
        spec = jobs[job]
        assert spec["scheme"] == "https" and spec["tls_config"]["ca_file"] == monitoring_conf.CA_FILE
        assert spec["basic_auth"] == {"username": "prometheus", "password_file": monitoring_conf.SCRAPE_PASSWORD_FILE}
        targets = {s["labels"]["server"]: s["targets"] for s in spec["static_configs"]}
        assert targets == {name: [f"{ip}:{port}"] for name, ip in DB_SERVERS.items()}
    assert prod.outputs["scrape_password"] not in text


def test_the_rules_follow_the_thresholds_in_config():
    def edit(cfg: dict) -> None:
        with_receivers(cfg)
        cfg["pgstack:monitoring"]["thresholds"] = {"replicationLagSeconds": 42, "backupFullMaxAgeSeconds": 777}

    result = run_stack("prod", edit=edit)
    rules = yaml.safe_load(
        script_param(command_text(one(result.mocks, COMMAND, "prod-monitoring-configure")), "RULES_YML")
    )
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert "> 42" in exprs["PostgresReplicationLag"], exprs["PostgresReplicationLag"]
    assert "> 777" in exprs["BackupFullTooOld"], exprs["BackupFullTooOld"]


def test_alertmanager_config_is_secret_and_holds_every_receiver(prod):
    step = one(prod.mocks, COMMAND, "prod-monitoring-configure")
    assert program.is_secret(step.inputs["stdin"])
    stdin = program.unwrap(step.inputs["stdin"])
    scrape, _, am = stdin.partition("\n")
    assert scrape == prod.outputs["scrape_password"]
    conf = yaml.safe_load(am)
    receivers = {r["name"]: r for r in conf["receivers"]}
    assert receivers["team"]["webhook_configs"][0]["url"] == WEBHOOK
    assert receivers["team"]["email_configs"][0]["to"] == "ops@hcb.example.net"
    assert "pagerduty_configs" not in receivers["team"]
    assert receivers["page"]["pagerduty_configs"][0]["routing_key"] == ROUTING_KEY
    assert conf["global"]["smtp_auth_password"] == SMTP_PASSWORD
    key = SECRETS["pgstack:alertsPingKey"]
    assert receivers["watchdog"]["webhook_configs"][0]["url"] == f"https://hc-ping.com/{key}/prod-monitoring-watchdog"
    text = command_text(step)
    for secret in (WEBHOOK, ROUTING_KEY, SMTP_PASSWORD, key):
        assert secret not in text, "a receiver secret is in the command text"


def test_the_watchdog_has_a_heartbeat_check_made_before_it_is_sent():
    def edit(cfg: dict) -> None:
        with_receivers(cfg)
        cfg["pgstack:alertsApiKey"] = "test-api-key"
        cfg["pgstack:monitoring"]["server"]["watchdog"] = {"periodSeconds": 120, "graceSeconds": 60}

    result = run_stack("prod", edit=edit)
    deps = one(result.mocks, COMMAND, "prod-monitoring-configure").options["dependencies"]
    assert "prod-heartbeat-checks-api" in deps, deps
    spec = program.unwrap(one(result.mocks, "command:local:Command", "prod-heartbeat-checks-api").inputs["stdin"])
    checks = {c["slug"]: c for c in yaml.safe_load(spec)["checks"]}
    assert (checks["prod-monitoring-watchdog"]["timeout"], checks["prod-monitoring-watchdog"]["grace"]) == (120, 60)


# ---- renders, as the tools read them ---------------------------------------------------------


def _staged_prometheus(tmp_path: Path) -> Path:
    conf = monitoring_conf.PrometheusConf("prod", (monitoring_conf.Target("prod-g1-primary", "10.0.1.5", "g1"),), 15)
    text = monitoring_conf.prometheus_yml(conf).replace(f"{monitoring_conf.ETC}/", f"{tmp_path}/")
    (tmp_path / "prometheus.yml").write_text(text)
    (tmp_path / "pgstack.rules.yml").write_text(monitoring_rules.render(monitoring_rules.Thresholds()))
    (tmp_path / "pgstack-ca.crt").write_text("")
    (tmp_path / "pgstack-scrape.pass").write_text("x\n")
    return tmp_path / "prometheus.yml"


def test_prometheus_yml_passes_promtool(tmp_path):
    proc = subprocess.run(
        [_tool("promtool"), "check", "config", str(_staged_prometheus(tmp_path))], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_refuses_a_broken_prometheus_yml(tmp_path):
    path = _staged_prometheus(tmp_path)
    path.write_text(path.read_text().replace("scrape_interval: 15s", "scrape_interval: fifteen"))
    proc = subprocess.run([_tool("promtool"), "check", "config", str(path)], capture_output=True, text=True)
    assert proc.returncode != 0


def _alertmanager(**kw) -> str:
    base = {"watchdog_url": "https://hc-ping.com/k/prod-monitoring-watchdog", "watchdog_period_seconds": 60}
    return monitoring_conf.alertmanager_yml(monitoring_conf.AlertmanagerConf(**{**base, **kw}))


@pytest.mark.parametrize(
    "kw",
    [
        {"webhook_url": WEBHOOK},
        {"pagerduty_routing_key": ROUTING_KEY},
        {"email": monitoring_conf.Email("ops@example.net", "am@example.net", "smtp.example.net:587", "am", "pw")},
        {"webhook_url": WEBHOOK, "verify_tls": False, "group_wait_seconds": 1, "group_interval_seconds": 5},
    ],
    ids=["webhook", "pagerduty", "email", "rehearsal"],
)
def test_alertmanager_yml_passes_amtool(tmp_path, kw):
    path = tmp_path / "alertmanager.yml"
    path.write_text(_alertmanager(**kw))
    proc = subprocess.run([_tool("amtool"), "check-config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_amtool_refuses_a_broken_alertmanager_yml(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(_alertmanager(webhook_url=WEBHOOK).replace("receiver: team", "receiver: nobody"))
    proc = subprocess.run([_tool("amtool"), "check-config", str(path)], capture_output=True, text=True)
    assert proc.returncode != 0


def test_the_watchdog_goes_only_to_the_heartbeat_and_is_never_resolved():
    conf = yaml.safe_load(_alertmanager(webhook_url=WEBHOOK, pagerduty_routing_key=ROUTING_KEY))
    watchdog = conf["route"]["routes"][0]
    assert watchdog["matchers"] == ['alertname="Watchdog"'] and watchdog["receiver"] == "watchdog"
    # Sent twice per period: a flush every quarter period re-sends it at every second one.
    assert watchdog["repeat_interval"] == "15s" and watchdog["group_interval"] == "15s" and "continue" not in watchdog
    (hook,) = next(r for r in conf["receivers"] if r["name"] == "watchdog")["webhook_configs"]
    assert hook["send_resolved"] is False


# ---- bad config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda cfg: cfg.pop("pgstack:alerts"), "monitoring.server"),
        (lambda cfg: (cfg["pgstack:monitoring"].pop("receivers"), cfg.pop("pgstack:monitoringSmtpPassword")),
         "monitoring.receivers"),
        (lambda cfg: cfg["pgstack:monitoring"]["server"].update({"ip": "10.0.2.9"}), "monitoring.server.ip"),
        (lambda cfg: cfg["pgstack:monitoring"]["server"].update({"ip": "10.0.1.5"}), "monitoring.server.ip"),
        (lambda cfg: cfg["pgstack:monitoring"]["server"].update({"ip": "10.0.1.1"}), "monitoring.server.ip"),
        (lambda cfg: cfg.update({"pgstack:monitoringWebhookUrl": "https://x/a b"}), "monitoringWebhookUrl"),
        (lambda cfg: cfg.update({"pgstack:monitoringPagerdutyRoutingKey": "short"}), "monitoringPagerdutyRoutingKey"),
        (
            lambda cfg: cfg["pgstack:monitoring"].update({"thresholds": {"diskWarningPercent": 95}}),
            "monitoring.thresholds",
        ),
        (lambda cfg: cfg["pgstack:monitoring"]["receivers"]["email"].pop("username"), "monitoringSmtpPassword"),
        (lambda cfg: cfg.pop("pgstack:monitoringSmtpPassword"), "monitoringSmtpPassword"),
        (lambda cfg: (cfg["pgstack:monitoring"].pop("receivers"), cfg.pop("pgstack:monitoringSmtpPassword"),
                      cfg.update({"pgstack:monitoringPagerdutyRoutingKey": ROUTING_KEY})), "monitoring.receivers"),
        (lambda cfg: cfg["pgstack:monitoring"].update({"thresholds": {"archiveMaxAgeSeconds": 300}}),
         "monitoring.thresholds.archiveMaxAgeSeconds"),
    ],
    ids=["no-alerts", "no-receivers", "outside-subnet", "a-db-server-ip", "gateway", "webhook-url", "routing-key",
         "disk-order", "smtp-password-without-user", "smtp-user-without-password", "pagerduty-only",
         "archive-bound-too-low"],
)  # fmt: skip
def test_bad_monitoring_config_is_refused_naming_the_key_before_anything_registers(edit, key):
    def full(cfg: dict) -> None:
        cfg["pgstack:monitoringSmtpPassword"] = SMTP_PASSWORD
        edit(cfg)

    mocks = program.RecordingMocks()
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=full, mocks=mocks)
    assert info.value.key == f"pgstack:{key}", info.value
    assert mocks.registrations == []
    for secret in (SMTP_PASSWORD, WEBHOOK):
        assert secret not in str(info.value)
