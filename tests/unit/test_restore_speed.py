"""Restore speed (issue 17), under mocks: what the program and the scripts do to shorten an `up`."""

from __future__ import annotations

from sandbox import program
from tests.conftest import REPO

SCRIPTS = REPO / "components" / "scripts"


def test_the_replica_builds_without_waiting_for_the_primarys_first_full_backup(prod):
    deps = prod.mocks.find("prod-g1-replica-1-replica").options["dependencies"]
    assert "prod-g1-primary-slots" in deps, deps
    assert "prod-g1-primary-pgbackrest" not in deps, deps


def test_a_new_stanzas_first_full_backup_runs_in_the_background():
    text = (SCRIPTS / "pgbackrest.sh").read_text()
    assert "systemctl start --no-block pgstack-backup@full.service" in text
    assert "--type=full backup" not in text


def test_a_restores_recovery_fetches_wal_synchronously(prod):
    text = (SCRIPTS / "restore.sh").read_text()
    assert "--no-archive-async archive-get" in text
    # Async archive-get stays for the replicas (catch-up from the archive): [global] keeps it.
    conf = program.unwrap(prod.mocks.find("prod-g1-primary-pgbackrest").inputs["stdin"])
    assert "archive-async=y" in conf.split("[global:archive-push]")[0]
