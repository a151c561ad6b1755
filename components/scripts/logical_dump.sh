#!/usr/bin/env bash
# Scheduled logical dumps (README, Logical dumps): age, the dump program and its units. The timer
# is enabled where DUMP_TIMER=1 (the primary and the dump standby, DUMP_STANDBY, the generation's
# first replica); the program decides at run time which of them dumps, so a promotion needs no
# step. `systemctl start pgstack-logical-dump` takes one now on any server.
# Nothing secret is shipped: the recipients are public keys (the servers can encrypt, never
# decrypt), and the bucket is reached with pgBackRest's own configuration.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${DATABASE:?}" "${PREFIX:?}" "${KEEP:?}" "${RECIPIENTS:?}" "${LOGICAL_SCHEDULE:?}"
: "${EXCLUDE_TABLE_DATA?}" "${EXCLUDE_SCHEMAS?}" "${DUMP_TIMER:?}" "${DUMP_STANDBY?}"

[[ -f /etc/pgstack/pgbackrest.env ]] || die "no /etc/pgstack/pgbackrest.env: the pgbackrest step runs first"
[[ $DATABASE =~ ^[a-z_][a-z0-9_]*$ ]] || die "DATABASE ${DATABASE} is not an identifier"
[[ $PREFIX =~ ^(/[a-z0-9_-]+)+$ ]] || die "PREFIX ${PREFIX} is not an absolute path of lower-case letters, digits, _ and -"
[[ $KEEP =~ ^[1-9][0-9]*$ && $DUMP_TIMER =~ ^[01]$ ]] || die "KEEP is a count from 1 and DUMP_TIMER 0 or 1"
[[ $DUMP_STANDBY =~ ^[a-z0-9-]*$ ]] || die "DUMP_STANDBY ${DUMP_STANDBY} is not a server name"
read -ra keys <<<"$RECIPIENTS"
for key in "${keys[@]}"; do [[ $key =~ ^age1[02-9ac-hj-np-z]{58}$ ]] || die "recipient ${key} is not an age public key"; done
((${#keys[@]})) || die "no recipient"
read -ra patterns <<<"${EXCLUDE_TABLE_DATA} ${EXCLUDE_SCHEMAS}"
for p in "${patterns[@]}"; do [[ $p =~ ^[a-z0-9_*]+(\.[a-z0-9_*]+)?$ ]] || die "exclude pattern ${p} is malformed"; done
systemd-analyze calendar "$LOGICAL_SCHEDULE" >/dev/null 2>&1 || die "'${LOGICAL_SCHEDULE}' is not a systemd OnCalendar expression (systemd-analyze calendar refuses it)"

# age encrypts on the server; it has no service to keep unstarted, but the helper also waits for
# the dpkg lock.
install_unstarted age
install -d -m 755 /etc/pgstack
install -d -m 755 -o postgres -g postgres /var/lib/pgstack /var/lib/pgstack/metrics
# The encrypted file waits there for its upload: root-only.
install -d -m 700 -o root -g root /var/lib/pgstack/logical-dump
result=$(printf '%s\n' "${keys[@]}" | install_file 644 root:root /etc/pgstack/logical-dump.recipients)
log "logical-dump.recipients ${result} (${#keys[@]} public keys)"
result=$(printf 'PG_VERSION=%s\nDATABASE=%s\nPREFIX=%s\nKEEP=%s\nEXCLUDE_TABLE_DATA=%s\nEXCLUDE_SCHEMAS=%s\nDUMP_STANDBY=%s\n' \
  "$PG_VERSION" "$DATABASE" "$PREFIX" "$KEEP" "$EXCLUDE_TABLE_DATA" "$EXCLUDE_SCHEMAS" "$DUMP_STANDBY" \
  | install_file 644 root:root /etc/pgstack/logical-dump.env)
log "logical-dump.env ${result}"
units=/etc/systemd/system
ship 755 /usr/local/sbin/pgstack-logical-dump <"$(dirname "$0")/bin/pgstack-logical-dump"
ship 644 "${units}/pgstack-logical-dump.service" DATABASE PG_SERVICE <"$(dirname "$0")/units/pgstack-logical-dump.service"
ship 644 "${units}/pgstack-logical-dump.timer" LOGICAL_SCHEDULE <"$(dirname "$0")/units/pgstack-logical-dump.timer"
if ((units_changed)); then systemctl daemon-reload; fi
if ((DUMP_TIMER)); then
  systemctl enable --quiet pgstack-logical-dump.timer
  # A changed timer (a new schedule) only takes effect once restarted.
  if ((units_changed)); then systemctl restart pgstack-logical-dump.timer; else systemctl start pgstack-logical-dump.timer; fi
  log "logical dump of ${DATABASE} scheduled here (${LOGICAL_SCHEDULE}; on a primary only while ${DUMP_STANDBY:-no standby} does not stream), to ${PREFIX}, keep ${KEEP}"
else
  if systemctl is-enabled --quiet pgstack-logical-dump.timer 2>/dev/null; then
    systemctl disable --quiet --now pgstack-logical-dump.timer
    log "logical dump timer disabled: the dump runs on other servers"
  fi
  log "logical dump on demand only here (systemctl start pgstack-logical-dump)"
fi
