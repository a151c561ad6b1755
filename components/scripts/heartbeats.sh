#!/usr/bin/env bash
# Heartbeats to a Healthchecks-compatible service: the ping URL (it holds the project's ping key,
# a secret) arrives on stdin and is kept only in a root-only file; the program that pings, its
# units and a drop-in that makes the backup service report are shipped from units/ and bin/.
# Every job reports from here on its own timer, so silence (a dead server) alerts from outside.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${SLUG_PREFIX:?}" "${ALIVE_INTERVAL:?}" "${ARCHIVE_INTERVAL:?}" "${REPLICATION_INTERVAL:?}"
: "${ARCHIVE_MAX_AGE:?}" "${REPLICATION_MAX_LAG:?}" "${VERIFY_TLS:?}" "${BACKUPS:?}"

ping_url=$(cat)
# Checked before it goes into an environment file and a curl config: no quote, space or newline.
[[ $ping_url =~ ^https?://[A-Za-z0-9._~:/-]+$ ]] || die "no ping URL on stdin (or one with characters a URL here may not hold)"
[[ $SLUG_PREFIX =~ ^[a-z0-9-]+$ ]] || die "slug prefix ${SLUG_PREFIX} is not lower-case letters, digits and -"
for n in "$ARCHIVE_MAX_AGE" "$REPLICATION_MAX_LAG"; do [[ $n =~ ^[0-9]+$ ]] || die "bound ${n} is not a number of seconds"; done

install -d -m 755 /etc/pgstack
# postgres-owned and readable: the archive watch writes there, node_exporter reads metrics/.
install -d -m 755 -o postgres -g postgres /var/lib/pgstack
# Root-only: the ping key is in it. The units do not load it (EnvironmentFile= would put the key
# in the environment of a process running as postgres); the program reads it as root.
result=$(printf 'HC_PING_URL=%s\nHC_SLUG_PREFIX=%s\nHC_VERIFY_TLS=%s\nHC_ARCHIVE_MAX_AGE=%s\nHC_REPLICATION_MAX_LAG=%s\n' \
  "$ping_url" "$SLUG_PREFIX" "$VERIFY_TLS" "$ARCHIVE_MAX_AGE" "$REPLICATION_MAX_LAG" \
  | install_file 600 root:root /etc/pgstack/heartbeats.env)
log "heartbeats.env ${result}"

ship 755 /usr/local/sbin/pgstack-heartbeat <"$(dirname "$0")/bin/pgstack-heartbeat"
units=/etc/systemd/system
ship 644 "${units}/pgstack-heartbeat@.service" <"$(dirname "$0")/units/pgstack-heartbeat@.service"
timers=()
# JOB and INTERVAL are read by name (fill).
# shellcheck disable=SC2034
for JOB in alive archive replication; do
  case $JOB in
    alive) INTERVAL=$ALIVE_INTERVAL ;;
    archive) INTERVAL=$ARCHIVE_INTERVAL ;;
    replication) INTERVAL=$REPLICATION_INTERVAL ;;
  esac
  ship 644 "${units}/pgstack-heartbeat-${JOB}.timer" JOB INTERVAL <"$(dirname "$0")/units/pgstack-heartbeat.timer"
  timers+=("pgstack-heartbeat-${JOB}.timer")
done
if ((BACKUPS)); then
  # The backup service reports its start and its end (root-only helpers, `+` in the drop-in).
  install -d -m 755 "${units}/pgstack-backup@.service.d"
  ship 644 "${units}/pgstack-backup@.service.d/pgstack-heartbeat.conf" <"$(dirname "$0")/units/pgstack-backup@.service.d/pgstack-heartbeat.conf"
fi

if ((units_changed)); then systemctl daemon-reload; fi
systemctl enable --quiet "${timers[@]}"
# A changed timer (a new interval) only takes effect once restarted.
if ((units_changed)); then systemctl restart "${timers[@]}"; else systemctl start "${timers[@]}"; fi
log "heartbeats of ${SLUG_PREFIX}: alive every ${ALIVE_INTERVAL}, archive every ${ARCHIVE_INTERVAL}, replication every ${REPLICATION_INTERVAL}"
