"""The import block of a generation: fill its new database from another PostgreSQL (seed 000's move).

The source is a database reachable by URL (the secret key importSourceUrl: pg_dump runs on the
new primary, over TLS), or a custom-format dump the user uploaded to the backup bucket (what
`heroku pg:backups:download` gives). The import runs once, when the generation is created
(components/scripts/import.sh), then verifies against the source and takes a full backup.

The URL is a secret: postgres/import_source.py checks its shape without ever echoing it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .fields import Model, pattern

# Extension names: rendered into SQL and shell text unquoted.
EXTENSION_PATTERN = r"^[a-z_][a-z0-9_-]{0,62}$"
Extension = Annotated[str, pattern(EXTENSION_PATTERN, "write an extension name such as pgcrypto")]
DUMP_KEY_PATTERN = r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,500}$"
DumpKey = Annotated[
    str, pattern(DUMP_KEY_PATTERN, "write the object's key in the backup bucket, e.g. imports/heroku.dump")
]
# A check is one read-only query; its output on both sides is compared as text.
CHECK_PATTERN = r"(?is)^\s*(select|with|table|values)\b[^;]{0,2000}$"
Check = Annotated[
    str,
    pattern(CHECK_PATTERN, "write one SELECT query without a semicolon, e.g. select full_name from users where id = 1"),
]


class Import(Model):
    source: Literal["url", "bucket"] = Field(
        description="url: pg_dump from the database at importSourceUrl (directory format, parallel, over TLS), or "
        "bucket: the custom-format dump at dumpKey in the backup bucket"
    )
    dump_key: DumpKey | None = Field(
        default=None,
        description="source bucket: the dump's key in backup.bucket, outside backup.repoPath (e.g. "
        "imports/heroku.dump)",
    )
    jobs: int = Field(default=2, ge=1, le=32, description="parallel pg_dump and pg_restore jobs (about the cores)")
    verify: bool = Field(
        default=True,
        description="compare with the source at importSourceUrl after the restore: the exact row count of every "
        "table, every sequence at or past the source's value, and the checks (a mismatch fails the up, naming the "
        "table). Needs importSourceUrl, also with source bucket (false only for a bucket dump without a reachable "
        "source)",
    )
    checks: list[Check] = Field(
        default=[],
        description="queries whose output must be the same on the source and the new database, e.g. the last "
        "write made before the dump (select full_name from users where id = 1803)",
    )
    untrusted_extensions: list[Extension] = Field(
        default=[],
        description="extensions the dump needs that are not trusted (a trusted one is created by the owner "
        "role): listed here, the superuser creates them. Any other untrusted one stops the import, naming it",
    )
