#!/usr/bin/env bash
# Build this server's cluster from another generation's backups: point-in-time recovery with
# pgBackRest to TARGET (an ISO time, or "latest"), promoted at the target. It never restores in
# place over live data: a data directory this step already restored is left alone, and so is
# any cluster that holds databases. Recovery pauses at the target; the server then tells whether
# the target was reached (and what it replayed last) before it is promoted. If not, the step
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
  # Pause at the target instead of promoting there: the server itself then says whether it
  # stopped at the target (paused) or ran out of archive first (it shuts down, PostgreSQL 13+),
  # and what it replayed last. No log text is read, so log_line_prefix and friends may be anything.
  type_args=(--type=time "--target=${TARGET}" --target-action=pause)
fi

systemctl stop "$PG_SERVICE"
find "$PG_DATA" -mindepth 1 -delete
log "restoring ${SOURCE_STANZA} to ${TARGET}"
t_restore=$SECONDS
# Recovery fetches WAL synchronously: the async archive-get of [global] (kept for replicas that
# catch up from the archive) makes recovery wait 0.45-0.77 s at the end of the archive, where a
# synchronous get answers at once (measured, restore speed issue).
as_postgres pgbackrest --stanza="$SOURCE_STANZA" "${type_args[@]}" \
  "--recovery-option=restore_command=pgbackrest --stanza=${SOURCE_STANZA} --no-archive-async archive-get %f \"%p\"" restore
t_recovery=$SECONDS
# The restored postgresql.auto.conf points restore_command at the source stanza: right for this
# recovery; reset after promotion so the server archives and recovers with its own stanza.
systemctl start "$PG_SERVICE" || true
stopped_short() {
  systemctl stop "$PG_SERVICE" || true
  die "recovery did NOT reach target ${TARGET}: $1; the server is left stopped"
}
state=""
# Polled every 0.1 s (10 minutes at most): the step returns as soon as the server is ready.
for _ in $(seq 6000); do
  if [[ $TARGET == latest ]]; then
    if [[ $(pg_sql -c 'select pg_is_in_recovery()' 2>/dev/null) == f ]]; then state=promoted; break; fi
  else
    state=$(pg_sql -c 'select pg_get_wal_replay_pause_state()' 2>/dev/null || true)
    if [[ $state == paused ]]; then break; fi
  fi
  if ! systemctl is-active --quiet "$PG_SERVICE" && ! cluster_running; then state=stopped; break; fi
  sleep 0.1
done
if [[ $state == stopped ]]; then
  # PostgreSQL 13+ shuts down when the archive ends before the target; its control file says so.
  stopped_short "PostgreSQL stopped during recovery ($(as_postgres "${PG_BIN}/pg_controldata" "$PG_DATA" | awk -F': *' '/^Database cluster state/ {print $2}')): the archive ends before the target, or WAL is missing"
fi
if [[ $TARGET != latest ]]; then
  [[ $state == paused ]] || stopped_short "recovery did not pause at the target within 10 minutes (replay state: ${state:-none})"
  last=$(pg_sql -v target="$TARGET" <<<"select coalesce(pg_last_xact_replay_timestamp()::text, 'none') || ' ' || coalesce(pg_last_xact_replay_timestamp() <= :'target'::timestamptz, true)::text")
  [[ $last == *" true" ]] || stopped_short "the last replayed transaction (${last% *}) is after the target"
  [[ $(pg_sql -c 'select pg_promote(true, 120)') == t ]] || stopped_short "promotion at the target did not finish"
  log "paused at the target (last replayed transaction ${last% *}), promoted"
fi
# A promotion leaves pg_control on the old timeline until the next checkpoint, and pgBackRest
# (2.59) refuses to back up while the two disagree ("WAL timeline 2 does not match pg_control
# timeline 1"): the new stanza's first full backup follows at once.
pg_sql -c 'checkpoint' >/dev/null
pg_sql -c 'alter system reset restore_command' -c 'alter system reset recovery_target_time' \
  -c 'alter system reset recovery_target_action' -c 'select pg_reload_conf()' >/dev/null
echo "restored from ${SOURCE_STANZA} to ${TARGET} at $(date -u +%FT%TZ)" | as_postgres tee "$marker" >/dev/null
log "timing: pgbackrest restore $((t_recovery - t_restore))s, recovery and checks $((SECONDS - t_recovery))s"
log "restored and promoted: timeline $(current_timeline)"
