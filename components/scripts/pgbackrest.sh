#!/usr/bin/env bash
# pgBackRest on a server: the config (from stdin: it holds the S3 keys and the cipher
# passphrase), the backup and archive-watch units and programs (real files in units/ and bin/,
# shipped in the command text), and on a primary the stanza, a check and a first full backup.
# Timers run everywhere but act only on the current primary, so a promoted replica takes over
# backups without another deploy.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${STANZA:?}" "${MODE:?}" "${FULL_SCHEDULE:?}" "${DIFF_SCHEDULE:?}" "${WATCH_INTERVAL:?}"

conf=$(cat)
[[ $conf == *"[global]"* ]] || die "no pgBackRest configuration on stdin"
if pgbackrest_version_at_least 2.46; then
  # Block incremental is GA from 2.46; older versions need --beta, so leave it off there.
  conf=${conf/"[global]"/$'[global]\nrepo1-block=y'}
fi
install -d -m 750 -o postgres -g postgres /etc/pgbackrest /var/log/pgbackrest /var/spool/pgbackrest
# pgstack's state, and the metrics node_exporter's textfile collector reads (exporters.sh).
install -d -m 755 -o postgres -g postgres /var/lib/pgstack /var/lib/pgstack/metrics
result=$(printf '%s\n' "$conf" | install_file 640 postgres:postgres /etc/pgbackrest/pgbackrest.conf)
log "pgbackrest.conf ${result}"

# The backup and watch programs read the stanza from this file (EnvironmentFile= of their
# units: systemd reads it as root, so it stays root-only), not from their own text.
[[ $STANZA =~ ^[A-Za-z0-9_.-]+$ ]] || die "stanza ${STANZA} has characters an environment file would need quoted"
install -d -m 755 /etc/pgstack
env_result=$(printf 'STANZA=%s\n' "$STANZA" | install_file 600 root:root /etc/pgstack/pgbackrest.env)
log "pgbackrest.env ${env_result}"

ship 755 /usr/local/sbin/pgstack-backup <"$(dirname "$0")/bin/pgstack-backup"
ship 755 /usr/local/sbin/pgstack-archive-watch <"$(dirname "$0")/bin/pgstack-archive-watch"
ship 755 /usr/local/sbin/pgstack-metrics <"$(dirname "$0")/bin/pgstack-metrics"
units=/etc/systemd/system
ship 644 "${units}/pgstack-backup@.service" STANZA PG_SERVICE <"$(dirname "$0")/units/pgstack-backup@.service"
ship 644 "${units}/pgstack-backup-full.timer" FULL_SCHEDULE <"$(dirname "$0")/units/pgstack-backup-full.timer"
ship 644 "${units}/pgstack-backup-diff.timer" DIFF_SCHEDULE <"$(dirname "$0")/units/pgstack-backup-diff.timer"
ship 644 "${units}/pgstack-archive-watch.service" <"$(dirname "$0")/units/pgstack-archive-watch.service"
ship 644 "${units}/pgstack-archive-watch.timer" WATCH_INTERVAL <"$(dirname "$0")/units/pgstack-archive-watch.timer"

if ((units_changed)); then systemctl daemon-reload; fi
systemctl enable --quiet --now pgstack-backup-full.timer pgstack-backup-diff.timer pgstack-archive-watch.timer

if [[ $MODE != primary ]]; then
  log "standby: pgBackRest configured for archive-get; backups stay with the primary"
  exit 0
fi
wait_for 60 "PostgreSQL to accept connections" as_postgres pg_isready -q

# The asynchronous archiver holds the stanza's archive lock while it pushes (or retries against
# a stanza not created yet): wait for it rather than fail on error 050.
pgbr() {
  local attempt out
  for ((attempt = 0; attempt < 45; attempt++)); do
    if out=$(as_postgres pgbackrest --stanza="$STANZA" "$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    [[ $out == *"[050]"* ]] || break
    sleep 2
  done
  printf '%s\n' "$out" >&2
  return 1
}

# The passphrase guard: a repository made with another passphrase is never overwritten or
# mixed; the operator restores the passphrase the repository was created with.
# Only stdout is JSON: pgBackRest's warnings and errors go to stderr, which shows in the step's
# output as they are.
if ! info=$(as_postgres pgbackrest --stanza="$STANZA" --output=json info); then
  die "pgbackrest info failed for stanza ${STANZA} (its error is above)"
fi
# Status codes 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza data and
# 6 backup running are states to build on; anything else (a cipher error) is not. Read the
# stanza's status and each repository's: a cipher error may show on either.
codes_text=$(jq -r '[.[] | .status.code, (.repo[]?.status.code)] | unique | .[]' <<<"$info") \
  || die "pgbackrest info for stanza ${STANZA} is not the JSON expected: ${info}"
[[ -n $codes_text ]] || die "pgbackrest info for stanza ${STANZA} has no status: ${info}"
mapfile -t codes <<<"$codes_text"
for code in "${codes[@]}"; do
  case $code in
    0 | 1 | 2 | 3 | 6) ;;
    *) die "stanza ${STANZA} cannot be read with this configuration (${info}); if it is a cipher error, set back the passphrase the repository was created with" ;;
  esac
done
# stanza-create only while the stanza is missing: on a live server it would contend for the
# archive lock with the asynchronous archiver.
if [[ " ${codes[*]} " == *" 1 "* || " ${codes[*]} " == *" 3 "* ]]; then
  pgbr stanza-create >/dev/null
  log "created stanza ${STANZA}"
  result=changed
fi
# check forces a WAL switch and waits for it in the archive: worth it when something changed.
if [[ $result == changed ]]; then
  pgbr check >/dev/null
  log "pgbackrest check passed"
fi
# backup_count JQ-CONDITION: how many of the stanza's backups match (true: all of them).
backup_count() { as_postgres pgbackrest --stanza="$STANZA" --output=json info | jq "[.[0].backup[]? | select($1)] | length"; }
existing=$(backup_count true)
if ((existing == 0)); then
  # In the background, through the unit the timers use (its metrics and heartbeat included): the
  # server is verified and writable now, and the `up` need not wait the backup's length. Until it
  # is listed, pre-flight refuses to retire a generation this one was restored from.
  systemctl start --no-block pgstack-backup@full.service
  log "first full backup of ${STANZA} started in the background (pgstack-backup@full.service)"
else
  log "stanza ${STANZA}: $(backup_count '.type == "full"') full backup(s)"
fi
# The metrics show the first full backup from the first scrape on, not from the first watch.
as_postgres env STANZA="$STANZA" /usr/local/sbin/pgstack-metrics repository >/dev/null
