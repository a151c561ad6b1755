#!/usr/bin/env bash
# Write the rendered postgresql.conf layer and pg_hba.conf, then apply them: a reload when
# that is enough, a restart only when PostgreSQL reports a setting pending restart.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${PG_CONF:?}" "${HBA_CONF:?}"

changed=()
note() { if [[ $1 == changed ]]; then changed+=("$2"); fi; }

# PostgreSQL binds the private IP even when the private network comes up after it at boot.
sysctl_file=/etc/sysctl.d/60-pgstack.conf
note "$(printf 'net.ipv4.ip_nonlocal_bind = 1\n' | install_file 644 root:root "$sysctl_file")" sysctl
if [[ $(sysctl -n net.ipv4.ip_nonlocal_bind) != 1 ]]; then
  sysctl -q -p "$sysctl_file" || log "could not apply ${sysctl_file} now; it applies at boot"
fi
dropin_dir=/etc/systemd/system/postgresql@.service.d
mkdir -p "$dropin_dir"
# PostgreSQL 15 does not honour archive_timeout after a start until its first checkpoint
# (measured on 15.18: no switch in 40 s with archive_timeout = 5 s); a checkpoint right after
# the start restores the bound on data loss from the first minute.
ship 644 "${dropin_dir}/pgstack.conf" <"$(dirname "$0")/units/postgresql@.service.d/pgstack.conf"
if ((units_changed)); then systemctl daemon-reload; fi

mkdir -p "${PG_CLUSTER_DIR}/conf.d"
chown postgres:postgres "${PG_CLUSTER_DIR}/conf.d"
note "$(printf '%s' "$PG_CONF" | install_file 644 postgres:postgres "${PG_CLUSTER_DIR}/conf.d/50-pgstack.conf")" postgresql.conf
note "$(printf '%s' "$HBA_CONF" | install_file 640 postgres:postgres "${PG_CLUSTER_DIR}/pg_hba.conf")" pg_hba.conf
grep -q "^include_dir = 'conf.d'" "${PG_CLUSTER_DIR}/postgresql.conf" \
  || die "${PG_CLUSTER_DIR}/postgresql.conf does not include conf.d; restore the packaged file"

systemctl enable --quiet "$PG_SERVICE"
if ! cluster_running; then
  start_cluster
  log "started PostgreSQL"
elif ((${#changed[@]})); then
  pg_sql -c 'select pg_reload_conf()' >/dev/null
  sleep 0.5
  pending=$(pg_sql -c "select string_agg(name, ',') from pg_settings where pending_restart")
  if [[ -n $pending ]]; then
    log "restarting: ${pending} changed"
    systemctl restart "$PG_SERVICE"
    wait_for 60 "PostgreSQL to accept connections" as_postgres pg_isready -q
  else
    log "reloaded: ${changed[*]} changed"
  fi
else
  log "configuration unchanged"
fi
