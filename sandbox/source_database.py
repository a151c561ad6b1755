"""A source database that behaves like Heroku's, for rehearsing an import (issue 16).

A guest outside the private network (the outsider's address: the servers reach it as they would
reach the internet), PostgreSQL with TLS and a password required and plain TCP refused, every
object owned by a role the stack does not have, extensions in Heroku's own `heroku_ext` schema,
tables in two schemas, sequences, a view and a function.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import tempfile
from pathlib import Path

from postgres.roles import scram_verifier
from sandbox.testbed import GuestSpec, Testbed

NAME = "heroku-source"
OWNER = "u8abc3def"  # Heroku's generated role names look like this
DATABASE = "d1ab2cd3"
PG_VERSION = 15
USERS, ORDERS, INVOICES = 2000, 5000, 300
# The row seed 000 reads on the migration night to check that the last write arrived.
CHECK_ID, CHECK_NAME = 1803, "Mary Read"

SETUP = """
set -euo pipefail
cd /
v={version}
conf=/etc/postgresql/$v/main
if ! pg_lsclusters -h | grep -q "^$v main"; then pg_createcluster "$v" main >/dev/null; fi
install -d -o postgres -g postgres -m 700 "$conf/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN={ip}" \\
  -keyout "$conf/tls/server.key" -out "$conf/tls/server.crt" 2>/dev/null
chown postgres:postgres "$conf/tls/server.key" "$conf/tls/server.crt"
chmod 600 "$conf/tls/server.key"
cat >"$conf/conf.d/90-source.conf" <<EOF
listen_addresses = '{ip}'
ssl = on
ssl_cert_file = '$conf/tls/server.crt'
ssl_key_file = '$conf/tls/server.key'
password_encryption = scram-sha-256
EOF
cat >"$conf/pg_hba.conf" <<EOF
local all postgres peer
hostssl all all 0.0.0.0/0 scram-sha-256
EOF
systemctl enable --quiet "postgresql@$v-main"
systemctl restart "postgresql@$v-main"
for _ in $(seq 60); do runuser -u postgres -- pg_isready -q && break; sleep 0.5; done
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE ROLE {owner} LOGIN PASSWORD '{verifier}';
CREATE DATABASE {database} OWNER {owner};
SQL
"""

SEED = f"""
\\set ON_ERROR_STOP on
CREATE SCHEMA heroku_ext AUTHORIZATION {OWNER};
CREATE EXTENSION citext WITH SCHEMA heroku_ext;
CREATE EXTENSION pgcrypto;
SET ROLE {OWNER};
CREATE TABLE users (
  id bigserial PRIMARY KEY,
  full_name text NOT NULL,
  email heroku_ext.citext UNIQUE NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id serial PRIMARY KEY,
  user_id bigint NOT NULL REFERENCES users (id),
  total numeric(10, 2) NOT NULL,
  token text NOT NULL DEFAULT encode(gen_random_bytes(8), 'hex')
);
CREATE INDEX orders_user ON orders (user_id);
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id int PRIMARY KEY, order_id int REFERENCES orders (id), issued date);
CREATE SEQUENCE billing.invoice_numbers START 1000;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 500;
CREATE FUNCTION user_total(uid bigint) RETURNS numeric LANGUAGE sql STABLE
  AS $$ SELECT coalesce(sum(total), 0) FROM orders WHERE user_id = uid $$;
INSERT INTO users (full_name, email)
  SELECT 'user ' || g, 'User' || g || '@Example.com' FROM generate_series(1, {USERS}) g;
UPDATE users SET full_name = '{CHECK_NAME}' WHERE id = {CHECK_ID};
INSERT INTO orders (user_id, total)
  SELECT 1 + g % {USERS}, (g % 1000)::numeric / 1.5 FROM generate_series(1, {ORDERS}) g;
INSERT INTO billing.invoices SELECT g, g, date '2026-01-01' + g FROM generate_series(1, {INVOICES}) g;
SELECT nextval('billing.invoice_numbers') FROM generate_series(1, 42);
"""


class SourceDatabase:
    def __init__(self, testbed: Testbed, ip: str) -> None:
        self.testbed = testbed
        self.ip = ip
        self.password = secrets.token_urlsafe(24)

    @property
    def url(self) -> str:
        return f"postgres://{OWNER}:{self.password}@{self.ip}:5432/{DATABASE}?sslmode=require"

    def start(self) -> None:
        """Boot the guest, make the cluster (TLS, scram, no plain TCP) and fill it."""
        self.testbed.boot_guest(GuestSpec(NAME, self.ip, outsider=True))
        # A SCRAM verifier, not the password, travels in the script (as the role model does it).
        verifier = scram_verifier(OWNER, self.password)
        script = SETUP.format(version=PG_VERSION, ip=self.ip, owner=OWNER, database=DATABASE, verifier=verifier)
        res = self.testbed.ssh(self.ip, script)
        if res.returncode != 0:
            raise RuntimeError(f"{NAME}: setup failed\n{res.stdout}\n{res.stderr}")
        self.psql(SEED)

    def psql(self, script: str) -> str:
        """Run a psql script in the source database as postgres (on the source guest itself)."""
        cmd = f"runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -d {DATABASE}"
        res = self.testbed.ssh(self.ip, f"cd / && {cmd}", stdin=script.encode())
        if res.returncode != 0:
            raise RuntimeError(f"{NAME}: {script.strip()[:200]}\n{res.stdout}\n{res.stderr}")
        return res.stdout.strip()

    def dump_custom(self) -> bytes:
        """pg_dump -Fc of the source, as `heroku pg:backups:download` gives it."""
        cmd = f"cd / && runuser -u postgres -- pg_dump -Fc -d {DATABASE}"
        argv = [*self.testbed.ssh_argv(self.ip), "bash -c " + shlex.quote(cmd)]
        res = subprocess.run(argv, capture_output=True, check=False, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{NAME}: pg_dump failed: {res.stderr.decode(errors='replace')}")
        return res.stdout

    def upload_dump(self, bucket: str, key: str) -> int:
        """Put a custom-format dump into the backup bucket, as a user would after downloading it."""
        data = self.dump_custom()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "source.dump")
            path.write_bytes(data)
            self.testbed.s3_client().upload_file(str(path), bucket, key)
        return len(data)
