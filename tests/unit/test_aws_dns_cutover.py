"""DnsCutover on its own: one interface, Route53 (weighted) and Hetzner DNS (one RRset)."""

from __future__ import annotations

import asyncio

import pulumi
import pytest
from pulumi.runtime import settings as runtime_settings

from components.shared.dns_cutover import DnsCutover, DnsCutoverArgs
from config.model import Dns
from sandbox import program
from tests.unit import aws_support as s
from tests.unit.test_provider_schema import check_resource

ROUTE53 = Dns(provider="route53", zone="example.net", zone_id="Z0123456789ABC", ttl=60)
HETZNER = Dns(provider="hetzner", zone="example.net", record="db", ttl=300)
IPS = {"g1": "10.0.1.5", "g2": "10.0.1.9"}
HOSTS = {"g1": "staging-g1-db.abc.eu-west-2.rds.amazonaws.com", "g2": "staging-g2-db.abc.eu-west-2.rds.amazonaws.com"}


def cutover(args: DnsCutoverArgs) -> list[program.Registration]:
    """Register one DnsCutover under recording mocks; return its registrations."""
    mocks = program.RecordingMocks()
    pulumi.runtime.set_all_config({})
    runtime_settings.ROOT.set(None)
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(mocks, project="pgstack", stack="t", monitor=program.OptionsMonitor(mocks))

    @pulumi.runtime.test
    def run():
        component = DnsCutover("t-cutover", args)
        return pulumi.Output.from_input(component.fqdn)

    run()
    return [r for r in mocks.registrations if r.custom]


def by_name(regs) -> dict[str, dict]:
    return {r.name: program.unwrap(r.inputs) for r in regs}


@pytest.mark.parametrize(("record_type", "targets"), [("CNAME", HOSTS), ("A", IPS)])
def test_route53_weights_the_active_generation(record_type, targets):
    for active in ("g1", "g2"):
        records = by_name(cutover(DnsCutoverArgs(ROUTE53, targets, active, record_type)))
        assert set(records) == {"t-cutover-g1", "t-cutover-g2"}
        for gen in ("g1", "g2"):
            r = records[f"t-cutover-{gen}"]
            assert (r["name"], r["type"], r["zoneId"], r["setIdentifier"]) == (
                "db.example.net",
                record_type,
                "Z0123456789ABC",
                gen,
            )
            assert r["records"] == [targets[gen]]
            assert r["weightedRoutingPolicies"] == [{"weight": 100 if gen == active else 0}]


def test_hetzner_a_record_holds_the_active_ip_only():
    for active in ("g1", "g2"):
        regs = cutover(DnsCutoverArgs(HETZNER, IPS, active, "A"))
        assert [r.type for r in regs] == [s.RRSET]
        rrset = program.unwrap(regs[0].inputs)
        assert (rrset["zone"], rrset["name"], rrset["type"], rrset["ttl"]) == ("example.net", "db", "A", 300)
        assert [r["value"] for r in rrset["records"]] == [IPS[active]]
        assert not check_resource(regs[0].type, regs[0].inputs), "inputs the hcloud provider would refuse"


def test_hetzner_cname_values_are_fully_qualified():
    regs = cutover(DnsCutoverArgs(HETZNER, HOSTS, "g2", "CNAME"))
    assert [r["value"] for r in program.unwrap(regs[0].inputs)["records"]] == [HOSTS["g2"] + "."]


def test_the_active_generation_needs_a_target():
    with pytest.raises(Exception, match="no target"):
        cutover(DnsCutoverArgs(ROUTE53, IPS, "g3", "A"))
