"""DnsCutover: the name clients use (`<record>.<zone>`), pointed at the active generation.

One interface, two DNS providers:
- route53: one weighted record per generation (set_identifier = the generation), weight 100 for
  the active one and 0 for the others, as in seed 001. A cutover is an in-place weight change
  of two records. No record is deleted or created, so the name never stops resolving.
- hetzner: one `hcloud.ZoneRrset` in the zone named by `dns.zone` (its `zone` input takes an ID
  or a name), whose single value is the active generation's target. Hetzner DNS has no weights.

Targets are hostnames (CNAME: an RDS endpoint) or IPv4 addresses (A: a Hetzner primary).
Switching is one config key, `pgstack:active`; the caller passes it in as `active`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi

from config.model import Dns

ACTIVE_WEIGHT = 100
STANDBY_WEIGHT = 0


@dataclass
class DnsCutoverArgs:
    dns: Dns
    # generation -> the hostname (CNAME) or IPv4 address (A) clients should reach there.
    targets: dict[str, pulumi.Input[str]]
    active: str
    record_type: Literal["CNAME", "A"] = "CNAME"


class DnsCutover(pulumi.ComponentResource):
    def __init__(self, name: str, args: DnsCutoverArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:dns_cutover:DnsCutover", name, None, opts)
        if args.active not in args.targets:
            raise ValueError(f"active generation {args.active!r} has no target (have {sorted(args.targets)})")
        dns = args.dns
        self.fqdn = f"{dns.record}.{dns.zone}"
        self.records: dict[str, pulumi.CustomResource] = {}
        if dns.provider == "route53":
            import pulumi_aws as aws

            for gen, target in sorted(args.targets.items()):
                self.records[gen] = aws.route53.Record(
                    f"{name}-{gen}",
                    zone_id=dns.zone_id,
                    name=self.fqdn,
                    type=args.record_type,
                    ttl=dns.ttl,
                    records=[target],
                    set_identifier=gen,
                    weighted_routing_policies=[
                        aws.route53.RecordWeightedRoutingPolicyArgs(
                            weight=ACTIVE_WEIGHT if gen == args.active else STANDBY_WEIGHT
                        )
                    ],
                    opts=pulumi.ResourceOptions(parent=self),
                )
        else:
            import pulumi_hcloud as hcloud

            target = pulumi.Output.from_input(args.targets[args.active])
            if args.record_type == "CNAME":
                # A CNAME value is a fully qualified name: without the final dot the zone is appended.
                target = target.apply(lambda t: t if t.endswith(".") else f"{t}.")
            self.records[args.active] = hcloud.ZoneRrset(
                f"{name}-record",
                zone=dns.zone,
                name=dns.record,
                type=args.record_type,
                ttl=dns.ttl,
                records=[hcloud.ZoneRrsetRecordArgs(value=target, comment=f"pgstack generation {args.active}")],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"fqdn": self.fqdn, "active": args.active})
