#!/usr/bin/env bash
# Losing the primary: promote a streaming replica to be the new primary.
# Run as root ON THE REPLICA:  ssh root@<replica public IP> 'bash -s' < runbooks/promote-replica.sh
# It refuses while the old primary still accepts connections (two primaries would split the
# data), unless FORCE=1 is set because the old primary is fenced (stopped, or cut off).
# Backups go on in the same stanza on the new timeline: the replica already has pgBackRest and
# the backup timers, which act on whichever server is the primary.
# The PostgreSQL version is the one cluster's that pg_lsclusters shows; on a server with more
# clusters, name it: ssh root@<replica> 'PG_VERSION=15 bash -s' < runbooks/promote-replica.sh
set -euo pipefail
cd /
log() { printf '[promote %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${PG_VERSION:-} ]]; then
  mapfile -t clusters < <(pg_lsclusters -h | awk '{print $1 "/" $2}')
  ((${#clusters[@]} == 1)) || die "pg_lsclusters shows ${#clusters[@]} clusters (${clusters[*]}); set PG_VERSION"
  PG_VERSION=${clusters[0]%%/*}
fi
[[ $PG_VERSION =~ ^[0-9]+$ ]] || die "PG_VERSION must be a major version number, not ${PG_VERSION}"
# --cluster: Debian's psql wrapper connects to this version's main cluster, whatever its port.
pg_sql() { runuser -u postgres -- psql --cluster "${PG_VERSION}/main" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

[[ $(pg_sql -c 'select pg_is_in_recovery()') == t ]] || die "this server is not a standby; nothing to promote"
conninfo=$(pg_sql -c 'show primary_conninfo')
old_primary=$(sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$conninfo")
if [[ -n $old_primary ]] && pg_isready -q -h "$old_primary" -t 3 && [[ ${FORCE:-0} != 1 ]]; then
  die "the old primary ${old_primary} still accepts connections: stop it first, or set FORCE=1 if it is fenced"
fi
received=$(pg_sql -c 'select pg_last_wal_receive_lsn()')
replayed=$(pg_sql -c 'select pg_last_wal_replay_lsn()')
log "last WAL received ${received:-none}, replayed ${replayed}; last replayed commit at $(pg_sql -c 'select pg_last_xact_replay_timestamp()')"
[[ $(pg_sql -c 'select pg_promote(true, 60)') == t ]] || die "promotion did not finish within 60 s"
[[ $(pg_sql -c 'select pg_is_in_recovery()') == f ]] || die "still in recovery after promotion"
# pg_control keeps the old timeline until the next checkpoint, and pgBackRest refuses a backup
# while it disagrees with the WAL's: the full backup below must find them in step.
pg_sql -c 'checkpoint' >/dev/null
stanza=$(sed -n 's/.*--stanza=\([^ ]*\) archive-push.*/\1/p' <<<"$(pg_sql -c 'show archive_command')")
if [[ -n $stanza ]]; then
  runuser -u postgres -- pgbackrest --stanza="$stanza" check >/dev/null && log "archiving to stanza ${stanza} works"
  systemctl start --no-block pgstack-backup@full.service && log "a full backup of the new timeline has started"
fi
log "promoted: $(hostname) is the PostgreSQL ${PG_VERSION} primary now (timeline $(pg_sql -c "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"))"
