"""Config validation: every bad stack file stops the program with a ConfigError that names the key
and says how to fix it, before a single resource is registered."""

from __future__ import annotations

import datetime as dt

import pytest

import config
from config import ConfigError
from postgres.conf import MANAGED
from sandbox import __main__ as sandbox_cli
from sandbox import program
from sandbox import render as sandbox_render
from tests.conftest import run_stack, stack_config
from tests.unit.support import COMMAND, command_text, one, script_param

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def refused(edit, **kw) -> ConfigError:
    """Run prod with `edit`; it must raise a ConfigError and register nothing."""
    mocks = program.RecordingMocks()
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit, mocks=mocks, now=NOW, **kw)
    assert mocks.registrations == [], (
        f"{info.value.key}: {len(mocks.registrations)} resources were registered before the error, "
        f"e.g. {mocks.registrations[0].name}"
    )
    return info.value


def accepted(edit, **kw) -> program.RunResult:
    result = run_stack("prod", edit=edit, now=NOW, **kw)
    assert result.mocks.registrations, "an accepted stack registers resources"
    return result


def hetzner(**values):
    def edit(cfg):
        cfg["pgstack:hetzner"].update(values)

    return edit


def cluster(gen: str = "g1", **values):
    def edit(cfg):
        cfg["pgstack:clusters"].setdefault(gen, {}).update(values)

    return edit


def role(which: str, **values):
    def edit(cfg):
        cfg["pgstack:roles"][which].update(values)

    return edit


def database(**values):
    def edit(cfg):
        cfg["pgstack:database"].update(values)

    return edit


def top(key: str, value):
    def edit(cfg):
        cfg[key] = value

    return edit


def restore(source: str, target_time: str):
    return cluster("g2", primaryIp="10.0.1.10", restore={"from": source, "targetTime": target_time})


# (edit, the key the error must name, a phrase of the fix the message must give)
CASES = {
    "cidr-prefix-33": (hetzner(subnetCidr="10.0.1.0/33"), "pgstack:hetzner.subnetCidr", "e.g. 10.0.1.0/24"),
    "cidr-host-bits": (hetzner(subnetCidr="10.0.1.5/24"), "pgstack:hetzner.subnetCidr", "e.g. 10.0.1.0/24"),
    "subnet-outside-network": (
        hetzner(subnetCidr="10.1.1.0/24"),
        "pgstack:hetzner.subnetCidr",
        "pick a subnet of it",
    ),
    "network-public": (
        hetzner(networkCidr="8.8.0.0/16", subnetCidr="8.8.1.0/24"),
        "pgstack:hetzner.networkCidr",
        "private IPv4 range such as 10.0.0.0/16",
    ),
    "volume-too-small": (hetzner(volumeSizeGb=5), "pgstack:hetzner.volumeSizeGb", "at least 10"),
    "primary-ip-outside-subnet": (
        cluster(primaryIp="10.0.2.5"),
        "pgstack:clusters.g1.primaryIp",
        "pick an address in it",
    ),
    "replica-ip-outside-subnet": (
        cluster(replicaIps=["10.0.9.6"]),
        "pgstack:clusters.g1.replicaIps[0]",
        "pick an address in it",
    ),
    "duplicate-ip": (
        cluster(replicaIps=["10.0.1.5"]),
        "pgstack:clusters.g1.replicaIps[0]",
        "every server needs its own address",
    ),
    "duplicate-ip-across-generations": (
        cluster("g2", primaryIp="10.0.1.6"),
        "pgstack:clusters.g2.primaryIp",
        "every server needs its own address",
    ),
    "gateway-ip": (cluster(primaryIp="10.0.1.1"), "pgstack:clusters.g1.primaryIp", "pick another"),
    "network-address": (cluster(primaryIp="10.0.1.0"), "pgstack:clusters.g1.primaryIp", "pick another"),
    "broadcast-address": (cluster(primaryIp="10.0.1.255"), "pgstack:clusters.g1.primaryIp", "pick another"),
    "injection-app-role": (role("app", name="rails;drop"), "pgstack:roles.app.name", "use a PostgreSQL identifier"),
    "injection-database": (database(name="rails;drop"), "pgstack:database.name", "use a PostgreSQL identifier"),
    "injection-quote-in-database": (
        database(name="hcb'; drop"),
        "pgstack:database.name",
        "use a PostgreSQL identifier",
    ),
    "unknown-top-level-key": (top("pgstack:tyop", "x"), "pgstack:tyop", "check its spelling"),
    "unknown-nested-key": (hetzner(serverTyp="ccx23"), "pgstack:hetzner.serverTyp", "check its spelling"),
    "ssh-from-anywhere": (
        top("pgstack:adminCidrs", ["0.0.0.0/0"]),
        "pgstack:adminCidrs",
        "allowSshFromAnywhere: true",
    ),
    "ssh-from-anywhere-v6": (
        top("pgstack:adminCidrs", ["198.51.100.10/32", "::/0"]),
        "pgstack:adminCidrs",
        "allowSshFromAnywhere: true",
    ),
    "max-connections-too-small": (
        database(maxConnections=539),
        "pgstack:database.maxConnections",
        "raise it to at least",
    ),
    "active-not-a-cluster": (top("pgstack:active", "g9"), "pgstack:active", "set it to the generation"),
    "restore-from-missing-generation": (
        restore("g7", "latest"),
        "pgstack:clusters.g2.restore.from",
        "keep the source",
    ),
    "restore-time-without-zone": (
        restore("g1", "2026-01-01T10:00:00"),
        "pgstack:clusters.g2.restore.targetTime",
        "add one, e.g. 2026-01-01T10:00:00+00:00",
    ),
    "restore-time-not-iso": (
        restore("g1", "yesterday"),
        "pgstack:clusters.g2.restore.targetTime",
        "write e.g. 2026-11-20T10:00:00+00:00",
    ),
    "restore-time-in-future": (
        restore("g1", "2026-06-02T00:00:00+00:00"),
        "pgstack:clusters.g2.restore.targetTime",
        "pick a time that has passed",
    ),
    "restore-from-itself": (restore("g2", "latest"), "pgstack:clusters.g2.restore.from", "name the source generation"),
    "sandbox-key-in-real-stack": (
        top("pgstack:sandbox", {"packageSource": "distro"}),
        "pgstack:sandbox",
        "remove it from the stack file",
    ),
    "reserved-role-postgres": (role("app", name="postgres"), "pgstack:roles.app.name", "pick another"),
    "reserved-role-pg-monitor": (role("reporting", name="pg_monitor"), "pgstack:roles.reporting.name", "pick another"),
    "reserved-role-replicator": (role("migrator", name="replicator"), "pgstack:roles.migrator.name", "pick another"),
    "duplicate-role-names": (role("reporting", name="rails"), "pgstack:roles", "give every role its own name"),
    "postgresql-value-with-quote": (
        top("pgstack:postgresql", {"work_mem": "64MB'; x"}),
        "pgstack:postgresql.work_mem",
        "use letters, digits",
    ),
    "postgresql-managed-setting": (
        top("pgstack:postgresql", {"listen_addresses": "0.0.0.0"}),
        "pgstack:postgresql.listen_addresses",
        "remove it from pgstack:postgresql",
    ),
    "boolean-not-a-boolean": (
        top("pgstack:allowSshFromAnywhere", "yes"),
        "pgstack:allowSshFromAnywhere",
        "write true or false",
    ),
    "role-cidr-anywhere": (role("app", cidrs=["0.0.0.0/0"]), "pgstack:roles.app.cidrs", "use private ranges"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_refused_with_key_and_fix(case):
    edit, key, fix = CASES[case]
    exc = refused(edit)
    assert exc.key == key, f"{case}: the error names {exc.key}, expected {key} ({exc})"
    assert fix in exc.detail, f"{case}: {exc.key}: the message does not say how to fix it: {exc.detail!r}"
    assert str(exc).startswith(f"{key}: "), f"{case}: the printed error does not start with the key: {exc}"


def test_ssh_from_anywhere_accepted_with_opt_in():
    def edit(cfg):
        cfg["pgstack:adminCidrs"] = ["0.0.0.0/0"]
        cfg["pgstack:allowSshFromAnywhere"] = "true"
        cfg["pgstack:roles"]["humanCidrs"] = ["10.8.0.0/24"]

    result = accepted(edit)
    fw = one(result.mocks, "hcloud:index/firewall:Firewall", "prod-net-fw")
    assert fw.inputs["rules"][0]["sourceIps"] == ["0.0.0.0/0"], "prod-net-fw: the opted-in CIDR is not used"


def test_ssh_from_anywhere_does_not_open_postgresql_to_humans():
    """Humans connect from adminCidrs by default: opening SSH must not open pg_hba to the internet."""

    def edit(cfg):
        cfg["pgstack:adminCidrs"] = ["0.0.0.0/0"]
        cfg["pgstack:allowSshFromAnywhere"] = "true"
        cfg["pgstack:roles"].pop("humanCidrs", None)

    exc = refused(edit)
    assert exc.key == "pgstack:roles.humanCidrs", exc
    assert "set roles.humanCidrs" in exc.detail


def test_max_connections_sized_automatically_when_unset():
    result = accepted(None)  # the prod stack as committed
    # app 500 + migrator 5 + reporting 10 + monitoring 5 + gary 5 + albert 5 + reserve 15
    assert result.settings.database.max_connections is None
    assert result.settings.max_connections == 500 + 5 + 10 + 5 + 5 + 5 + 15 == 545
    text = command_text(one(result.mocks, COMMAND, "prod-g1-primary-configure"))
    assert "\nmax_connections = 545\n" in script_param(text, "PG_CONF"), (
        "prod-g1-primary-configure: postgresql.conf does not carry the sized max_connections"
    )


def test_max_connections_exactly_the_need_is_accepted_and_used():
    raw = stack_config("prod", database(maxConnections=545))
    assert config.settings_from_mapping(raw, project="pgstack", stack="prod", now=NOW).max_connections == 545
    result = accepted(database(maxConnections=800))
    text = command_text(one(result.mocks, COMMAND, "prod-g1-primary-configure"))
    assert "\nmax_connections = 800\n" in script_param(text, "PG_CONF"), "prod-g1-primary-configure"


def test_restore_time_in_the_past_is_accepted():
    result = accepted(restore("g1", "2026-06-01T11:00:00+00:00"))
    assert result.settings.clusters["g2"].restore is not None
    assert result.settings.clusters["g2"].restore.target() == dt.datetime(2026, 6, 1, 11, 0, tzinfo=dt.UTC)


def test_sandbox_key_accepted_in_the_sandbox():
    result = accepted(top("pgstack:sandbox", {"packageSource": "distro"}), allow_sandbox=True)
    text = command_text(one(result.mocks, COMMAND, "prod-g1-primary-install"))
    assert script_param(text, "PACKAGE_SOURCE") == "distro", "prod-g1-primary-install ignores the sandbox key"


@pytest.mark.parametrize("name", sorted(MANAGED))
def test_every_managed_setting_is_refused_as_override(name):
    raw = stack_config("prod", top("pgstack:postgresql", {name: "1"}))
    with pytest.raises(ConfigError) as info:
        config.settings_from_mapping(raw, project="pgstack", stack="prod", now=NOW)
    assert info.value.key == f"pgstack:postgresql.{name}"
    assert "managed by pgstack" in info.value.detail


def test_unmanaged_override_is_accepted():
    raw = stack_config("prod", top("pgstack:postgresql", {"work_mem": "64MB"}))
    settings = config.settings_from_mapping(raw, project="pgstack", stack="prod", now=NOW)
    assert settings.postgresql == {"work_mem": "64MB"}


def test_boolean_key_accepts_true_and_false():
    for text, value in (("true", True), ("false", False)):
        raw = stack_config("prod", top("pgstack:allowSshFromAnywhere", text))
        settings = config.settings_from_mapping(raw, project="pgstack", stack="prod", now=NOW)
        assert settings.allow_ssh_from_anywhere is value


# --- python -m sandbox render with a bad stack file ---------------------------------------------------


@pytest.fixture
def bad_stack(monkeypatch):
    """read_stack_file returns prod with an injected app role name."""
    raw = stack_config("prod", role("app", name="rails;drop"))
    monkeypatch.setattr(program, "read_stack_file", lambda stack, repo=program.REPO: dict(raw))
    return "pgstack:roles.app.name"


def test_render_refuses_bad_stack_before_writing(bad_stack, tmp_path):
    out = tmp_path / "render"
    with pytest.raises(ConfigError) as info:
        sandbox_render.render("prod", out)
    assert info.value.key == bad_stack
    assert not out.exists(), "render wrote files for a stack it refused"


def test_render_cli_exits_2_naming_the_key(bad_stack, tmp_path, capsys):
    code = sandbox_cli.main(["render", "--stack", "prod", "--out", str(tmp_path / "render")])
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr {err!r}"
    assert bad_stack in err, err
    assert "use a PostgreSQL identifier" in err, err


def test_render_cli_exits_0_for_good_stack(tmp_path, capsys):
    code = sandbox_cli.main(["render", "--stack", "prod", "--out", str(tmp_path / "render")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "rendered" in captured.out
