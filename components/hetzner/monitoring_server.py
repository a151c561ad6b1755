"""MonitoringServer: one small server in the private network running Prometheus and Alertmanager.

It sits behind the stack's SSH-only firewall, like the database servers; Prometheus and
Alertmanager listen on its loopback only, and it reaches the exporters over the private network.
Everything it holds is configuration, so it is neither delete- nor rebuild-protected: a config
edit may replace it and nothing is lost but metric history.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from components.shared import remote
from monitoring import server as monitoring_conf

from .private_network import PrivateNetwork

# Hetzner would rebuild the server on a changed key, image or user data: keep it as created.
IGNORED_AFTER_CREATE = ["sshKeys", "image", "userData"]


@dataclass
class MonitoringServerArgs:
    private_ip: str
    server_type: str
    image: str
    location: str
    network: PrivateNetwork
    ssh_private_key: pulumi.Input[str]
    pg_version: int  # every step carries it (lib.sh); the monitoring steps do not use it
    prometheus: monitoring_conf.PrometheusConf
    rules_yml: str
    ca_pem: pulumi.Input[str]
    scrape_password: pulumi.Output[str]  # secret
    alertmanager_yml: pulumi.Output[str]  # secret: it may hold receiver secrets
    retention_days: int
    labels: dict[str, str]
    # Made before the first Watchdog is sent (the heartbeat check), so none is lost.
    depends_on: list[pulumi.Resource]


class MonitoringServer(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:monitoring_server:MonitoringServer", name, None, opts)
        net = args.network
        self.server = hcloud.Server(
            name,
            name=name,
            server_type=args.server_type,
            image=args.image,
            location=args.location,
            ssh_keys=[net.ssh_key.id],
            firewall_ids=[net.firewall.id.apply(int)],
            # Spread from the database servers too: one host failure does not take both.
            placement_group_id=net.placement_group.id.apply(int),
            networks=[hcloud.ServerNetworkArgs(network_id=net.network.id.apply(int), ip=args.private_ip)],
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            labels={**args.labels, "pgstack-server": name},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[net.subnet], ignore_changes=IGNORED_AFTER_CREATE),
        )
        self.private_ip = args.private_ip
        ssh = remote.Ssh(host=self.server.ipv4_address, private_key=args.ssh_private_key)
        pg: dict[str, str | int] = {"PG_VERSION": args.pg_version}
        wait = remote.step(f"{name}-wait", ssh, "wait", pg, self, [self.server])
        params = pulumi.Output.from_input(args.ca_pem).apply(
            lambda ca: {
                **pg,
                "PROMETHEUS_YML": monitoring_conf.prometheus_yml(args.prometheus),
                "RULES_YML": args.rules_yml,
                "CA_PEM": ca,
                "RETENTION_DAYS": args.retention_days,
            }
        )
        stdin: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.scrape_password, args.alertmanager_yml).apply(lambda v: f"{v[0]}\n{v[1]}")
        )
        self.configure = remote.step(
            f"{name}-configure", ssh, "monitoring", params, self, [wait, *args.depends_on], stdin=stdin
        )
        self.register_outputs({"private_ip": self.private_ip, "public_ip": self.server.ipv4_address})
