"""The boto3 code of target aws: the restore window check (moto, and Stubber for the window
edges, since moto reports "now" as the latest restorable time) and the stop after a cutover."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

import config
from components import rds_stop
from components.preflight.rds import Boto3Inspector, check_generations
from config import ConfigError
from tests.conftest import stack_config

REGION = "eu-west-2"
UTC = dt.UTC


def settings(g2_target: str | None = None, now: dt.datetime | None = None, stack: str = "staging") -> config.Settings:
    """The staging config as stack `stack`: its instances are `{stack}-g1-db`, `{stack}-g2-db`."""

    def edit(cfg):
        if g2_target is not None:
            cfg["pgstack:clusters"]["g2"] = {"restore": {"from": "g1", "targetTime": g2_target}}

    return config.settings_from_mapping(stack_config("staging", edit), project="pgstack", stack=stack, now=now)


@dataclass
class Moto:
    client: object
    stack: str

    def db(self, gen: str) -> str:
        return f"{self.stack}-{gen}-db"

    def create(self, gen: str) -> str:
        ident = self.db(gen)
        self.client.create_db_instance(
            DBInstanceIdentifier=ident,
            Engine="postgres",
            DBInstanceClass="db.t3.micro",
            MasterUsername="notifydb",
            MasterUserPassword="x" * 20,
            AllocatedStorage=20,
            BackupRetentionPeriod=31,
        )
        return ident

    def status(self, gen: str) -> str:
        found = self.client.describe_db_instances(DBInstanceIdentifier=self.db(gen))["DBInstances"]
        return found[0]["DBInstanceStatus"]


@pytest.fixture(scope="module")
def moto_client():
    """One moto backend and client for the module: each start costs about half a second."""
    with mock_aws():
        yield boto3.client("rds", region_name=REGION)


_counter = itertools.count(1)


@pytest.fixture
def rds(moto_client) -> Moto:
    """The shared backend, with a stack name of the test's own, so no two tests share an instance."""
    return Moto(moto_client, f"t{next(_counter)}")


@pytest.fixture(scope="module")
def offline_client():
    """A client for Stubber: it never sends a request."""
    return boto3.client("rds", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s")


# --- the window check, with moto ----------------------------------------------------------------


def test_inspector_reads_an_instance_and_its_absence(rds):
    rds.create("g1")
    found = Boto3Inspector(rds.client).instance(rds.db("g1"))
    assert found is not None and found.status == "available" and found.retention_days == 31
    assert found.latest_restorable is not None
    assert Boto3Inspector(rds.client).instance(rds.db("g9")) is None


def test_a_restore_from_a_missing_source_is_refused(rds):
    with pytest.raises(ConfigError) as err:
        check_generations(settings("latest", stack=rds.stack), Boto3Inspector(rds.client))
    assert err.value.key == "pgstack:clusters.g2.restore.from"
    assert f"{rds.db('g1')} does not exist" in err.value.detail


def test_latest_from_an_existing_source_passes(rds):
    rds.create("g1")
    notes = check_generations(settings("latest", stack=rds.stack), Boto3Inspector(rds.client))
    assert any("latest restorable time" in n for n in notes)


def test_a_time_before_the_backups_is_refused(rds):
    rds.create("g1")
    with pytest.raises(ConfigError) as err:
        check_generations(settings("2025-01-15T10:00:00+00:00", stack=rds.stack), Boto3Inspector(rds.client))
    assert err.value.key == "pgstack:clusters.g2.restore.targetTime"
    assert "before the earliest" in err.value.detail


def test_an_existing_restored_instance_is_not_checked_again(rds):
    # g2 exists (the restore happened) and its source is gone: the block is history, not an error.
    rds.create("g2")
    notes = check_generations(settings("2025-01-15T10:00:00+00:00", stack=rds.stack), Boto3Inspector(rds.client))
    assert any(f"{rds.db('g2')} exists" in n for n in notes)


def test_a_stopped_active_instance_is_refused(rds):
    rds.create("g1")
    rds.client.stop_db_instance(DBInstanceIdentifier=rds.db("g1"))
    with pytest.raises(ConfigError) as err:
        check_generations(settings(stack=rds.stack), Boto3Inspector(rds.client))
    assert err.value.key == "pgstack:active"
    assert "start-db-instance" in err.value.detail


# --- the window edges, with botocore's Stubber -----------------------------------------------------

EARLIEST = dt.datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
LATEST = dt.datetime(2025, 1, 31, 23, 55, 0, tzinfo=UTC)
NOW = dt.datetime(2025, 2, 1, 0, 0, 0, tzinfo=UTC)


def stubbed_check(client, target: dt.datetime, backups: list[dict] | None = None) -> list[str]:
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_db_instances",
            service_error_code="DBInstanceNotFound",
            http_status_code=404,
            expected_params={"DBInstanceIdentifier": "staging-g2-db"},
        )
        source = {"DBInstanceIdentifier": "staging-g1-db", "DBInstanceStatus": "available"}
        stub.add_response(
            "describe_db_instances",
            {"DBInstances": [{**source, "LatestRestorableTime": LATEST, "BackupRetentionPeriod": 31}]},
            {"DBInstanceIdentifier": "staging-g1-db"},
        )
        window = {"EarliestTime": EARLIEST, "LatestTime": LATEST - dt.timedelta(minutes=5)}
        stub.add_response(
            "describe_db_instance_automated_backups",
            {"DBInstanceAutomatedBackups": backups or [{"Status": "active", "RestoreWindow": window}]},
            {"DBInstanceIdentifier": "staging-g1-db"},
        )
        stub.add_response("describe_db_instances", {"DBInstances": [source]}, {"DBInstanceIdentifier": "staging-g1-db"})
        notes = check_generations(settings(target.isoformat(), now=NOW), Boto3Inspector(client), now=NOW)
        stub.assert_no_pending_responses()
    return notes


@pytest.mark.parametrize("target", [EARLIEST, LATEST])
def test_the_window_edges_are_restorable(offline_client, target):
    # The newer end is the instance's LatestRestorableTime, not the backups' older LatestTime.
    assert any("restores staging-g1-db" in n for n in stubbed_check(offline_client, target))


@pytest.mark.parametrize(
    ("target", "side"),
    [
        (EARLIEST - dt.timedelta(seconds=1), "before the earliest"),
        (LATEST + dt.timedelta(seconds=1), "after the latest"),
    ],
)
def test_one_second_outside_the_window_is_refused(offline_client, target, side):
    with pytest.raises(ConfigError) as err:
        stubbed_check(offline_client, target)
    assert err.value.key == "pgstack:clusters.g2.restore.targetTime"
    assert side in err.value.detail
    assert "2025-01-01T00:00:00+00:00" in err.value.detail and "2025-01-31T23:55:00+00:00" in err.value.detail


def test_the_live_backups_window_wins_over_a_retained_one(offline_client):
    old = {"EarliestTime": EARLIEST - dt.timedelta(days=90), "LatestTime": EARLIEST - dt.timedelta(days=60)}
    retained = {"Status": "retained", "RestoreWindow": old}
    live = {"Status": "active", "RestoreWindow": {"EarliestTime": EARLIEST, "LatestTime": LATEST}}
    with pytest.raises(ConfigError):
        stubbed_check(offline_client, EARLIEST - dt.timedelta(days=70), backups=[retained, live])


# --- the stop after a cutover, with moto ----------------------------------------------------------


def test_the_first_run_records_and_stops_nothing(rds):
    rds.create("g1")
    assert rds_stop.run(rds.client, rds.db("g1"), "") == (f"active={rds.db('g1')}", None)
    assert rds.status("g1") == "available"


def test_after_a_cutover_the_previously_active_instance_is_stopped_once(rds):
    g1, g2 = rds.create("g1"), rds.create("g2")
    stdout, message = rds_stop.run(rds.client, g2, f"active={g1}\n")
    assert stdout == f"active={g2}"
    assert f"stopping {g1}" in message and "7 days" in message
    assert (rds.status("g1"), rds.status("g2")) == ("stopped", "available")
    # A retry (e.g. after a failed update) is harmless.
    assert "already stopped" in rds_stop.run(rds.client, g2, f"active={g1}\n")[1]
    # The same active again (any other input change) stops nothing.
    assert rds_stop.run(rds.client, g2, f"active={g2}\n") == (f"active={g2}", None)
    assert rds.status("g2") == "available"


def test_a_previous_instance_that_is_gone_is_fine(rds):
    assert "does not exist" in rds_stop.run(rds.client, rds.db("g2"), f"active={rds.db('g1')}")[1]


def test_an_instance_that_is_busy_fails_the_step_for_a_retry(offline_client):
    with Stubber(offline_client) as stub:
        stub.add_response(
            "describe_db_instances",
            {"DBInstances": [{"DBInstanceIdentifier": "staging-g1-db", "DBInstanceStatus": "modifying"}]},
        )
        with pytest.raises(rds_stop.StopError, match="modifying"):
            rds_stop.run(offline_client, "staging-g2-db", "active=staging-g1-db")


def test_main_reads_the_previous_output_from_pulumi(rds, monkeypatch, capsys):
    g1 = rds.create("g1")
    monkeypatch.setenv("PULUMI_COMMAND_STDOUT", f"active={g1}")
    assert rds_stop.main(["--region", REGION, "--active", rds.db("g2")]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"active={rds.db('g2')}"
    assert f"stopping {g1}" in out.err
    assert rds.status("g1") == "stopped"
