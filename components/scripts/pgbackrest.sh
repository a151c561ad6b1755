#!/usr/bin/env bash
# pgBackRest on a server: the config (from stdin: it holds the S3 keys and the cipher
# passphrase), the backup and archive-watch units, and on a primary the stanza, a check and a
# first full backup. Timers run everywhere but act only on the current primary, so a promoted
# replica takes over backups without another deploy.
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
install -d -m 750 -o postgres -g postgres /etc/pgbackrest /var/log/pgbackrest /var/spool/pgbackrest /var/lib/pgstack
result=$(printf '%s\n' "$conf" | install_file 640 postgres:postgres /etc/pgbackrest/pgbackrest.conf)
log "pgbackrest.conf ${result}"

units_changed=0
unit() {
  local path=$1 content=$2
  if [[ $(printf '%s\n' "$content" | install_file 644 root:root "$path") == changed ]]; then units_changed=1; fi
}

unit /usr/local/sbin/pgstack-backup "#!/usr/bin/env bash
# Run by pgstack-backup@TYPE.service as postgres: a backup of stanza ${STANZA}, on the primary only.
set -euo pipefail
if [[ \$(psql -X -At -d postgres -c 'select pg_is_in_recovery()') == t ]]; then
  echo 'standby: backups run on the primary'
  exit 0
fi
exec pgbackrest --stanza=${STANZA} --type=\"\$1\" backup"
chmod 755 /usr/local/sbin/pgstack-backup

unit /usr/local/sbin/pgstack-archive-watch "#!/usr/bin/env bash
# Async archiving drops WAL when its queue overflows (pgBackRest then reports success to
# PostgreSQL): point-in-time recovery has a gap from there. Detect it, say so, and take a new full
# backup once the object store answers again, so recovery works from that backup on.
set -euo pipefail
if [[ \$(psql -X -At -d postgres -c 'select pg_is_in_recovery()') == t ]]; then exit 0; fi
seen_file=/var/lib/pgstack/archive-watch.last-drop
pending=/var/lib/pgstack/archive-gap
# The newest drop line (it carries a millisecond timestamp) rather than a count, so that log
# rotation cannot raise a false gap; the rotated log (plain: delaycompress) is read too, so a
# drop just before a rotation is not missed.
log=/var/log/pgbackrest/${STANZA}-archive-push-async.log
last=\$(cat \"\$log.1\" \"\$log\" 2>/dev/null | grep 'dropped WAL file' | tail -n 1 || true)
if [[ -n \$last && \$last != \"\$(cat \"\$seen_file\" 2>/dev/null || true)\" ]]; then
  echo \"pgstack: WAL GAP in stanza ${STANZA}: pgBackRest dropped WAL (\$last); point-in-time recovery past the gap needs a new full backup\" >&2
  touch \"\$pending\"
  printf '%s\\n' \"\$last\" > \"\$seen_file\"
fi
if [[ -e \$pending ]]; then
  pgbackrest --stanza=${STANZA} check
  pgbackrest --stanza=${STANZA} --type=full backup
  rm -f \"\$pending\"
  echo 'pgstack: new full backup taken after the WAL gap; point-in-time recovery works again from it'
fi"
chmod 755 /usr/local/sbin/pgstack-archive-watch

unit /etc/systemd/system/pgstack-backup@.service "[Unit]
Description=pgBackRest %i backup of stanza ${STANZA} (acts on the primary only)
After=postgresql@${PG_VERSION}-main.service

[Service]
Type=oneshot
User=postgres
ExecStart=/usr/local/sbin/pgstack-backup %i"

backup_timer() {
  local type=$1 description=$2 schedule=$3
  unit "/etc/systemd/system/pgstack-backup-${type}.timer" "[Unit]
Description=${description} (pgstack)

[Timer]
OnCalendar=${schedule}
Persistent=true
Unit=pgstack-backup@${type}.service

[Install]
WantedBy=timers.target"
}
backup_timer full "Weekly full backup" "$FULL_SCHEDULE"
backup_timer diff "Daily differential backup" "$DIFF_SCHEDULE"

unit /etc/systemd/system/pgstack-archive-watch.service "[Unit]
Description=Detect WAL dropped by pgBackRest's archive queue and re-base backups (pgstack)

[Service]
Type=oneshot
User=postgres
ExecStart=/usr/local/sbin/pgstack-archive-watch"

unit /etc/systemd/system/pgstack-archive-watch.timer "[Unit]
Description=Watch WAL archiving for gaps (pgstack)

[Timer]
OnBootSec=${WATCH_INTERVAL}
OnUnitActiveSec=${WATCH_INTERVAL}

[Install]
WantedBy=timers.target"

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
if ! info=$(as_postgres pgbackrest --stanza="$STANZA" --output=json info 2>&1); then
  die "pgbackrest info failed for stanza ${STANZA}: ${info}"
fi
# Status codes 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza data and
# 6 backup running are states to build on; anything else (a cipher error) is not.
mapfile -t codes < <(grep -o '"code":[0-9]*' <<<"$info" | cut -d: -f2 | sort -u)
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
if [[ $(as_postgres pgbackrest --stanza="$STANZA" --output=json info) == *'"backup":[]'* ]]; then
  log "first full backup of ${STANZA}"
  pgbr --type=full backup >/dev/null
fi
log "stanza ${STANZA}: $(as_postgres pgbackrest --stanza="$STANZA" info | grep -c 'full backup:') full backup(s)"
