#!/usr/bin/env bash
# Apply the role model: an idempotent psql script read from stdin. It holds SCRAM verifiers,
# never plain passwords, and stdin keeps even those out of the command line.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}"

wait_for 60 "PostgreSQL to accept connections" as_postgres pg_isready -q
if in_recovery; then
  die "this server is a standby; the role setup runs on the primary"
fi
pg_sql -d postgres -f - >/dev/null
log "role model applied"
