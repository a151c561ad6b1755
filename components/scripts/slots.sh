#!/usr/bin/env bash
# Physical replication slots on the primary, one per replica: created when missing. A pgstack
# slot whose replica left the config is dropped once inactive, so it holds no WAL.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${SLOTS?}"

wait_for 60 "PostgreSQL to accept connections" as_postgres pg_isready -q
# A slot that max_slot_wal_keep_size invalidated ("lost") can never stream again: its replica
# catches up from the archive meanwhile. Recreate it so streaming resumes from where it is now.
for slot in $(pg_sql -c "select slot_name from pg_replication_slots where slot_name like 'pgstack\_%' and wal_status = 'lost' and not active"); do
  pg_sql -c "select pg_drop_replication_slot('${slot}')" >/dev/null
  log "slot ${slot} had lost its WAL (its replica was down too long): recreated"
done
for slot in $SLOTS; do
  pg_sql -c "select pg_create_physical_replication_slot('${slot}') where not exists (select from pg_replication_slots where slot_name = '${slot}')" >/dev/null
done
keep="'${SLOTS// /\',\'}'"
pg_sql -c "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like 'pgstack\_%' and not active and slot_name not in (${keep})" >/dev/null
log "slots: $(pg_sql -c "select string_agg(slot_name, ' ') from pg_replication_slots")"
