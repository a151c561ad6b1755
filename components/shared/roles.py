"""The role model wired to a stack's credentials: the same SQL on a Hetzner server and on RDS."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import pulumi

from config import Settings
from postgres import roles as roles_sql

from .credentials import REPLICATOR, Credentials


@dataclass(frozen=True)
class LoginSpec:
    """A login role as the stack declares it; its verifier comes from Credentials."""

    name: str
    connection_limit: int
    groups: tuple[str, ...]
    act_as: str | None = None
    log_all_statements: bool = False
    connect: tuple[str, ...] = ()


def login_versions(settings: Settings, replicator: bool = True) -> dict[str, int]:
    versions = {r.name: r.password_version for r in settings.roles.logins()}
    if replicator:
        versions[REPLICATOR] = 1
    return versions


def canary(settings: Settings) -> bool:
    """The write canary's database exists on target hetzner (RDS runs no drill and no canary timer)."""
    return settings.target == "hetzner"


def login_specs(settings: Settings) -> list[LoginSpec]:
    roles = settings.roles
    owner = roles.owner
    app = roles.app
    # On hetzner the monitoring role also reads the write canary (postgres_exporter's database).
    monitoring_dbs = ("postgres", roles_sql.CANARY_DATABASE) if canary(settings) else ("postgres",)
    return [
        LoginSpec(
            app.name,
            app.connection_limit,
            ("write", owner) if app.runs_migrations else ("write",),
            owner if app.runs_migrations else None,
        ),
        LoginSpec(roles.migrator.name, roles.migrator.connection_limit, (owner,), owner),
        LoginSpec(roles.reporting.name, roles.reporting.connection_limit, ("readonly",)),
        # Statistics only: pg_monitor, the postgres database (and the canary's); no grant in the app's.
        LoginSpec(roles.monitoring.name, roles.monitoring.connection_limit, ("pg_monitor",), connect=monitoring_dbs),
        *[LoginSpec(h.name, h.connection_limit, (h.access,), log_all_statements=True) for h in roles.humans],
    ]


def role_model(settings: Settings, creds: Credentials, replicator: bool = True) -> pulumi.Output[str]:
    """The role SQL with every login's verifier filled in (a secret Output)."""
    specs = login_specs(settings)
    # pg_basebackup -X stream opens two connections per replica; one more for a catch-up.
    replicas = max((len(c.replica_ips) for c in settings.clusters.values()), default=0)
    # RDS replicates by itself and does not let its master user grant REPLICATION.
    names = [s.name for s in specs] + ([REPLICATOR] if replicator else [])
    verifiers = [creds[n].verifier for n in names]

    def render(values: list[str]) -> str:
        by_name = dict(zip(names, values, strict=True))
        logins = tuple(
            roles_sql.Login(
                s.name, s.connection_limit, by_name[s.name], s.groups, s.act_as, s.log_all_statements, s.connect
            )
            for s in specs
        )
        repl = roles_sql.Login(REPLICATOR, 2 * max(replicas, 1) + 1, by_name[REPLICATOR], ()) if replicator else None
        return roles_sql.render(
            roles_sql.RoleModel(settings.database.name, settings.roles.owner, logins, repl, canary=canary(settings))
        )

    return pulumi.Output.secret(pulumi.Output.all(*verifiers).apply(render))


def database_url(role: str, password: pulumi.Output[str], host: pulumi.Input[str], database: str) -> pulumi.Output[str]:
    """A secret postgres:// URL (sslmode=require: the host may be a name the certificate does not hold)."""
    return pulumi.Output.secret(
        pulumi.Output.all(password, host).apply(
            lambda parts: (
                f"postgres://{role}:{urllib.parse.quote(parts[0], safe='')}@{parts[1]}:5432/{database}?sslmode=require"
            )
        )
    )
