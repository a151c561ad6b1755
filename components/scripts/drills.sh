#!/usr/bin/env bash
# The write canary, repository verification and the restore drill (README, Restore drills).
# Every server gets the canary (pgstack-canary.timer every CANARY_INTERVAL; it writes only on the
# primary). With backups (BACKUPS=1), every server also gets pgstack-verify (its timer acts on the
# primary only) and pgstack-drill; the drill's timer is enabled only where DRILL_TIMER=1 (the
# configured drill server), though `systemctl start pgstack-drill` runs one on any server.
# Nothing secret is shipped: the drill reads the stanza from /etc/pgstack/pgbackrest.env (root-only,
# written by the pgbackrest step) and pgBackRest's own configuration.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${BACKUPS:?}" "${CANARY_INTERVAL:?}" "${STANZA?}" "${DATABASE?}" "${DRILL_SCHEDULE?}"
: "${VERIFY_SCHEDULE?}" "${DRILL_TIMER?}" "${HEAPALLINDEXED?}" "${MARGIN_PERCENT?}"

[[ $CANARY_INTERVAL =~ ^[0-9]+s$ ]] || die "CANARY_INTERVAL ${CANARY_INTERVAL} is not a number of seconds such as 5s"
units=/etc/systemd/system
ship 755 /usr/local/sbin/pgstack-canary <"$(dirname "$0")/bin/pgstack-canary"
ship 644 "${units}/pgstack-canary.service" PG_SERVICE <"$(dirname "$0")/units/pgstack-canary.service"
ship 644 "${units}/pgstack-canary.timer" CANARY_INTERVAL <"$(dirname "$0")/units/pgstack-canary.timer"
timers=(pgstack-canary.timer)

if ((BACKUPS)); then
  [[ -f /etc/pgstack/pgbackrest.env ]] || die "no /etc/pgstack/pgbackrest.env: the pgbackrest step runs first"
  [[ $DATABASE =~ ^[a-z_][a-z0-9_]*$ ]] || die "DATABASE ${DATABASE} is not an identifier"
  [[ $MARGIN_PERCENT =~ ^[0-9]+$ ]] || die "MARGIN_PERCENT ${MARGIN_PERCENT} is not a number"
  [[ $HEAPALLINDEXED =~ ^[01]$ && $DRILL_TIMER =~ ^[01]$ ]] || die "HEAPALLINDEXED and DRILL_TIMER are 0 or 1"
  # A schedule systemd cannot read would leave a timer that never fires: refuse it here.
  for schedule in "$DRILL_SCHEDULE" "$VERIFY_SCHEDULE"; do
    systemd-analyze calendar "$schedule" >/dev/null 2>&1 || die "'${schedule}' is not a systemd OnCalendar expression (systemd-analyze calendar refuses it)"
  done
  install -d -m 755 /etc/pgstack
  install -d -m 755 -o postgres -g postgres /var/lib/pgstack /var/lib/pgstack/metrics
  result=$(printf 'PG_VERSION=%s\nDATABASE=%s\nHEAPALLINDEXED=%s\nMARGIN_PERCENT=%s\n' \
    "$PG_VERSION" "$DATABASE" "$HEAPALLINDEXED" "$MARGIN_PERCENT" | install_file 644 root:root /etc/pgstack/drill.env)
  log "drill.env ${result}"
  ship 755 /usr/local/sbin/pgstack-drill <"$(dirname "$0")/bin/pgstack-drill"
  ship 755 /usr/local/sbin/pgstack-verify <"$(dirname "$0")/bin/pgstack-verify"
  ship 644 "${units}/pgstack-drill.service" STANZA PG_SERVICE <"$(dirname "$0")/units/pgstack-drill.service"
  ship 644 "${units}/pgstack-drill.timer" DRILL_SCHEDULE <"$(dirname "$0")/units/pgstack-drill.timer"
  ship 644 "${units}/pgstack-verify.service" STANZA PG_SERVICE <"$(dirname "$0")/units/pgstack-verify.service"
  ship 644 "${units}/pgstack-verify.timer" VERIFY_SCHEDULE <"$(dirname "$0")/units/pgstack-verify.timer"
  timers+=(pgstack-verify.timer)
fi

if ((units_changed)); then systemctl daemon-reload; fi
systemctl enable --quiet "${timers[@]}"
# A changed timer (a new interval or schedule) only takes effect once restarted.
if ((units_changed)); then systemctl restart "${timers[@]}"; else systemctl start "${timers[@]}"; fi
if ((BACKUPS)); then
  if ((DRILL_TIMER)); then
    systemctl enable --quiet pgstack-drill.timer
    if ((units_changed)); then systemctl restart pgstack-drill.timer; else systemctl start pgstack-drill.timer; fi
    log "restore drill scheduled here (${DRILL_SCHEDULE}); verify ${VERIFY_SCHEDULE} (on the primary)"
  else
    # The drill server may have moved: the timer runs on one server of the generation only.
    if systemctl is-enabled --quiet pgstack-drill.timer 2>/dev/null; then
      systemctl disable --quiet --now pgstack-drill.timer
      log "restore drill timer disabled: the drill runs on another server"
    fi
    log "restore drill on demand only here (systemctl start pgstack-drill); verify ${VERIFY_SCHEDULE} (on the primary)"
  fi
fi
log "write canary every ${CANARY_INTERVAL} (on the primary)"
