"""The `pgstack:aws` block and the cross-field rules of target aws (pure: no Pulumi run)."""

from __future__ import annotations

import pytest

import config
from config import ConfigError
from tests.conftest import stack_config


def settings(stack: str = "staging", edit=None) -> config.Settings:
    return config.settings_from_mapping(stack_config(stack, edit), project="pgstack", stack=stack)


def refused(edit, stack: str = "staging") -> ConfigError:
    with pytest.raises(ConfigError) as err:
        settings(stack, edit)
    return err.value


def aws(**values):
    return lambda cfg: cfg["pgstack:aws"].update(values)


def test_staging_is_a_valid_aws_stack_with_seed_001_defaults():
    s = settings()
    assert s.target == "aws" and s.aws is not None
    assert s.aws.backup_retention_days == 31
    assert s.aws.auto_minor_version_upgrade is False
    assert s.aws.vpc_id.startswith("vpc-") and len(s.aws.subnet_ids) >= 2
    assert s.clusters["g1"].primary_ip is None


def test_the_pagerduty_endpoint_is_a_secret_key():
    assert config.KEYS["pagerdutyEndpoint"].secret is True
    assert config.KEYS["aws"].kind == "object"
    s = settings(edit=lambda c: c.update({"pgstack:pagerdutyEndpoint": "https://events.pagerduty.com/x/enqueue"}))
    assert "events.pagerduty.com" not in repr(s)


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_postgres_is_never_open_to_the_internet(cidr):
    err = refused(aws(allowedCidrs=["10.0.0.0/16", cidr]))
    assert err.key == "pgstack:aws.allowedCidrs.1"
    assert "every address" in err.detail


def test_something_must_be_allowed_in():
    def edit(cfg):
        cfg["pgstack:aws"].update(allowedSecurityGroupIds=[], allowedCidrs=[])
        cfg["pgstack:aws"]["bastion"].pop("securityGroupId")

    assert "nothing may reach" in refused(edit).detail


def test_target_aws_needs_the_aws_block():
    err = refused(lambda c: c.pop("pgstack:aws"))
    assert err.key == "pgstack:aws"


def test_primary_ip_is_refused_for_aws_and_still_required_for_hetzner():
    err = refused(lambda c: c["pgstack:clusters"]["g1"].update(primaryIp="10.0.1.5"))
    assert err.key == "pgstack:clusters.g1.primaryIp"
    err = refused(lambda c: c["pgstack:clusters"]["g1"].pop("primaryIp"), stack="prod")
    assert err.key == "pgstack:clusters.g1.primaryIp"
    assert "target hetzner needs" in err.detail


def test_replicas_and_per_role_cidrs_are_refused_on_rds():
    assert refused(lambda c: c["pgstack:clusters"]["g1"].update(replicaIps=["10.0.1.6"])).key == (
        "pgstack:clusters.g1.replicaIps"
    )
    err = refused(lambda c: c["pgstack:roles"]["app"].update(cidrs=["10.0.0.0/16"]))
    assert err.key == "pgstack:roles.app.cidrs" and "pg_hba" in err.detail


def test_hetzner_only_blocks_are_refused_on_aws():
    hz = {"location": "fsn1", "serverType": "ccx13", "networkCidr": "10.0.0.0/16", "subnetCidr": "10.0.1.0/24"}
    assert refused(lambda c: c.update({"pgstack:hetzner": hz})).key == "pgstack:hetzner"
    backup = {"bucket": "pg-backups", "endpoint": "fsn1.your-objectstorage.com", "region": "fsn1"}
    assert refused(lambda c: c.update({"pgstack:backup": backup})).key == "pgstack:backup"


@pytest.mark.parametrize("name", ["rds.force_ssl", "ssl_min_protocol_version"])
def test_tls_settings_cannot_be_overridden(name):
    err = refused(lambda c: c.update({"pgstack:postgresql": {name: "0"}}))
    assert err.key == f"pgstack:postgresql.{name}"


def test_master_user_is_not_a_role_or_reserved():
    assert refused(aws(masterUsername="notify_app")).key == "pgstack:aws.masterUsername"
    assert "reserved" in refused(aws(masterUsername="rdsadmin")).detail


def test_restore_time_needs_a_time_zone_and_may_not_be_in_the_future():
    def restore(target):
        return lambda c: c["pgstack:clusters"].update(g2={"restore": {"from": "g1", "targetTime": target}})

    assert "time zone" in refused(restore("2025-01-15T10:00:00")).detail
    assert "future" in refused(restore("2999-01-01T00:00:00+00:00")).detail
    assert settings(edit=restore("latest")).clusters["g2"].restore.target() is None


def test_restores_may_not_form_a_cycle():
    def edit(cfg):
        cfg["pgstack:clusters"]["g1"]["restore"] = {"from": "g2", "targetTime": "latest"}
        cfg["pgstack:clusters"]["g2"] = {"restore": {"from": "g1", "targetTime": "latest"}}

    assert "cycle" in refused(edit).detail


def test_stack_name_must_make_a_valid_rds_identifier():
    with pytest.raises(ConfigError) as err:
        config.settings_from_mapping(stack_config("staging"), project="pgstack", stack="Staging_EU")
    assert err.value.key == "pgstack:clusters.g1"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"subnetIds": ["subnet-0a1b2c3d4e5f60001"]}, "at least 2"),
        ({"subnetIds": ["subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60001"]}, "twice"),
        ({"maxAllocatedStorageGb": 50}, "maxAllocatedStorageGb"),
        ({"performanceInsightsRetentionDays": 30}, "performanceInsightsRetentionDays"),
        ({"alarms": {"cpuPercent": {"warning": 95, "critical": 80}}}, "warning < critical"),
        ({"alarms": {"freeableMemoryMb": {"warning": 100, "critical": 500}}}, "below"),
        ({"vpcId": "vpc-nope"}, "value not allowed"),
        ({"engineVersion": "16"}, "value not allowed"),
        ({"kmsKeyArn": "alias/aws/rds"}, "value not allowed"),
    ],
)
def test_aws_block_values_are_checked(values, words):
    assert words in str(refused(aws(**values)))
