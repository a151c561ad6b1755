"""Target aws under mocks: every security-relevant setting of the staging stack (seed 001)."""

from __future__ import annotations

import json

import pytest

from components import preflight
from components.aws import rds_instance
from sandbox import program
from sandbox import render as render_mod
from tests.unit import aws_support as s
from tests.unit.support import password_for
from tests.unit.test_provider_schema import check_resource

ANYWHERE = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def staging():
    return s.base()


@pytest.fixture(scope="module")
def variant():
    """Several independent switches in one run (the tests stay fast)."""
    return s.run(
        s.set_aws(
            kmsKeyArn="arn:aws:kms:eu-west-2:123456789012:key/11111111-2222-3333-4444-555555555555",
            autoMinorVersionUpgrade=True,
            stopPreviousOnCutover=False,
            allowedCidrs=["10.20.0.0/16", "2001:db8::/56"],
        ),
        lambda cfg: cfg.pop("pgstack:pagerdutyEndpoint"),
        lambda cfg: cfg.update({"pgstack:postgresql": {"log_min_duration_statement": "250"}}),
        # Step 1 of retiring a generation.
        lambda cfg: cfg["pgstack:clusters"]["g1"].update(deleteProtection=False),
    )


def db(result) -> dict:
    return s.inputs(result, s.INSTANCE, "staging-g1-db")


def test_instance_is_postgres_15_encrypted_with_the_stack_key(staging):
    i = db(staging)
    assert (i["engine"], i["engineVersion"]) == ("postgres", "15")
    assert i["storageEncrypted"] is True
    key = s.reg(staging, s.KMS_KEY, "staging-rds-key")
    assert i["kmsKeyId"] == key.outputs["arn"] == i["performanceInsightsKmsKeyId"]
    assert s.inputs(staging, s.KMS_KEY, "staging-rds-key")["enableKeyRotation"] is True
    # Removing the key from the program must not schedule its deletion.
    assert key.options["retainOnDelete"] is True


def test_backups_deletion_protection_and_final_snapshot(staging, variant):
    assert db(variant)["deletionProtection"] is False, "deleteProtection: false is how a generation is retired"
    i = db(staging)
    assert i["backupRetentionPeriod"] == 31
    assert i["deletionProtection"] is True
    assert i["skipFinalSnapshot"] is False
    assert i["finalSnapshotIdentifier"] == "staging-g1-db-final"
    assert i["deleteAutomatedBackups"] is False
    assert i["publiclyAccessible"] is False
    assert i["iamDatabaseAuthenticationEnabled"] is False


def test_monitoring_insights_and_logs(staging):
    i = db(staging)
    assert i["performanceInsightsEnabled"] is True
    assert i["performanceInsightsRetentionPeriod"] == 7
    assert i["monitoringInterval"] == 60
    role = s.reg(staging, "aws:iam/role:Role", "staging-rds-monitoring")
    assert i["monitoringRoleArn"] == role.outputs["arn"]
    trust = json.loads(s.inputs(staging, "aws:iam/role:Role", "staging-rds-monitoring")["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "monitoring.rds.amazonaws.com"}
    attached = s.inputs(staging, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "staging-rds-monitoring-policy")
    assert attached["policyArn"].endswith("service-role/AmazonRDSEnhancedMonitoringRole")
    assert sorted(i["enabledCloudwatchLogsExports"]) == ["postgresql", "upgrade"]


def test_minor_upgrades_are_off_unless_the_stack_turns_them_on(staging, variant):
    assert db(staging)["autoMinorVersionUpgrade"] is False
    assert db(variant)["autoMinorVersionUpgrade"] is True
    assert db(staging)["allowMajorVersionUpgrade"] is False


def test_the_stop_of_the_previous_instance_is_a_stack_switch(staging, variant):
    assert [r.name for r in staging.mocks.of_type(s.LOCAL)] == ["staging-cutover-stop-previous"]
    assert not variant.mocks.of_type(s.LOCAL)


def test_given_kms_key_is_used_and_none_is_created(variant):
    i = db(variant)
    assert i["kmsKeyId"].startswith("arn:aws:kms:eu-west-2:123456789012:key/")
    assert i["performanceInsightsKmsKeyId"] == i["kmsKeyId"]
    assert not variant.mocks.of_type(s.KMS_KEY)


def test_creation_only_inputs_are_ignored_and_nothing_is_protected(staging):
    opts = s.reg(staging, s.INSTANCE, "staging-g1-db").options
    assert set(opts["ignoreChanges"]) == set(rds_instance.IGNORED_AFTER_CREATE)
    assert {"restoreToPointInTime", "username", "kmsKeyId"} <= set(opts["ignoreChanges"])
    # A config edit must be able to retire a generation (deleteProtection false, then remove it).
    assert not any(r.options.get("protect") for r in staging.mocks.registrations)


def test_security_group_allows_5432_from_configured_sources_only(staging, variant):
    for result, sources in (
        (staging, {"sg-0a1b2c3d4e5f60010", "sg-0a1b2c3d4e5f60020"}),
        (variant, {"sg-0a1b2c3d4e5f60010", "sg-0a1b2c3d4e5f60020", "10.20.0.0/16", "2001:db8::/56"}),
    ):
        rules = [program.unwrap(r.inputs) for r in result.mocks.of_type(s.INGRESS)]
        seen = set()
        for rule in rules:
            assert (rule["ipProtocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 5432, 5432)
            source = rule.get("referencedSecurityGroupId") or rule.get("cidrIpv4") or rule.get("cidrIpv6")
            assert source not in ANYWHERE
            seen.add(source)
        assert seen == sources
        sg = program.unwrap(s.reg(result, s.SECURITY_GROUP, "staging-rds-sg").inputs)
        assert "ingress" not in sg and "egress" not in sg
        assert not result.mocks.of_type(s.EGRESS)
        assert db(result)["vpcSecurityGroupIds"] == [result.mocks.id_of(s.SECURITY_GROUP, "staging-rds-sg")]


def test_parameter_group_forces_tls_and_logs(staging, variant):
    params = {p["name"]: p for p in s.inputs(staging, s.PARAMS, "staging-rds-params")["parameters"]}
    assert params["rds.force_ssl"]["value"] == "1"
    assert params["ssl_min_protocol_version"]["value"] == "TLSv1.2"
    assert params["password_encryption"]["value"] == "scram-sha-256"
    for name in ("log_connections", "log_disconnections", "log_lock_waits"):
        assert params[name]["value"] == "1"
    assert params["log_min_duration_statement"]["value"] == "1000"
    assert params["max_connections"] == {
        "name": "max_connections",
        "value": str(staging.settings.max_connections),
        "applyMethod": "pending-reboot",
    }
    assert s.inputs(staging, s.PARAMS, "staging-rds-params")["family"] == "postgres15"
    assert db(staging)["parameterGroupName"] == s.reg(staging, s.PARAMS, "staging-rds-params").outputs["name"]
    overridden = {p["name"]: p["value"] for p in s.inputs(variant, s.PARAMS, "staging-rds-params")["parameters"]}
    assert overridden["log_min_duration_statement"] == "250"


def test_alarms_on_the_active_instance_at_two_levels(staging):
    alarms = {r.name: program.unwrap(r.inputs) for r in staging.mocks.of_type(s.ALARM)}
    assert len(alarms) == 8
    limit = staging.settings.max_connections
    warning = "arn:aws:mock:::staging-alerts-warning"
    critical = "arn:aws:mock:::staging-alerts-critical"
    expect = {
        "cpu-warning": ("CPUUtilization", 80, warning),
        "cpu-critical": ("CPUUtilization", 95, critical),
        "memory-warning": ("FreeableMemory", 1024 * 1024 * 1024, warning),
        "memory-critical": ("FreeableMemory", 256 * 1024 * 1024, critical),
        "connections-warning": ("DatabaseConnections", round(limit * 0.8), warning),
        "connections-critical": ("DatabaseConnections", round(limit * 0.95), critical),
        "storage-warning": ("FreeStorageSpace", 10 * 1024**3, warning),
        "storage-critical": ("FreeStorageSpace", 5 * 1024**3, critical),
    }
    for suffix, (metric, threshold, topic) in expect.items():
        a = alarms[f"staging-g1-alarms-{suffix}"]
        assert (a["metricName"], a["threshold"], a["alarmActions"], a["okActions"]) == (
            metric,
            threshold,
            [topic],
            [topic],
        )
        assert a["dimensions"] == {"DBInstanceIdentifier": "staging-g1-db"}
        below = metric in ("FreeableMemory", "FreeStorageSpace")
        assert a["comparisonOperator"].startswith("LessThan" if below else "GreaterThan")


def test_warnings_mail_and_critical_alarms_page(staging, variant):
    subs = {r.name: r for r in staging.mocks.of_type(s.SUBSCRIPTION)}
    mail = program.unwrap(subs["staging-alerts-warning-notify-support-example-net"].inputs)
    assert (mail["protocol"], mail["endpoint"]) == ("email", "notify-support@example.net")
    page = subs["staging-alerts-critical-pagerduty"]
    assert program.is_secret(page.inputs["endpoint"]), "the PagerDuty URL embeds the integration key"
    assert program.unwrap(page.inputs)["endpoint"] == s.PAGERDUTY
    assert program.unwrap(page.inputs)["protocol"] == "https"
    assert "endpoint" in page.options["additionalSecretOutputs"]
    # Without PagerDuty, a critical alarm still reaches the warning addresses.
    fallback = {r.name: program.unwrap(r.inputs) for r in variant.mocks.of_type(s.SUBSCRIPTION)}
    assert "staging-alerts-critical-pagerduty" not in fallback
    assert fallback["staging-alerts-critical-notify-support-example-net"]["topic"].endswith("staging-alerts-critical")


def test_master_password_is_generated_secret_and_shared(staging):
    i = s.reg(staging, s.INSTANCE, "staging-g1-db")
    assert program.is_secret(i.inputs["password"])
    # The mocks give every RandomPassword its own value (support.password_for).
    assert program.unwrap(i.inputs["password"]) == password_for("staging-rds-master-password", 40)
    master = s.reg(staging, s.PASSWORD, "staging-rds-master-password")
    assert program.unwrap(master.inputs)["special"] is False
    assert "password" in i.options["additionalSecretOutputs"]


def test_roles_run_on_the_bastion_with_the_password_on_stdin_only(staging):
    cmd = s.reg(staging, s.REMOTE, "staging-g1-roles")
    conn = program.unwrap(cmd.inputs["connection"])
    assert (conn["host"], conn["user"]) == ("bastion.staging.notify.example.net", "ec2-user")
    assert program.is_secret(cmd.inputs["connection"]), "the connection holds the bastion's private key"
    assert program.is_secret(cmd.inputs["stdin"])
    stdin = program.unwrap(cmd.inputs["stdin"])
    password, _, sql = stdin.partition("\n")
    assert password and password.isalnum() and len(password) == 40
    assert "CREATE ROLE notify_app" in sql or "'CREATE ROLE notify_app'" in sql
    text = program.unwrap(cmd.inputs["create"])
    assert password not in text
    assert "SSL_MODE=verify-full" in text
    assert "DB_HOST=staging-g1-db.mock.rds.amazonaws.com" in text
    assert "CA_BUNDLE_URL=https://truststore.pki.rds.amazonaws.com/eu-west-2/eu-west-2-bundle.pem" in text
    assert "MASTER_USER=notifydb" in text


def test_exports(staging):
    out = staging.outputs
    assert out["active_cluster"] == "g1"
    assert out["active_endpoint"] == "staging-g1-db.mock.rds.amazonaws.com"
    assert out["endpoints"] == {"g1": "staging-g1-db.mock.rds.amazonaws.com"}
    assert out["dns_name"] == "db.staging.notify.example.net"
    assert "database_url" in staging.secret_outputs
    assert out["database_url"].startswith("postgres://notify_app:")
    assert out["database_url"].endswith("@db.staging.notify.example.net:5432/notification_api?sslmode=require")


def test_provider_region_and_tags(staging):
    provider = program.unwrap(s.reg(staging, "pulumi:providers:aws", "staging-aws").inputs)
    assert provider["region"] == "eu-west-2"
    assert "pgstack-stack" in json.dumps(provider["defaultTags"])


def test_command_and_random_inputs_match_their_schemas(staging):
    checked = [r for r in staging.mocks.registrations if r.type.split(":")[0] in ("command", "random")]
    assert {r.type for r in checked} >= {s.REMOTE, s.LOCAL, s.PASSWORD}
    errors = [f"{r.name}: {e}" for r in checked for e in check_resource(r.type, r.inputs)]
    assert not errors, errors


def test_render_of_a_restore_and_cutover_leaks_no_secret(tmp_path, monkeypatch, capsys):
    """The acceptance render: g2 restored from g1, `active: g2`. render.render fails on any leak."""
    plain = program.read_stack_file

    def staging_restored(stack, *args):
        raw = plain(stack, *args)
        clusters = json.loads(raw["pgstack:clusters"])
        clusters["g2"] = {"restore": {"from": "g1", "targetTime": s.TARGET}}
        return {**raw, "pgstack:clusters": json.dumps(clusters), "pgstack:active": "g2"}

    monkeypatch.setattr(program, "read_stack_file", staging_restored)
    result = render_mod.render("staging", tmp_path / "out")
    assert preflight.RDS_SKIP_NOTE in capsys.readouterr().err
    resources = {r["name"]: r for r in json.loads((tmp_path / "out" / "resources.json").read_text())}
    for gen in ("g1", "g2"):
        db_inputs = resources[f"staging-{gen}-db"]["inputs"]
        assert db_inputs["storageEncrypted"] is True and db_inputs["deletionProtection"] is True
        assert db_inputs["backupRetentionPeriod"] == 31
        assert db_inputs["password"] == program.SECRET_MARK
    assert resources["staging-g2-db"]["inputs"]["restoreToPointInTime"] == {
        "sourceDbInstanceIdentifier": "staging-g1-db",
        "restoreTime": s.TARGET_UTC,
    }
    g2_record = resources["staging-cutover-g2"]["inputs"]
    assert g2_record["records"] == ["staging-g2-db.mock.rds.amazonaws.com"]
    assert g2_record["weightedRoutingPolicies"] == [{"weight": 100}]
    assert resources["staging-cutover-g1"]["inputs"]["weightedRoutingPolicies"] == [{"weight": 0}]
    assert len([r for r in resources.values() if r["type"] == s.ALARM]) == 8
    assert (tmp_path / "out" / "commands" / "staging-g2-roles.sh").exists()
    # The PagerDuty URL and the bastion key were canaries there: render checked none leaked.
    assert result.settings.pagerduty_endpoint.startswith("canary")
