"""What the prod stack registers on Hetzner, and what it must never do (mock tests).

Assertion messages name the resource, so a failure says where to look.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter

import pytest

from postgres.roles import scram_verifier
from sandbox import program
from sandbox.render import encodings
from tests.conftest import REPO, SECRETS, run_stack
from tests.unit.support import (
    COMMAND,
    FIREWALL,
    NETWORK,
    PASSWORD,
    PLACEMENT_GROUP,
    SERVER,
    SSH_KEY,
    SUBNET,
    IdMocks,
    command_text,
    one,
    password_for,
)

PRIVATE_IPS = {"prod-g1-primary": "10.0.1.5", "prod-g1-replica-1": "10.0.1.6", "prod-monitoring": "10.0.1.200"}
MONITORING = "prod-monitoring"
IGNORED = {"sshKeys", "image", "userData"}


def run(edit=None) -> program.RunResult:
    return run_stack("prod", edit=edit, mocks=IdMocks())


@pytest.fixture(scope="module")
def prod() -> program.RunResult:
    return run()


def test_network_and_subnet_inside_it(prod):
    net = one(prod.mocks, NETWORK, "prod-net-net")
    sub = one(prod.mocks, SUBNET, "prod-net-subnet")
    assert net.inputs["ipRange"] == "10.0.0.0/16", "prod-net-net"
    assert sub.inputs["ipRange"] == "10.0.1.0/24", "prod-net-subnet"
    network, subnet = ipaddress.ip_network(net.inputs["ipRange"]), ipaddress.ip_network(sub.inputs["ipRange"])
    assert subnet.subnet_of(network), "prod-net-subnet is not inside prod-net-net"
    assert prod.mocks.resolve(sub.inputs["networkId"]) is net, "prod-net-subnet is not in prod-net-net"
    assert sub.inputs["networkZone"] == "us-east", "prod-net-subnet: ash is in us-east"
    assert sub.inputs["type"] == "cloud", "prod-net-subnet"


def test_placement_group_spreads(prod):
    groups = prod.mocks.of_type(PLACEMENT_GROUP)
    assert [g.name for g in groups] == ["prod-net-spread"]
    assert groups[0].inputs["type"] == "spread", "prod-net-spread"


def inbound_rules(fw: program.Registration) -> list[dict]:
    return [r for r in fw.inputs.get("rules", []) if r.get("direction") == "in"]


def test_firewall_allows_only_ssh_from_admin_cidrs(prod):
    fw = one(prod.mocks, FIREWALL, "prod-net-fw")
    rules = inbound_rules(fw)
    assert rules, "prod-net-fw has no inbound rule: SSH would be closed"
    for rule in rules:
        assert rule["protocol"] == "tcp", f"prod-net-fw: inbound {rule['protocol']} rule: {rule}"
        assert rule.get("port") == "22", f"prod-net-fw: inbound rule for port {rule.get('port')}: {rule}"
        assert rule["sourceIps"] == ["198.51.100.10/32"], f"prod-net-fw: sources {rule['sourceIps']}"
    ports = [r.get("port") for r in fw.inputs["rules"]]
    assert "5432" not in ports, "prod-net-fw opens PostgreSQL on the public interface"


def test_firewall_follows_the_configured_admin_cidrs():
    cidrs = ["203.0.113.7/32", "192.0.2.0/28"]
    result = run(lambda cfg: cfg.update({"pgstack:adminCidrs": cidrs}))
    rules = inbound_rules(one(result.mocks, FIREWALL, "prod-net-fw"))
    assert [set(r["sourceIps"]) for r in rules] == [set(cidrs)], f"prod-net-fw: {rules}"


def test_servers_are_behind_the_firewall_in_the_placement_group_on_the_network(prod):
    mocks = prod.mocks
    servers = mocks.of_type(SERVER)
    assert sorted(s.name for s in servers) == sorted(PRIVATE_IPS)
    fw = one(mocks, FIREWALL, "prod-net-fw")
    group = one(mocks, PLACEMENT_GROUP, "prod-net-spread")
    net = one(mocks, NETWORK, "prod-net-net")
    for server in servers:
        inputs = server.inputs
        assert [mocks.resolve(i) for i in inputs.get("firewallIds", [])] == [fw], f"{server.name}: firewallIds"
        assert mocks.resolve(inputs.get("placementGroupId")) is group, f"{server.name}: placementGroupId"
        networks = inputs.get("networks", [])
        assert len(networks) == 1, f"{server.name}: networks {networks}"
        assert mocks.resolve(networks[0]["networkId"]) is net, f"{server.name}: not attached to prod-net-net"
        assert networks[0]["ip"] == PRIVATE_IPS[server.name], f"{server.name}: private IP {networks[0]['ip']}"
        assert [mocks.resolve(k) for k in inputs["sshKeys"]] == [one(mocks, SSH_KEY, "prod-net-ssh")], server.name


def database_servers(result: program.RunResult) -> list[program.Registration]:
    return [s for s in result.mocks.of_type(SERVER) if s.name != MONITORING]


def test_servers_are_protected(prod):
    for server in database_servers(prod):
        assert server.inputs.get("deleteProtection") is True, f"{server.name}: deleteProtection"
        assert server.inputs.get("rebuildProtection") is True, f"{server.name}: rebuildProtection"


def test_the_monitoring_server_is_not_protected_as_it_holds_only_configuration(prod):
    server = one(prod.mocks, SERVER, MONITORING)
    assert not server.inputs.get("deleteProtection") and not server.inputs.get("rebuildProtection")


def test_protection_follows_the_cluster_setting():
    def edit(cfg):
        cfg["pgstack:clusters"]["g1"]["deleteProtection"] = False

    for server in database_servers(run(edit)):
        assert server.inputs.get("deleteProtection") is False, f"{server.name}: deleteProtection"
        assert server.inputs.get("rebuildProtection") is False, f"{server.name}: rebuildProtection"


def test_servers_ignore_changes_that_would_rebuild_them(prod):
    for server in prod.mocks.of_type(SERVER):
        ignored = set(server.options.get("ignoreChanges", []))
        assert IGNORED <= ignored, f"{server.name}: ignoreChanges lacks {sorted(IGNORED - ignored)}"


def comparable(mocks: IdMocks, reg: program.Registration, ignored: list[str]) -> dict:
    return {k: v for k, v in mocks.normalize(reg.inputs).items() if k not in ignored}


def test_new_ssh_public_key_does_not_replace_the_primary(prod):
    new_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWKEYnewkeyNEWKEYnewkeyNEWKEYnewkey0001 admin@hcb"
    after = run(lambda cfg: cfg.update({"pgstack:sshPublicKey": new_key}))
    assert one(after.mocks, SSH_KEY, "prod-net-ssh").inputs["publicKey"] == new_key, "prod-net-ssh kept the old key"
    before_srv = one(prod.mocks, SERVER, "prod-g1-primary")
    after_srv = one(after.mocks, SERVER, "prod-g1-primary")
    ignored = after_srv.options["ignoreChanges"]
    assert comparable(prod.mocks, before_srv, ignored) == comparable(after.mocks, after_srv, ignored), (
        "prod-g1-primary: a new sshPublicKey changes inputs that are not ignored, which replaces the server"
    )


def test_server_input_comparison_sees_a_real_change(prod):
    """The comparison above can fail: a new server type is a change of prod-g1-primary."""
    after = run(lambda cfg: cfg["pgstack:hetzner"].update({"serverType": "ccx23"}))
    before_srv = one(prod.mocks, SERVER, "prod-g1-primary")
    after_srv = one(after.mocks, SERVER, "prod-g1-primary")
    ignored = after_srv.options["ignoreChanges"]
    assert comparable(prod.mocks, before_srv, ignored) != comparable(after.mocks, after_srv, ignored)


def test_type_and_name_pairs_are_unique(prod):
    counts = Counter((r.type, r.name) for r in prod.mocks.registrations)
    dupes = [pair for pair, n in counts.items() if n > 1]
    assert not dupes, f"registered twice: {dupes}"


def test_child_names_start_with_their_parent_name(prod):
    components = {r.name for r in prod.mocks.registrations if not r.custom}
    children = [r for r in prod.mocks.registrations if r.parent in components]
    assert len(children) > len(components), "expected most resources to have a component parent"
    for reg in children:
        assert reg.name == reg.parent or reg.name.startswith(f"{reg.parent}-"), (
            f"{reg.type} {reg.name}: name does not start with its parent's name {reg.parent}"
        )


def test_component_type_tokens(prod):
    components = [r for r in prod.mocks.registrations if not r.custom]
    assert components, "no components registered"
    for reg in components:
        match = re.fullmatch(r"pgstack:([a-z_]+):([A-Z][A-Za-z0-9]*)", reg.type)
        assert match, f"{reg.name}: component type {reg.type} is not pgstack:<module>:<Type>"
        # The <module> part is frozen with the URNs (components moved into target packages
        # without changing it): the class lives in a module of that name somewhere in components/.
        modules = list((REPO / "components").rglob(f"{match.group(1)}.py"))
        assert len(modules) == 1, f"{reg.name}: {reg.type} names no single module ({modules})"
        assert f"class {match.group(2)}(" in modules[0].read_text(), (
            f"{reg.name}: no class {match.group(2)} in {modules[0]}"
        )


def test_no_resource_is_protected(prod):
    for reg in prod.mocks.registrations:
        assert reg.options.get("protect") is False, f"{reg.type} {reg.name} sets protect"


# --- secrets --------------------------------------------------------------------------------------


def passwords(result: program.RunResult) -> dict[str, str]:
    """Every RandomPassword's value, by resource name (IdMocks gives each its own)."""
    values = {}
    for reg in result.mocks.of_type(PASSWORD):
        value = password_for(reg.name, int(program.unwrap(reg.inputs["length"])))
        values[reg.name] = value
    return values


def test_database_url_is_a_secret_output(prod):
    assert "database_url" in prod.secret_outputs, "database_url is exported in plain text"
    rails = passwords(prod)["prod-role-rails"]
    assert f"rails:{rails}@10.0.1.5:5432/hcb_production" in prod.outputs["database_url"], (
        "database_url does not carry the rails password (so the leak tests below look for the wrong values)"
    )


def test_outputs_holding_a_secret_are_secret(prod):
    values = secret_values(prod)
    for key, value in prod.outputs.items():
        found = leaks(json.dumps(value), values)
        assert not found or key in prod.secret_outputs, f"stack output {key} shows {found} in plain text"


def test_password_results_are_secret(prod):
    regs = prod.mocks.of_type(PASSWORD)
    names = {r.name for r in regs}
    logins = {"rails", "hcb_migrator", "metabase", "gary", "albert", "replicator"}
    assert {f"prod-role-{n}" for n in logins} <= names, f"missing login passwords: {sorted(names)}"
    for reg in regs:
        assert "result" in reg.options.get("additionalSecretOutputs", []), f"{reg.name}: result is not secret"
        assert program.unwrap(reg.inputs["length"]) >= 32, f"{reg.name}: short password"


def secret_values(result: program.RunResult) -> dict[str, str]:
    """The stack's secrets (conftest), every generated password, and the SCRAM verifiers of login roles."""
    values = dict(SECRETS)
    for name, value in passwords(result).items():
        values[name] = value
        reg = one(result.mocks, PASSWORD, name)
        if reg.parent == "prod-role":
            values[f"{name} verifier"] = scram_verifier(name.removeprefix("prod-role-"), value)
    return values


def leaks(text: str, values: dict[str, str]) -> list[str]:
    return sorted({label for label, value in values.items() for form in encodings(value) if form in text})


def test_no_secret_outside_a_secret_envelope(prod):
    values = secret_values(prod)
    assert len(set(values.values())) == len(values), "test secrets must be distinct"
    found = []
    for reg in prod.mocks.registrations:
        shown = json.dumps(program.redact(reg.inputs), sort_keys=True)
        found += [f"{reg.type} {reg.name}: {label}" for label in leaks(shown, values)]
    assert not found, "secrets outside secret envelopes:\n" + "\n".join(found)


def test_secret_search_finds_what_the_envelopes_hold(prod):
    """The search above can fail: in the raw inputs, the key and the verifiers are there."""
    raw = json.dumps([r.inputs for r in prod.mocks.registrations], sort_keys=True)
    found = leaks(raw, secret_values(prod))
    assert "pgstack:sshPrivateKey" in found
    assert "prod-role-rails verifier" in found


def test_remote_commands_never_use_environment(prod):
    commands = prod.mocks.of_type(COMMAND)
    assert commands
    for reg in commands:
        assert not program.unwrap(reg.inputs.get("environment")), (
            f"{reg.name}: uses environment, which stock sshd drops (and which would show the values)"
        )


def test_roles_stdin_is_secret_and_carries_verifiers_only(prod):
    reg = one(prod.mocks, COMMAND, "prod-g1-primary-roles")
    stdin = reg.inputs.get("stdin")
    assert program.is_secret(stdin), "prod-g1-primary-roles: stdin is not secret"
    sql = program.unwrap(stdin)
    values = secret_values(prod)
    assert values["prod-role-rails verifier"] in sql, "prod-g1-primary-roles: the rails verifier is not set"
    plain = [label for label, v in values.items() if not label.endswith("verifier") and v in sql]
    assert not plain, f"prod-g1-primary-roles: plain secrets in the SQL: {plain}"


def test_command_text_holds_no_secret(prod):
    values = secret_values(prod)
    for reg in prod.mocks.of_type(COMMAND):
        assert not program.is_secret(reg.inputs["create"]), f"{reg.name}: create is secret, so unreviewable"
        found = leaks(command_text(reg), values)
        assert not found, f"{reg.name}: the command text holds {found}"


def test_ssh_private_key_reaches_commands_only_as_a_secret(prod):
    for reg in prod.mocks.of_type(COMMAND):
        conn = reg.inputs["connection"]
        assert program.is_secret(conn), f"{reg.name}: connection is not secret"
        assert program.unwrap(conn)["privateKey"] == SECRETS["pgstack:sshPrivateKey"], reg.name


def test_replica_database_url_is_a_secret_read_only_url():
    result = run_stack("prod")
    assert "replica_database_url" in result.secret_outputs, "replica_database_url must be a secret output"
    url = result.outputs["replica_database_url"]
    assert url.startswith("postgres://metabase:") and "@10.0.1.6:5432/hcb_production" in url, url
    assert url.endswith("sslmode=require"), url


def test_the_role_sql_turns_statement_logging_off_before_any_verifier():
    """log_statement = 'ddl' would write every ALTER ROLE ... PASSWORD '<verifier>' to the server log."""
    from postgres import roles

    login = roles.Login("app", 5, scram_verifier("app", "pw-" * 12), ("write",))
    sql = roles.render(roles.RoleModel("db", "owner", (login,)))
    quiet = sql.index("set_config('log_statement', 'none', false)")
    assert quiet < sql.index("SCRAM-SHA-256$"), "a verifier is sent while statements are still logged"
    # Slow and failing statements are logged with their text too.
    assert "set_config('log_min_duration_statement', '-1', false)" in sql[: sql.index("SCRAM-SHA-256$")]
    assert "set_config('log_min_error_statement', 'panic', false)" in sql[: sql.index("SCRAM-SHA-256$")]
    # The session that logs no statement is the one that sends the verifiers: no \connect between.
    assert "\\connect" not in sql[quiet : sql.rindex("SCRAM-SHA-256$")]


# Every component type token, as the landed stacks have them. A token is part of the URN of the
# component and of every resource below it: a changed token makes the real engine replace running
# servers. Moving a module does not change its token; a token that must change goes in an alias.
FROZEN_TOKENS = {
    "pgstack:alert_topics:AlertTopics",
    "pgstack:backup_bucket:BackupBucket",
    "pgstack:certificate_authority:CertificateAuthority",
    "pgstack:certificate_authority:ServerCertificate",
    "pgstack:credentials:Credentials",
    "pgstack:dns_cutover:DnsCutover",
    "pgstack:heartbeat_checks:HeartbeatChecks",
    "pgstack:monitoring_server:MonitoringServer",
    "pgstack:postgres_server:PostgresServer",
    "pgstack:private_network:PrivateNetwork",
    "pgstack:rds_alarms:RdsAlarms",
    "pgstack:rds_base:RdsBase",
    "pgstack:rds_cutover_stop:CutoverStop",
    "pgstack:rds_events:RdsEvents",
    "pgstack:rds_instance:RdsInstance",
    "pgstack:replica_pair:ReplicaPair",
}


def test_component_type_tokens_are_frozen():
    seen = set()
    for stack in ("prod", "staging"):
        result = run_stack(stack)
        seen |= {r.type for r in result.mocks.registrations if not r.custom}
        # No component was renamed under an alias: none of the landed ones carries one.
        for reg in result.mocks.registrations:
            if reg.type in FROZEN_TOKENS:
                assert not reg.options.get("aliases"), f"{reg.name}: {reg.type} has aliases {reg.options['aliases']}"
    changed = seen - FROZEN_TOKENS
    assert not changed, (
        f"new or changed component type tokens {sorted(changed)}: add new ones here; a changed one needs an alias"
    )
    assert FROZEN_TOKENS <= seen, f"tokens no stack registers any more: {sorted(FROZEN_TOKENS - seen)}"
