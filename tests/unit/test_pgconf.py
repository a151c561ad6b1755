"""postgresql.conf as a pure function: layering, managed settings, and what the prod stack renders."""

from __future__ import annotations

import re

import pytest

from postgres import conf as pgconf
from postgres.conf import ServerConf
from postgres.layout import LAYOUTS, Layout
from tests.conftest import run_stack
from tests.unit.support import COMMAND, command_text, one, script_param


def conf(**kw) -> ServerConf:
    base = {"version": 15, "cluster_name": "prod-g1-primary", "private_ip": "10.0.1.5", "max_connections": 545}
    return ServerConf(**{**base, **kw})


def parse(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(" = ")
        assert sep, f"not a `name = value` line: {line!r}"
        assert name not in settings, f"{name} is set twice"
        settings[name] = value
    return settings


def test_layer_order_defaults_version_overrides(monkeypatch):
    monkeypatch.setitem(LAYOUTS, 14, Layout(14))
    monkeypatch.setitem(pgconf.DEFAULTS, "pgstack_test_setting", "from_defaults")
    monkeypatch.setitem(pgconf.VERSION_SETTINGS[15], "pgstack_test_setting", "from_version")
    assert pgconf.layered(conf(version=14))["pgstack_test_setting"] == "from_defaults"
    assert pgconf.layered(conf(version=15))["pgstack_test_setting"] == "from_version"
    overridden = conf(overrides={"pgstack_test_setting": "from_stack"})
    assert pgconf.layered(overridden)["pgstack_test_setting"] == "'from_stack'"


def test_version_settings_apply_only_to_their_version(monkeypatch):
    monkeypatch.setitem(LAYOUTS, 14, Layout(14))
    assert pgconf.layered(conf(version=15))["wal_compression"] == "zstd"
    assert "wal_compression" not in pgconf.layered(conf(version=14))


def test_overrides_beat_defaults_and_are_quoted():
    merged = pgconf.layered(conf(overrides={"work_mem": "64MB", "shared_buffers": "2GB"}))
    assert merged["work_mem"] == "'64MB'"
    assert merged["shared_buffers"] == "'2GB'"
    assert pgconf.layered(conf())["work_mem"] == pgconf.DEFAULTS["work_mem"]


def test_managed_settings_always_win(monkeypatch):
    full = conf(stanza="hcb_production-g1", replica_slots=1)
    managed = pgconf.managed_settings(full)
    for name in managed:
        monkeypatch.setitem(pgconf.DEFAULTS, name, "from_defaults")
        monkeypatch.setitem(pgconf.VERSION_SETTINGS[15], name, "from_version")
    attack = ServerConf(**{**full.__dict__, "overrides": dict.fromkeys(managed, "from_stack")})
    merged = pgconf.layered(attack)
    for name, value in managed.items():
        assert merged[name] == value, f"{name}: a lower layer beat the managed value"


def test_pg_stat_statements_is_preloaded_and_a_stack_may_add_libraries():
    assert pgconf.layered(conf())["shared_preload_libraries"] == "'pg_stat_statements'"
    both = pgconf.layered(conf(overrides={"shared_preload_libraries": "pg_cron, pg_stat_statements"}))
    assert both["shared_preload_libraries"] == "'pg_stat_statements,pg_cron'"


def test_every_managed_setting_is_declared_managed():
    managed = pgconf.managed_settings(conf(stanza="s-g1"))
    assert set(managed) <= pgconf.MANAGED, f"not in MANAGED: {sorted(set(managed) - pgconf.MANAGED)}"


def test_archive_settings_only_with_a_stanza():
    without = pgconf.layered(conf())
    assert without["archive_mode"] == "off"
    for name in ("archive_command", "restore_command", "archive_timeout"):
        assert name not in without, f"{name} is set although nothing archives"
    with_stanza = pgconf.layered(conf(stanza="hcb_production-g1", archive_timeout_seconds=90))
    assert with_stanza["archive_mode"] == "on"
    assert with_stanza["archive_command"] == "'pgbackrest --stanza=hcb_production-g1 archive-push %p'"
    assert "--stanza=hcb_production-g1 archive-get %f" in with_stanza["restore_command"]
    assert with_stanza["archive_timeout"] == "90s"


def test_listen_addresses_are_localhost_and_the_private_ip():
    assert pgconf.layered(conf(private_ip="10.0.1.6"))["listen_addresses"] == "'localhost,10.0.1.6'"


def test_password_encryption_and_cluster_name():
    merged = pgconf.layered(conf(cluster_name="prod-g2-replica-1"))
    assert merged["password_encryption"] == "'scram-sha-256'"
    assert merged["cluster_name"] == "'prod-g2-replica-1'"
    assert merged["max_connections"] == "545"


@pytest.mark.parametrize("slots,senders", [(0, 10), (1, 10), (3, 10), (4, 12)])
def test_wal_senders_fit_the_replicas(slots, senders):
    merged = pgconf.layered(conf(replica_slots=slots))
    assert merged["max_wal_senders"] == str(senders)
    assert merged["max_replication_slots"] == str(senders)


def test_render_is_sorted_name_value_lines():
    text = pgconf.render(conf(overrides={"work_mem": "64MB"}))
    assert text.endswith("\n")
    settings = parse(text)
    assert list(settings) == sorted(settings)
    assert settings == pgconf.layered(conf(overrides={"work_mem": "64MB"}))


def prod_confs(edit=None) -> dict[str, dict[str, str]]:
    result = run_stack("prod", edit=edit)
    return {
        name: parse(script_param(command_text(one(result.mocks, COMMAND, f"{name}-configure")), "PG_CONF"))
        for name in ("prod-g1-primary", "prod-g1-replica-1")
    }


def test_prod_servers_render_their_own_conf():
    for name, settings in prod_confs().items():
        ip = {"prod-g1-primary": "10.0.1.5", "prod-g1-replica-1": "10.0.1.6"}[name]
        assert settings["listen_addresses"] == f"'localhost,{ip}'", name
        assert settings["cluster_name"] == f"'{name}'", name
        assert settings["password_encryption"] == "'scram-sha-256'", name
        assert settings["max_connections"] == "545", name


def test_prod_archives_to_its_stanza_only_with_a_backup_block():
    with_backup = prod_confs(lambda cfg: cfg.update({"pgstack:backup": BACKUP}))
    for name, settings in with_backup.items():
        assert settings["archive_mode"] == "on", name
        assert "--stanza=hcb_production-g1 archive-push" in settings["archive_command"], name
    without = prod_confs(lambda cfg: cfg.pop("pgstack:backup", None))
    for name, settings in without.items():
        assert settings["archive_mode"] == "off", name
        assert not any(re.match(r"archive_command|restore_command", k) for k in settings), name


BACKUP = {"bucket": "hcb-production-postgres", "endpoint": "fsn1.your-objectstorage.com", "region": "fsn1"}
