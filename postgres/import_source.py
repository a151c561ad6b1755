"""A source database given as a libpq URL (importSourceUrl): its checks and its service file entry.

The URL carries a password, so nothing here repeats it in a message, and the program never puts
it on a command line: pg_dump and psql on the new primary read it from a root-only service file.
"""

from __future__ import annotations

import re
import urllib.parse

# libpq's sslmode values that encrypt the connection: the others may fall back to plain text.
TLS_MODES = ("require", "verify-ca", "verify-full")


def url_problem(url: str) -> str | None:
    """What is wrong with an importSourceUrl, in words that never repeat its secret parts."""
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        return "holds a line break or another control character; paste the URL on one line"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL; write postgres://USER:PASSWORD@HOST:5432/DATABASE?sslmode=require"
    if parts.scheme not in ("postgres", "postgresql"):
        return "must start with postgres:// or postgresql:// (a libpq connection URL, as Heroku's DATABASE_URL)"
    if not parts.hostname or not parts.username or not parts.path.strip("/"):
        return "needs a user, a host and a database: postgres://USER:PASSWORD@HOST:5432/DATABASE"
    if port is not None and not 0 < port < 65536:
        return "has a port outside 1-65535"
    if "/" in parts.path.strip("/"):
        return "names more than one path segment; the path is the database name only"
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"sslmode"})
    if unknown:
        return f"has parameters pgstack does not pass on ({', '.join(unknown)}); only sslmode is allowed"
    mode = query.get("sslmode", ["require"])[-1]
    if mode not in TLS_MODES:
        return (
            f"sslmode={mode} may connect without TLS; use sslmode=require (or verify-ca, verify-full) or leave it out"
        )
    return None


_SERVICE_VALUE = re.compile(r"^[^\n\r]*$")


def service_entry(url: str, name: str = "source") -> str:
    """The URL as a libpq service file section, so no command line ever carries the password.

    pg_dump and psql read it with PGSERVICEFILE and `service=NAME`. Call only with a URL that
    url_problem accepted.
    """
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    values = {
        "host": parts.hostname or "",
        "port": str(parts.port or 5432),
        "dbname": urllib.parse.unquote(parts.path.strip("/")),
        "user": urllib.parse.unquote(parts.username or ""),
        "password": urllib.parse.unquote(parts.password or ""),
        "sslmode": query.get("sslmode", ["require"])[-1],
    }
    for key, value in values.items():
        # libpq reads key=value lines and trims the value's ends.
        if not _SERVICE_VALUE.match(value) or value != value.strip():
            raise ValueError(f"the source URL's {key} holds a line break or starts or ends with a space")
    return f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in values.items())
