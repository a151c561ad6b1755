"""postgresql.conf as a pure function of layered settings (CloudNativePG's approach).

Layers, later wins: defaults, then version-specific settings, then the stack's overrides, then
the settings pgstack extends (the stack's value plus what pgstack needs), then the settings
pgstack manages, which always win and which a stack may not override.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .layout import layout

DEFAULTS: dict[str, str] = {
    "port": "5432",
    "shared_buffers": "128MB",
    "effective_cache_size": "4GB",
    "maintenance_work_mem": "256MB",
    "work_mem": "8MB",
    "checkpoint_timeout": "15min",
    "max_wal_size": "4GB",
    "min_wal_size": "1GB",
    "random_page_cost": "1.1",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_connections": "on",
    "log_disconnections": "on",
    "log_lock_waits": "on",
    # Statements slower than a second are logged with their duration (seed 001's slow-query log);
    # pg_stat_statements keeps the aggregate of all of them.
    "log_min_duration_statement": "1000",
    "track_io_timing": "on",
    "log_temp_files": "0",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
}

VERSION_SETTINGS: dict[int, dict[str, str]] = {
    15: {"wal_compression": "zstd", "recovery_init_sync_method": "syncfs"},
}

# What pgstack decides and a stack may not override (config refuses such an override).
MANAGED = frozenset(
    {
        "listen_addresses", "port", "password_encryption", "cluster_name", "max_connections", "wal_level",
        "archive_mode", "archive_command", "archive_timeout", "restore_command", "hot_standby",
        "max_wal_senders", "max_replication_slots", "max_slot_wal_keep_size", "primary_conninfo",
        "primary_slot_name", "ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_min_protocol_version",
        "data_directory",
        "hba_file", "ident_file", "unix_socket_directories", "recovery_target_time", "recovery_target_action",
        "wal_log_hints", "log_statement",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ClusterConf:
    """What every server of a generation shares in its postgresql.conf."""

    version: int
    max_connections: int
    replica_slots: int = 0
    max_slot_wal_keep_size: str = "10GB"
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerConf:
    """What the managed layer depends on, for one server."""

    version: int
    cluster_name: str
    private_ip: str
    max_connections: int
    stanza: str | None = None  # set once pgBackRest archives this server's WAL
    archive_timeout_seconds: int = 60
    replica_slots: int = 0
    max_slot_wal_keep_size: str = "10GB"
    overrides: dict[str, str] = field(default_factory=dict)
    # TLS files written by the tls step; client and replication traffic then needs TLS.
    tls: bool = False
    # Set on replicas: where to stream from and through which slot.
    primary_host: str | None = None
    primary_slot_name: str | None = None


def managed_settings(conf: ServerConf) -> dict[str, str]:
    tls_dir = layout(conf.version).conf_dir
    senders = max(10, conf.replica_slots * 2 + 4)
    settings = {
        # localhost for local tools; the private IP for the network. PostgreSQL binds the private
        # IP even before the network is up at boot: the configure script enables
        # net.ipv4.ip_nonlocal_bind and orders the unit after network-online.target.
        "listen_addresses": f"'localhost,{conf.private_ip}'",
        "port": "5432",
        "password_encryption": "'scram-sha-256'",
        "cluster_name": f"'{conf.cluster_name}'",
        "max_connections": str(conf.max_connections),
        "wal_level": "replica",
        # Lets pg_rewind bring an old primary back as a replica after a promotion.
        "wal_log_hints": "on",
        "hot_standby": "on",
        "max_wal_senders": str(senders),
        "max_replication_slots": str(senders),
        # A dead replica's slot may hold this much WAL, no more: the primary's disk survives it.
        "max_slot_wal_keep_size": f"'{conf.max_slot_wal_keep_size}'",
        "log_statement": "'ddl'",
    }
    if conf.stanza:
        settings.update(
            {
                "archive_mode": "on",
                "archive_command": f"'pgbackrest --stanza={conf.stanza} archive-push %p'",
                "restore_command": f"'pgbackrest --stanza={conf.stanza} archive-get %f \"%p\"'",
                "archive_timeout": f"{conf.archive_timeout_seconds}s",
            }
        )
    else:
        settings["archive_mode"] = "off"
    if conf.tls:
        settings.update(
            {
                "ssl": "on",
                "ssl_cert_file": f"'{tls_dir}/pgstack-server.crt'",
                "ssl_key_file": f"'{tls_dir}/pgstack-server.key'",
                "ssl_ca_file": f"'{tls_dir}/pgstack-ca.crt'",
                "ssl_min_protocol_version": "'TLSv1.2'",
            }
        )
    if conf.primary_host:
        # No password here: it lives in a 0600 .pgpass (postgresql.auto.conf would keep it in
        # every base backup taken from this server).
        settings["primary_conninfo"] = (
            f"'host={conf.primary_host} port=5432 user=replicator passfile=/var/lib/postgresql/.pgpass "
            f"application_name={conf.cluster_name}"
            + (f" sslmode=verify-ca sslrootcert={tls_dir}/pgstack-ca.crt" if conf.tls else "")
            + "'"
        )
        settings["primary_slot_name"] = f"'{conf.primary_slot_name}'"
    return settings


def extended_settings(conf: ServerConf) -> dict[str, str]:
    """Settings pgstack needs a part of and a stack may add to: the stack's value, extended.

    pg_stat_statements is always preloaded (the monitoring role reads it); a stack that preloads
    more (pg_cron, auto_explain) lists them in shared_preload_libraries as usual.
    """
    extra = [lib.strip() for lib in conf.overrides.get("shared_preload_libraries", "").split(",")]
    libraries = ["pg_stat_statements", *[lib for lib in extra if lib and lib != "pg_stat_statements"]]
    return {"shared_preload_libraries": f"'{','.join(libraries)}'"}


def layered(conf: ServerConf) -> dict[str, str]:
    merged: dict[str, str] = {}
    # Stack overrides are quoted: config limits them to an alphabet without quotes.
    overrides = {name: f"'{value}'" for name, value in conf.overrides.items()}
    layers = (
        DEFAULTS,
        VERSION_SETTINGS.get(conf.version, {}),
        overrides,
        extended_settings(conf),
        managed_settings(conf),
    )
    for layer in layers:
        merged.update(layer)
    return merged


def render(conf: ServerConf) -> str:
    lines = [
        "# Rendered by pgstack: edits are overwritten on the next `pulumi up`.",
        "# Set overrides with the stack key pgstack:postgresql.",
    ]
    lines += [f"{name} = {value}" for name, value in sorted(layered(conf).items())]
    return "\n".join(lines) + "\n"
