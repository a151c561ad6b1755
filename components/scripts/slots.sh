#!/usr/bin/env bash
# Physical replication slots on the primary, one per replica. The wanted list goes to
# /etc/pgstack/slots; pgstack-slots (run now, then by its timer) creates the missing ones,
# recreates lost ones and drops pgstack slots whose replica left the config once inactive.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${SLOTS?}"

wait_for 60 "PostgreSQL to accept connections" as_postgres pg_isready -q
read -ra slots <<<"$SLOTS"
for slot in "${slots[@]}"; do
  [[ $slot =~ ^pgstack_[a-z0-9_]+$ ]] || die "slot name ${slot} is not a pgstack slot name"
done
mkdir -p /etc/pgstack
if ((${#slots[@]})); then printf '%s\n' "${slots[@]}"; fi | install_file 644 root:root /etc/pgstack/slots >/dev/null
units=/etc/systemd/system
ship 755 /usr/local/sbin/pgstack-slots <"$(dirname "$0")/bin/pgstack-slots"
ship 644 "${units}/pgstack-slots.service" PG_SERVICE <"$(dirname "$0")/units/pgstack-slots.service"
ship 644 "${units}/pgstack-slots.timer" <"$(dirname "$0")/units/pgstack-slots.timer"
if ((units_changed)); then systemctl daemon-reload; fi
systemctl enable --quiet --now pgstack-slots.timer
as_postgres /usr/local/sbin/pgstack-slots
log "slots: $(pg_sql -c "select string_agg(slot_name, ' ') from pg_replication_slots")"
