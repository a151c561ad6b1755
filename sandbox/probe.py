"""A PostgreSQL client probe run inside a test-bed namespace: `python -m sandbox.probe`.

Reads the password from stdin (never argv), connects, optionally runs one statement, and prints
one JSON line: whether TCP connected, whether PostgreSQL accepted us, the SQLSTATE if not.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--dbname", required=True)
    p.add_argument("--user", required=True)
    # require, not prefer: prefer retries without TLS after a failure and reports that second error.
    p.add_argument("--sslmode", default="require")
    p.add_argument("--sql", default="select 1")
    p.add_argument("--sslrootcert", default=None)
    args = p.parse_args()
    password = sys.stdin.readline().rstrip("\n")
    result: dict = {"tcp": False, "ok": False, "sqlstate": None, "message": None, "rows": None}
    try:
        with socket.create_connection((args.host, args.port), timeout=5):
            result["tcp"] = True
    except OSError as exc:
        result["message"] = f"tcp: {exc}"
        print(json.dumps(result))
        return 0
    import psycopg

    try:
        with psycopg.connect(
            host=args.host,
            port=args.port,
            dbname=args.dbname,
            user=args.user,
            password=password,
            sslmode=args.sslmode,
            connect_timeout=5,
            **({"sslrootcert": args.sslrootcert} if args.sslrootcert else {}),
        ) as conn:
            cur = conn.execute(args.sql) if args.sql else None
            rows = cur.fetchall() if cur is not None and cur.description else []
            conn.commit()
            result.update(ok=True, rows=[list(map(str, r)) for r in rows], ssl=bool(conn.pgconn.ssl_in_use))
    except psycopg.Error as exc:
        result["sqlstate"] = getattr(exc, "sqlstate", None)
        if result["sqlstate"] is None and isinstance(exc, psycopg.OperationalError):
            # libpq gives connection-time errors as text only: ask the server for the code.
            from sandbox.pgwire import handshake

            wire = handshake(args.host, args.port, args.user, args.dbname, password, tls=args.sslmode != "disable")
            result["sqlstate"] = wire["sqlstate"]
        result["message"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
