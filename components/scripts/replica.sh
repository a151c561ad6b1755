#!/usr/bin/env bash
# Make this server a streaming replica of the primary: pg_basebackup through its slot, with
# WAL streamed. Guards first: a healthy standby (or a data directory this step already built)
# is never wiped, so re-running automation cannot destroy a working replica.
# stdin: the replication password, stored in a root-only .pgpass, never in primary_conninfo.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${PRIMARY_IP:?}" "${SLOT:?}"

password=$(head -n1)
[[ -n $password ]] || die "no replication password on stdin"
passfile=/var/lib/postgresql/.pgpass
printf '%s:5432:replication:replicator:%s\n%s:5432:postgres:replicator:%s\n' \
  "$PRIMARY_IP" "$password" "$PRIMARY_IP" "$password" | install_file 600 postgres:postgres "$passfile" >/dev/null

if [[ -f "${PG_DATA}/pgstack-bootstrapped" ]]; then
  if [[ ! -f "${PG_DATA}/standby.signal" ]]; then
    # Promoted (runbooks/promote-replica.sh): it holds the only copy of recent data.
    die "${PG_DATA} was built as a replica but has been promoted; never wiped. Declare it in the stack config (see README: Losing the primary)"
  fi
  if ! cluster_running; then start_cluster; fi
  if in_recovery; then
    log "healthy standby already in place: left untouched"
    exit 0
  fi
  die "${PG_DATA} was built as a replica but is no longer in recovery; not touching it"
fi
if cluster_running && [[ $(pg_sql -c "select count(*) from pg_database where datname not in ('postgres','template0','template1')") != 0 ]]; then
  die "this server's cluster holds databases; refusing to replace it with a base backup"
fi

wait_for 300 "the primary ${PRIMARY_IP} to accept replication connections" \
  as_postgres psql -X -At "host=${PRIMARY_IP} user=replicator dbname=replication replication=true passfile=${passfile}" \
  -c 'IDENTIFY_SYSTEM'
systemctl stop "$PG_SERVICE"
# Only an empty cluster of our own making reaches this point; it is replaced by the base backup.
find "$PG_DATA" -mindepth 1 -delete
as_postgres pg_basebackup -h "$PRIMARY_IP" -U replicator -D "$PG_DATA" -X stream -S "$SLOT" -c fast --no-password \
  -d "passfile=${passfile}"
as_postgres touch "${PG_DATA}/standby.signal"
echo "base backup from ${PRIMARY_IP} through slot ${SLOT} at $(date -u +%FT%TZ)" | as_postgres tee "${PG_DATA}/pgstack-bootstrapped" >/dev/null
start_cluster
in_recovery || die "the new replica is not in recovery"
log "replica streaming from ${PRIMARY_IP} through slot ${SLOT}"
