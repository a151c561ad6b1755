"""PrivateNetwork: what a stack's Hetzner servers share.

One SSH key per stack (Hetzner refuses a second key with the same fingerprint), the private
network and its subnet, the SSH-only firewall and the spread placement group (seed 000).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_hcloud as hcloud


@dataclass
class PrivateNetworkArgs:
    network_cidr: str
    subnet_cidr: str
    network_zone: str
    admin_cidrs: list[str]
    ssh_public_key: str
    labels: dict[str, str] = field(default_factory=dict)


class PrivateNetwork(pulumi.ComponentResource):
    def __init__(self, name: str, args: PrivateNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:private_network:PrivateNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {**args.labels, "pgstack": name}

        self.ssh_key = hcloud.SshKey(f"{name}-ssh", public_key=args.ssh_public_key, labels=labels, opts=child)
        self.network = hcloud.Network(f"{name}-net", ip_range=args.network_cidr, labels=labels, opts=child)
        self.subnet = hcloud.NetworkSubnet(
            f"{name}-subnet",
            network_id=self.network.id.apply(int),
            type="cloud",
            network_zone=args.network_zone,
            ip_range=args.subnet_cidr,
            opts=child,
        )
        # Inbound: SSH from the admins, nothing else. PostgreSQL is reached over the private
        # network only, which Hetzner firewalls do not filter.
        self.firewall = hcloud.Firewall(
            f"{name}-fw",
            labels=labels,
            rules=[
                hcloud.FirewallRuleArgs(
                    direction="in",
                    protocol="tcp",
                    port="22",
                    source_ips=list(args.admin_cidrs),
                    description="SSH from the admin CIDRs",
                )
            ],
            opts=child,
        )
        self.placement_group = hcloud.PlacementGroup(f"{name}-spread", type="spread", labels=labels, opts=child)
        self.register_outputs(
            {
                "network_id": self.network.id,
                "subnet_id": self.subnet.id,
                "firewall_id": self.firewall.id,
                "placement_group_id": self.placement_group.id,
            }
        )
