"""The role model as one idempotent SQL script, the same for a Hetzner server and for RDS.

No SUPERUSER assumption: on RDS the master user is only rds_superuser with CREATEROLE, so the
script makes itself a member of the roles it must act for. Identifiers come from validated
config (`^[a-z_][a-z0-9_]{0,62}$`) and are safe to write unquoted. Passwords arrive as SCRAM
verifiers: the plain text never reaches the server, its logs or its process list, and a
deterministic salt keeps a second run from changing anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

SCRAM_ITERATIONS = 4096

# pgstack's own database, outside the application's: the write canary (one row the primary
# rewrites every few seconds, components/scripts/bin/pgstack-canary). Its age on a restored copy
# is the data a restore would have lost (the drill's RPO); on a replica, the end-to-end lag.
CANARY_DATABASE = "pgstack"


def scram_verifier(role: str, password: str) -> str:
    """A PostgreSQL SCRAM-SHA-256 verifier, with a salt derived from the password and role.

    A derived salt is as unguessable as the (random, 32+ character) password, and stable, so
    re-running the setup leaves pg_authid untouched.
    """
    salt = hmac.new(password.encode(), f"pgstack-scram-salt:{role}".encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


@dataclass(frozen=True)
class Login:
    name: str
    connection_limit: int
    verifier: str
    groups: tuple[str, ...]
    # Sessions start as this role (the owner), so every object they create belongs to it.
    act_as: str | None = None
    log_all_statements: bool = False
    # Databases outside the app's it may connect to (the monitoring role: postgres, where the
    # exporter reads pg_stat_statements).
    connect: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoleModel:
    database: str
    owner: str
    logins: tuple[Login, ...]
    replicator: Login | None = None
    # The canary database (target hetzner; RDS has no drill and no canary timer). The logins
    # that may connect to it (Login.connect) may read the canary.
    canary: bool = False


def _create_role(name: str, attributes: str, create_only: str = "") -> str:
    """CREATE when missing, then ALTER to the wanted state.

    Attributes that only a superuser may alter (SUPERUSER, REPLICATION) go into create_only: a
    new role gets them at creation, and the ALTER never names them, so it runs on RDS too.
    """
    create = f"CREATE ROLE {name} {create_only}".strip()
    return (
        f"SELECT '{create}' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}')\\gexec\n"
        f"ALTER ROLE {name} WITH {attributes};\n"
    )


# The verifiers below travel in ALTER ROLE statements, which log_statement = 'ddl' (and a slow or
# failing statement) would write to the server log. This session logs no statement text. Setting
# these needs superuser (or, on RDS, a grant the master user may lack): then say so and go on, as
# the verifier is not the password.
QUIET_LOGS = (
    "DO $$BEGIN\n"
    "  PERFORM set_config('log_statement', 'none', false);\n"
    "  PERFORM set_config('log_min_duration_statement', '-1', false);\n"
    "  PERFORM set_config('log_min_error_statement', 'panic', false);\n"
    "EXCEPTION WHEN insufficient_privilege THEN\n"
    "  RAISE WARNING 'pgstack: cannot turn statement logging off: the server log may hold role verifiers';\n"
    "END$$;"
)


def render(model: RoleModel) -> str:
    """psql script (meta-commands included), to be fed on stdin to `psql -d postgres`."""
    owner, db = model.owner, model.database
    out = [
        "\\set ON_ERROR_STOP on",
        "SET client_min_messages = warning;",
        QUIET_LOGS,
        "-- group roles: nobody logs in as these",
    ]
    # CREATE ROLE's defaults are NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION.
    for group in (owner, "readonly", "write"):
        out.append(_create_role(group, "NOLOGIN NOCREATEDB NOCREATEROLE"))
    out.append("GRANT readonly TO write;")
    # Without superuser (RDS), acting for the owner needs membership.
    out.append(
        "SELECT format('GRANT %I TO %I', r, current_user) FROM unnest(ARRAY['" + owner + "','readonly','write']) AS r\n"
        " WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)\n"
        "   AND NOT pg_has_role(current_user, r, 'MEMBER')\\gexec"
    )
    if model.canary:
        # Before the logins: their CONNECT grants may name it.
        out += [
            "-- pgstack's own database: the write canary (owned by postgres, which writes it)",
            f"SELECT 'CREATE DATABASE {CANARY_DATABASE}'"
            f" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{CANARY_DATABASE}')\\gexec",
            f"REVOKE ALL ON DATABASE {CANARY_DATABASE} FROM PUBLIC;",
        ]
    out.append("-- login roles: memberships only, never direct grants, so a rotation re-grants nothing")
    logins = list(model.logins) + ([model.replicator] if model.replicator else [])
    for login in logins:
        attrs = f"LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT {login.connection_limit}"
        out.append(
            _create_role(
                login.name,
                f"{attrs} PASSWORD '{login.verifier}'",
                create_only="REPLICATION" if login is model.replicator else "",
            )
        )
        wanted = set(login.groups)
        for group in sorted(wanted):
            out.append(f"GRANT {group} TO {login.name};")
        # Memberships the config no longer gives are taken away (e.g. the migrations switch off).
        keep = ", ".join(f"'{g}'" for g in sorted(wanted)) or "''"
        out.append(
            f"SELECT format('REVOKE %I FROM %I', g.rolname, u.rolname) FROM pg_auth_members m\n"
            f" JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member\n"
            f" WHERE u.rolname = '{login.name}' AND g.rolname <> ALL (ARRAY[{keep}]::name[])\\gexec"
        )
        if login.act_as:
            out.append(f"ALTER ROLE {login.name} SET role = {login.act_as};")
        else:
            out.append(f"ALTER ROLE {login.name} RESET role;")
        if login.log_all_statements:
            out.append(f"ALTER ROLE {login.name} SET log_statement = 'all';")
        for database in login.connect:
            out.append(f"GRANT CONNECT ON DATABASE {database} TO {login.name};")
    default_privileges = f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT"
    out += [
        "-- the database, owned by the owner role; nobody else may connect by default",
        f"SELECT 'CREATE DATABASE {db} OWNER {owner}'"
        f" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec",
        f"ALTER DATABASE {db} OWNER TO {owner};",
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO readonly;",
        "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;",
        "-- slow queries, found through the monitoring role (shared_preload_libraries loads it)",
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
        *_canary(model),
        f"\\connect {db}",
        "SET client_min_messages = warning;",
        f"ALTER SCHEMA public OWNER TO {owner};",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
        "GRANT USAGE ON SCHEMA public TO readonly;",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO readonly;",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO readonly;",
        "GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO write;",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO write;",
        f"{default_privileges} SELECT ON TABLES TO readonly;",
        f"{default_privileges} USAGE, SELECT ON SEQUENCES TO readonly;",
        f"{default_privileges} INSERT, UPDATE, DELETE ON TABLES TO write;",
        f"{default_privileges} USAGE, SELECT, UPDATE ON SEQUENCES TO write;",
        f"{default_privileges} EXECUTE ON FUNCTIONS TO readonly;",
    ]
    return "\n".join(line for line in out if line) + "\n"


def _canary(model: RoleModel) -> list[str]:
    """The canary table with its one row (never reset by a rerun), readable by its readers."""
    if not model.canary:
        return []
    readers = [login.name for login in model.logins if CANARY_DATABASE in login.connect]
    return [
        f"\\connect {CANARY_DATABASE}",
        "SET client_min_messages = warning;",
        "CREATE TABLE IF NOT EXISTS public.canary (id int PRIMARY KEY, at timestamptz NOT NULL);",
        "INSERT INTO public.canary (id, at) VALUES (1, now()) ON CONFLICT (id) DO NOTHING;",
        "REVOKE ALL ON TABLE public.canary FROM PUBLIC;",
        *[f"GRANT SELECT ON TABLE public.canary TO {name};" for name in readers],
    ]
