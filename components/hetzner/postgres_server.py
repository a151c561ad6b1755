"""PostgresServer: one Hetzner server running PostgreSQL, configured over SSH.

The server joins the private network with a fixed IP, sits in the spread placement group behind
the SSH-only firewall, and is protected from accidents: delete and rebuild protection on, and
inputs that would replace a running database server (SSH keys, image, user data) are ignored
after creation. In-guest steps run in order: wait, install, cluster, configure; the caller adds
what depends on the server's role (roles, backups, base backup, restore) after `ready`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_hcloud as hcloud

from components.shared import remote
from components.shared.certificate_authority import CertificateAuthority, ServerCertificate, ServerCertificateArgs
from postgres.layout import Layout
from postgres.pgbackrest import TESTED_SERIES

from .private_network import PrivateNetwork

# Inputs whose change would make Hetzner rebuild the server and lose its disk: a running
# database server keeps them as created. Rotating admin keys is done in the guest instead.
IGNORED_AFTER_CREATE = ["sshKeys", "image", "userData"]


@dataclass(frozen=True)
class ServerSpec:
    """What every server of a generation shares."""

    location: str
    server_type: str
    image: str
    package_source: str
    volume_size_gb: int = 0
    delete_protection: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    # The stack CA that signs this server's certificate (TLS for clients and replication).
    tls: CertificateAuthority | None = None


@dataclass
class PostgresServerArgs:
    private_ip: str
    spec: ServerSpec
    network: PrivateNetwork
    ssh_private_key: pulumi.Input[str]
    pg_conf: str
    hba_conf: str
    layout: Layout
    # How the data directory gets its data when it is not a fresh primary: a base backup of the
    # primary (replica) or a point-in-time restore (restored generation). Runs once in the
    # server's life: create-only, and guarded in the script.
    bootstrap: Bootstrap | None = None


@dataclass
class Bootstrap:
    script: str
    params: dict[str, str | int]
    stdin: pulumi.Input[str] | None = None
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class PostgresServer(pulumi.ComponentResource):
    def __init__(self, name: str, args: PostgresServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:postgres_server:PostgresServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {**args.spec.labels, "pgstack-server": name}
        net = args.network

        self.server = hcloud.Server(
            name,
            name=name,
            server_type=args.spec.server_type,
            image=args.spec.image,
            location=args.spec.location,
            ssh_keys=[net.ssh_key.id],
            firewall_ids=[net.firewall.id.apply(int)],
            placement_group_id=net.placement_group.id.apply(int),
            # Attached at creation, so the private address exists from the first boot.
            networks=[hcloud.ServerNetworkArgs(network_id=net.network.id.apply(int), ip=args.private_ip)],
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            delete_protection=args.spec.delete_protection,
            rebuild_protection=args.spec.delete_protection,
            labels=labels,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[net.subnet], ignore_changes=IGNORED_AFTER_CREATE),
        )
        volume_device: pulumi.Input[str] = ""
        self.volume = None
        if args.spec.volume_size_gb:
            self.volume = hcloud.Volume(
                f"{name}-data",
                size=args.spec.volume_size_gb,
                server_id=self.server.id.apply(int),
                automount=False,
                delete_protection=args.spec.delete_protection,
                labels=labels,
                opts=child,
            )
            volume_device = self.volume.linux_device

        self.private_ip = args.private_ip
        self.public_ip = self.server.ipv4_address
        self.ssh = remote.Ssh(host=self.server.ipv4_address, private_key=args.ssh_private_key)
        pg: dict[str, str | int] = {"PG_VERSION": args.layout.version}
        wait = remote.step(f"{name}-wait", self.ssh, "wait", pg, self, [self.server])
        install = remote.step(
            f"{name}-install",
            self.ssh,
            "install",
            {**pg, "PACKAGE_SOURCE": args.spec.package_source, "PGBACKREST_SERIES": TESTED_SERIES},
            self,
            [wait],
        )

        # Resolved at render time for the command text: the device path is known once the
        # volume exists, and stays fixed.
        def with_device(dev: str) -> dict[str, str | int]:
            return {**pg, "VOLUME_DEVICE": dev or ""}

        cluster_params = pulumi.Output.from_input(volume_device).apply(with_device)
        cluster = remote.step(
            f"{name}-cluster",
            self.ssh,
            "cluster",
            cluster_params,
            self,
            [install, *([self.volume] if self.volume else [])],
        )
        before_configure: list[pulumi.Resource] = [cluster]
        # Steps that copy the server's certificate (the exporters) take it as an input, so a
        # renewed certificate reaches them too.
        self.cert_pem: pulumi.Output[str] | None = None
        if args.spec.tls is not None:
            cert = ServerCertificate(
                f"{name}-certificate",
                ServerCertificateArgs(ca=args.spec.tls, common_name=name, ip_addresses=[args.private_ip]),
                pulumi.ResourceOptions(parent=self),
            )
            self.cert_pem = cert.cert_pem
            bundle = pulumi.Output.all(cert.key_pem, cert.cert_pem, args.spec.tls.cert_pem).apply(
                lambda pems: "".join(p if p.endswith("\n") else p + "\n" for p in pems)
            )
            before_configure = [remote.step(f"{name}-tls", self.ssh, "tls", pg, self, [cluster], stdin=bundle)]
        self.configure = remote.step(
            f"{name}-configure",
            self.ssh,
            "configure",
            {**pg, "PG_CONF": args.pg_conf, "HBA_CONF": args.hba_conf},
            self,
            before_configure,
        )
        self.ready: pulumi.Resource = self.configure
        if args.bootstrap is not None:
            boot = args.bootstrap
            self.ready = remote.step(
                f"{name}-{boot.script}",
                self.ssh,
                boot.script,
                {**pg, **boot.params},
                self,
                [self.configure, *boot.depends_on],
                stdin=boot.stdin,
                create_only=True,
            )
        self.register_outputs({"public_ip": self.public_ip, "private_ip": self.private_ip})
