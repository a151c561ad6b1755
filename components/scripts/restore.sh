#!/usr/bin/env bash
# Build this server's cluster from another generation's backups: point-in-time recovery with
# pgBackRest to TARGET (an ISO time, or "latest"), promoted at the target. It never restores in
# place over live data: a data directory this step already restored is left alone, and so is
# any cluster that holds databases. After recovery it checks the target was reached; if not, it
# fails loudly and leaves the server stopped.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${SOURCE_STANZA:?}" "${TARGET:?}"

marker="${PG_DATA}/pgstack-bootstrapped"
if [[ -f $marker ]]; then
  log "already restored ($(cat "$marker")): left untouched"
  if ! cluster_running; then start_cluster; fi
  exit 0
fi
if cluster_running && [[ $(pg_sql -c "select count(*) from pg_database where datname not in ('postgres','template0','template1')") != 0 ]]; then
  die "this server's cluster already holds databases; refusing to restore over it"
fi

info=$(as_postgres pgbackrest --stanza="$SOURCE_STANZA" --output=json info)
if [[ $TARGET == latest ]]; then
  type_args=()
  backups=$(jq '[.[0].backup[]?] | length' <<<"$info")
  ((backups > 0)) || die "stanza ${SOURCE_STANZA} has no backup to restore"
else
  target_epoch=$(date -u -d "$TARGET" +%s) || die "cannot parse target time ${TARGET}"
  # The first backup that started before the target: without one the target is unreachable.
  first_start=$(jq -r '[.[0].backup[]?.timestamp.start] | min // empty' <<<"$info")
  if [[ -z $first_start || $first_start -ge $target_epoch ]]; then
    die "stanza ${SOURCE_STANZA} has no backup from before ${TARGET}; the earliest starts at $([[ -n $first_start ]] && date -u -d "@${first_start}" +%FT%TZ || echo never)"
  fi
  type_args=(--type=time "--target=${TARGET}" --target-action=promote)
fi

systemctl stop "$PG_SERVICE"
find "$PG_DATA" -mindepth 1 -delete
log "restoring ${SOURCE_STANZA} to ${TARGET}"
t_restore=$SECONDS
as_postgres pgbackrest --stanza="$SOURCE_STANZA" "${type_args[@]}" restore
t_recovery=$SECONDS
# The restored postgresql.auto.conf points restore_command at the source stanza: right for this
# recovery; reset after promotion so the server archives and recovers with its own stanza.
start_time=$(date -u '+%F %T')
systemctl start "$PG_SERVICE" || true
promoted=0
for _ in $(seq 600); do
  if [[ $(pg_sql -c 'select pg_is_in_recovery()' 2>/dev/null) == f ]]; then promoted=1; break; fi
  if ! systemctl is-active --quiet "$PG_SERVICE" && ! cluster_running; then break; fi
  sleep 1
done
logfile=$PG_LOG
recovery_log=$(awk -v t="$start_time" 'substr($0, 1, 19) >= t' "$logfile" 2>/dev/null || true)
if [[ $recovery_log == *"recovery ended before configured recovery target was reached"* ]] || ((!promoted)); then
  systemctl stop "$PG_SERVICE" || true
  die "recovery did NOT reach target ${TARGET} (the archive ends before it, or WAL is missing); the server is left stopped. Log: $(grep -E 'FATAL|recovery stopping|redo done|consistent' <<<"$recovery_log" | tail -n 5)"
fi
if [[ $TARGET != latest ]] && [[ $recovery_log != *"recovery stopping before"* && $recovery_log != *"recovery stopping after"* ]]; then
  systemctl stop "$PG_SERVICE" || true
  die "recovery finished without stopping at target ${TARGET}; the server is left stopped"
fi
pg_sql -c 'alter system reset restore_command' -c 'alter system reset recovery_target_time' \
  -c 'alter system reset recovery_target_action' -c 'select pg_reload_conf()' >/dev/null
echo "restored from ${SOURCE_STANZA} to ${TARGET} at $(date -u +%FT%TZ)" | as_postgres tee "$marker" >/dev/null
log "timing: pgbackrest restore $((t_recovery - t_restore))s, recovery and checks $((SECONDS - t_recovery))s"
log "restored and promoted: $(grep -E 'recovery stopping|selected new timeline' <<<"$recovery_log" | tail -n 2 | tr '\n' ' ')"
