"""pg_hba.conf from typed rules: order, refusals, and the lines the prod stack renders."""

from __future__ import annotations

import ipaddress
import re

import pytest

from components.hetzner.replica_pair import Access, hba_rules
from postgres import hba as pghba
from postgres.hba import HbaRule
from tests.conftest import run_stack
from tests.unit.support import COMMAND, command_text, one, script_param

ACCESS = Access(
    database="hcb_production",
    rules=[("rails", ["10.0.1.0/24"]), ("metabase", ["10.0.1.0/24", "10.0.2.0/24"]), ("gary", ["198.51.100.10/32"])],
)


def lines(text: str) -> list[list[str]]:
    """The non-comment lines of a pg_hba.conf, split into columns."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_rules_render_in_order():
    rules = hba_rules(ACCESS, ["10.0.1.6"])
    rendered = lines(pghba.render(rules))
    assert len(rendered) == len(rules)
    for rule, cols in zip(rules, rendered, strict=True):
        expected = [rule.type, rule.database, rule.user, *([rule.address] if rule.address else []), rule.method]
        assert cols == expected


def test_rule_order_is_admin_then_roles_then_replication():
    rendered = lines(pghba.render(hba_rules(ACCESS, ["10.0.1.6", "10.0.1.7"])))
    assert rendered[0] == ["local", "all", "postgres", "peer"], "the postgres peer rule must come first"
    assert rendered[1] == ["local", "all", "all", "scram-sha-256"]
    assert rendered[2] == ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]
    users = [cols[2] for cols in rendered[3:]]
    assert users == ["rails", "metabase", "metabase", "gary", "replicator", "replicator"]
    assert rendered[-2:] == [
        ["hostssl", "replication", "replicator", "10.0.1.6/32", "scram-sha-256"],
        ["hostssl", "replication", "replicator", "10.0.1.7/32", "scram-sha-256"],
    ]


def test_each_rule_has_its_comment_above_it():
    text = pghba.render([HbaRule("host", "db", "app", "10.0.1.0/24", "scram-sha-256", "the app")])
    line = "host    db              app             10.0.1.0/24         scram-sha-256"
    assert text.splitlines()[1:] == ["# the app", line]


@pytest.mark.parametrize("anywhere", ["0.0.0.0/0", "::/0"])
@pytest.mark.parametrize("method", ["scram-sha-256", "peer"])
def test_allow_rule_from_anywhere_raises(anywhere, method):
    with pytest.raises(ValueError, match="anywhere"):
        HbaRule("host", "all", "all", anywhere, method, "open")


def test_reject_rule_from_anywhere_is_allowed():
    rule = HbaRule("host", "all", "all", "0.0.0.0/0", "reject", "refuse the rest")
    assert rule.render().endswith("reject")


def test_non_strict_address_raises():
    with pytest.raises(ValueError):
        HbaRule("host", "all", "all", "10.0.1.5/24", "scram-sha-256", "host bits set")


def test_local_rules_take_no_address():
    with pytest.raises(ValueError, match="local rules take no address"):
        HbaRule("local", "all", "all", "10.0.1.0/24", "scram-sha-256", "bad")
    with pytest.raises(ValueError, match="network rules need one"):
        HbaRule("host", "all", "all", None, "scram-sha-256", "bad")
    assert lines(HbaRule("local", "all", "all", None, "peer", "ok").render()) == [["local", "all", "all", "peer"]]


@pytest.fixture(scope="module")
def prod_hba() -> dict[str, str]:
    result = run_stack("prod")
    return {
        name: script_param(command_text(one(result.mocks, COMMAND, f"{name}-configure")), "HBA_CONF")
        for name in ("prod-g1-primary", "prod-g1-replica-1")
    }


def test_prod_hba_lets_the_app_in_from_the_private_subnet(prod_hba):
    for name, text in prod_hba.items():
        assert re.search(r"^hostssl\s+hcb_production\s+rails\s+10\.0\.1\.0/24\s+scram-sha-256\s*$", text, re.M), (
            f"{name}: no scram-sha-256 line for rails from 10.0.1.0/24:\n{text}"
        )
        assert ["hostssl", "replication", "replicator", "10.0.1.6/32", "scram-sha-256"] in lines(text), name


def test_prod_hba_has_no_weak_or_open_rule(prod_hba):
    for name, text in prod_hba.items():
        rendered = lines(text)
        assert rendered, f"{name}: empty pg_hba"
        for cols in rendered:
            assert cols[-1] in ("peer", "scram-sha-256", "reject"), f"{name}: weak method in {cols}"
            if cols[0] != "local":
                net = ipaddress.ip_network(cols[3])
                assert net.prefixlen > 0, f"{name}: rule open to anywhere: {cols}"
        for word in ("trust", "md5", "0.0.0.0/0", "::/0"):
            assert word not in " ".join(" ".join(c) for c in rendered), f"{name}: {word} in pg_hba"
