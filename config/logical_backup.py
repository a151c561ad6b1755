"""The logicalBackup block: scheduled, encrypted logical dumps of the application's database.

A timer runs `pg_dump -Fc` (the data of some tables and whole schemas left out), encrypted on the
server with `age` to the public keys listed here, so the servers can write dumps but never read
them; the dump goes to the backup bucket under its own prefix (through pgBackRest's repo
commands, with the credential the servers already hold), and the newest `keep` are kept.
components/scripts/bin/pgstack-logical-dump does it; runbooks/restore-dump.sh restores one.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .fields import Calendar, Model, pattern

# A pg_dump table or schema pattern, rendered into the dump's command line: lower-case
# identifiers (pg_dump folds an unquoted pattern to lower case), an optional `schema.` and `*`
# wildcards; nothing a shell or pg_dump's pattern syntax could read otherwise (no quotes, `?`,
# spaces or a second dot).
NAME_PART = r"[a-z_*][a-z0-9_*]{0,62}"
TABLE_PATTERN = rf"^({NAME_PART}\.)?{NAME_PART}$"
SCHEMA_PATTERN = rf"^{NAME_PART}$"
# An age X25519 recipient: age1 and 58 bech32 characters (no 1, b, i, o).
RECIPIENT_PATTERN = r"^age1[02-9ac-hj-np-z]{58}$"
PREFIX_PATTERN = r"^/[a-z0-9_-]{1,60}(/[a-z0-9_-]{1,60}){0,4}$"

TablePattern = Annotated[
    str,
    pattern(
        TABLE_PATTERN,
        "write a table name, optionally schema.table, of lower-case letters, digits, _ and * wildcards, "
        "e.g. public.notifications or notification_*",
    ),
]
SchemaPattern = Annotated[
    str, pattern(SCHEMA_PATTERN, "write a schema name of lower-case letters, digits, _ and * wildcards, e.g. pglogical")
]
Recipient = Annotated[
    str,
    pattern(RECIPIENT_PATTERN, "write an age public key, age1 followed by 58 characters, as age-keygen prints it"),
]
Prefix = Annotated[
    str,
    pattern(
        PREFIX_PATTERN, "write an absolute path in the bucket of lower-case letters, digits, _ and -, e.g. /logical"
    ),
]


class LogicalBackup(Model):
    schedule: Calendar = Field(
        default="*-*-* 03:30:00",
        description="systemd OnCalendar of the dump (daily by default, after the nightly backup)",
    )
    exclude_table_data: list[TablePattern] = Field(
        default=[],
        max_length=100,
        description="tables whose data the dump leaves out (pg_dump --exclude-table-data): their definition is "
        "there, their rows are not, e.g. seed 001's biggest tables",
    )
    exclude_schemas: list[SchemaPattern] = Field(
        default=[],
        max_length=100,
        description="schemas the dump leaves out entirely (pg_dump --exclude-schema)",
    )
    recipients: list[Recipient] = Field(
        min_length=1,
        max_length=20,
        description="age public keys the dump is encrypted to (any one private key decrypts it, the servers hold none)",
    )
    prefix: Prefix = Field(
        default="/logical",
        description="where in the backup bucket the dumps go, never inside backup.repoPath, nor it inside this",
    )
    keep: int = Field(default=7, ge=1, le=1000, description="how many dumps are kept (the oldest are removed)")
