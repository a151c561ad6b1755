"""ReplicaPair: one cluster generation, a primary and its streaming replicas.

The primary carries the role setup; every replica gets its own physical slot and a pg_hba
replication line for its /32 only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from . import pgconf, pghba, remote, roles_sql
from .credentials import REPLICATOR, Credentials
from .pghba import HbaRule
from .postgres_server import PostgresServer, PostgresServerArgs
from .private_network import PrivateNetwork


@dataclass
class Access:
    """Who may connect to the database, and from where (rendered into pg_hba)."""

    database: str
    rules: list[tuple[str, list[str]]]  # (role, cidrs)


@dataclass
class ReplicaPairArgs:
    primary_ip: str
    replica_ips: list[str]
    server: dict  # location, server_type, image, volume_size_gb, package_source, delete_protection, labels
    network: PrivateNetwork
    ssh_private_key: pulumi.Input[str]
    access: Access
    role_model: roles_sql.RoleModel | None  # verifiers are filled from credentials
    credentials: Credentials
    conf: pgconf.ServerConf
    role_sql: pulumi.Output[str] | None = None
    labels: dict[str, str] = field(default_factory=dict)


def hba_rules(access: Access, replica_ips: list[str]) -> list[HbaRule]:
    rules = pghba.base_rules()
    for role, cidrs in access.rules:
        for cidr in cidrs:
            rules.append(HbaRule("host", access.database, role, cidr, "scram-sha-256", f"{role} from {cidr}"))
    for ip in replica_ips:
        rules.append(HbaRule("host", "replication", REPLICATOR, f"{ip}/32", "scram-sha-256", f"replica {ip}"))
    return rules


class ReplicaPair(pulumi.ComponentResource):
    def __init__(self, name: str, args: ReplicaPairArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:replica_pair:ReplicaPair", name, None, opts)
        hba = pghba.render(hba_rules(args.access, args.replica_ips))

        def server(role: str, ip: str) -> PostgresServer:
            conf = pgconf.ServerConf(**{**args.conf.__dict__, "cluster_name": f"{name}-{role}", "private_ip": ip})
            return PostgresServer(
                f"{name}-{role}",
                PostgresServerArgs(
                    private_ip=ip,
                    network=args.network,
                    ssh_private_key=args.ssh_private_key,
                    pg_conf=pgconf.render(conf),
                    hba_conf=hba,
                    **args.server,
                ),
                pulumi.ResourceOptions(parent=self),
            )

        self.primary = server("primary", args.primary_ip)
        self.roles = None
        if args.role_sql is not None:
            self.roles = remote.step(
                f"{name}-primary-roles",
                self.primary.ssh,
                "roles",
                {"PG_VERSION": 15},
                self,
                [self.primary.ready],
                stdin=args.role_sql,
            )
        self.replicas = [server(f"replica-{i + 1}", ip) for i, ip in enumerate(args.replica_ips)]
        self.register_outputs(
            {
                "primary_private_ip": self.primary.private_ip,
                "primary_public_ip": self.primary.public_ip,
                "replica_private_ips": [r.private_ip for r in self.replicas],
            }
        )
