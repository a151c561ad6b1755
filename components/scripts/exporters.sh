#!/usr/bin/env bash
# node_exporter and postgres_exporter from the distribution, on the private IP only, with TLS
# from the stack CA (the server's own certificate) and basic auth, so a host on the private
# network without the scrape password reads nothing. Hetzner's cloud firewall does not filter the
# private network: the password and TLS are the guard. postgres_exporter logs in as the monitoring
# role (pg_monitor) over loopback with a password from a file only it may read.
# stdin: the scrape password, then the monitoring role's password, one per line.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
# CERT_SHA256: the server certificate's digest; a renewed certificate changes it, so this step
# runs again and copies the new files (the exporters read them at each TLS handshake).
: "${PG_VERSION:?}" "${PRIVATE_IP:?}" "${MONITORING_ROLE:?}" "${CERT_SHA256:?}"

IFS= read -r scrape_password || true
IFS= read -r role_password || true
[[ -n $scrape_password && -n $role_password ]] || die "stdin must hold the scrape password and the monitoring role's password"
[[ $PRIVATE_IP =~ ^[0-9.]+$ ]] || die "PRIVATE_IP ${PRIVATE_IP} is not an IPv4 address"
[[ $MONITORING_ROLE =~ ^[a-z_][a-z0-9_]*$ ]] || die "MONITORING_ROLE ${MONITORING_ROLE} is not an identifier"

exporters=(prometheus-node-exporter prometheus-postgres-exporter)
install_unstarted "${exporters[@]}" python3-bcrypt
getent group prometheus >/dev/null || die "the exporter packages did not create the prometheus group"

dir=/etc/pgstack/exporters
install -d -m 750 -o root -g prometheus "$dir"
# The textfile collector's directory: the backup and archive programs (as postgres) write there.
install -d -m 755 -o postgres -g postgres /var/lib/pgstack /var/lib/pgstack/metrics

changed=0
note() { if [[ $1 == changed ]]; then changed=1; fi; }
note "$(install_file 640 root:prometheus "${dir}/tls.crt" <"${PG_CLUSTER_DIR}/pgstack-server.crt")"
note "$(install_file 640 root:prometheus "${dir}/tls.key" <"${PG_CLUSTER_DIR}/pgstack-server.key")"
note "$(printf '%s\n' "$role_password" | install_file 640 root:prometheus "${dir}/monitoring.pass")"
# The custom queries: a change sets units_changed, which restarts the exporters below.
ship 644 "${dir}/queries.yaml" <"$(dirname "$0")/etc/pgstack-queries.yaml"

# The web config holds a bcrypt hash of the scrape password. A new salt on every run would
# rewrite the file and restart the exporters: keep the hash while it still matches.
old_hash=$(sed -n 's/^  prometheus: //p' "${dir}/web.yml" 2>/dev/null || true)
hash=$(printf '%s\n%s\n' "$scrape_password" "$old_hash" | python3 -c '
import sys, bcrypt
password, old = (line.rstrip("\n") for line in sys.stdin.readlines()[:2])
try:
    keep = bool(old) and bcrypt.checkpw(password.encode(), old.encode())
except ValueError:
    keep = False
print(old if keep else bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode())
')
note "$(printf 'tls_server_config:\n  cert_file: %s\n  key_file: %s\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: %s\n' \
  "${dir}/tls.crt" "${dir}/tls.key" "$hash" | install_file 640 root:prometheus "${dir}/web.yml")"

web="--web.config.file=${dir}/web.yml"
note "$(printf 'ARGS="--web.listen-address=%s:9100 %s --collector.textfile.directory=/var/lib/pgstack/metrics"\n' \
  "$PRIVATE_IP" "$web" | install_file 644 root:root /etc/default/prometheus-node-exporter)"
# No password here: DATA_SOURCE_PASS_FILE names the file only the exporter's user may read. It
# connects to the pgstack database: its custom queries read the write canary there, and the
# statistics views the others read are the whole cluster's from any database.
note "$(printf 'DATA_SOURCE_URI="127.0.0.1:5432/pgstack?sslmode=disable"\nDATA_SOURCE_USER="%s"\nDATA_SOURCE_PASS_FILE="%s"\nARGS="--web.listen-address=%s:9187 %s --extend.query-path=%s/queries.yaml"\n' \
  "$MONITORING_ROLE" "${dir}/monitoring.pass" "$PRIVATE_IP" "$web" "$dir" \
  | install_file 644 root:root /etc/default/prometheus-postgres-exporter)"

units=/etc/systemd/system
for unit in "${exporters[@]}"; do
  install -d -m 755 "${units}/${unit}.service.d"
  ship 644 "${units}/${unit}.service.d/pgstack.conf" <"$(dirname "$0")/units/prometheus-exporter.d/pgstack.conf"
done
if ((units_changed)); then systemctl daemon-reload; fi
systemctl enable --quiet "${exporters[@]}"
if ((changed || units_changed)); then
  systemctl restart "${exporters[@]}"
  log "exporters (re)started with the new configuration"
else
  systemctl start "${exporters[@]}"
fi

# Proven from here, as Prometheus will read them: TLS against the stack CA, with the password
# (from curl's config on stdin, never the command line), and refused without it.
scrape() {
  local port=$1
  shift
  curl -sS --max-time 5 --cacert "${PG_CLUSTER_DIR}/pgstack-ca.crt" -o /dev/null -w '%{http_code}' "$@" \
    "https://${PRIVATE_IP}:${port}/metrics" 2>/dev/null || true
}
with_password() { printf 'user = "prometheus:%s"\n' "$scrape_password" | scrape "$1" -K -; }
answers_200() { [[ $(with_password "$1") == 200 ]]; }
for port in 9100 9187; do
  for ((i = 0; i < 30; i++)); do answers_200 "$port" && break; sleep 1; done
  code=$(with_password "$port")
  [[ $code == 200 ]] || die "the exporter on ${PRIVATE_IP}:${port} answers ${code} with the scrape password (journalctl -u prometheus-*-exporter)"
  code=$(scrape "$port")
  [[ $code == 401 ]] || die "the exporter on ${PRIVATE_IP}:${port} answers ${code} without a password; it must refuse (401)"
done
# Read whole, then searched: grep -q would close the pipe early and fail curl under pipefail.
pg_up() {
  local metrics
  metrics=$(printf 'user = "prometheus:%s"\n' "$scrape_password" \
    | curl -sS --max-time 5 --cacert "${PG_CLUSTER_DIR}/pgstack-ca.crt" -K - "https://${PRIVATE_IP}:9187/metrics" 2>/dev/null) || return 1
  grep -qx 'pg_up 1' <<<"$metrics"
}
# One scrape with pg_up 1 within 30 s proves the login (a second probe after it once failed a
# first deploy on one scrape during the background full backup).
up=0
for ((i = 0; i < 30; i++)); do
  if pg_up; then up=1; break; fi
  sleep 1
done
((up)) || die "postgres_exporter does not reach PostgreSQL as ${MONITORING_ROLE} (pg_up is not 1 for 30 s): $(journalctl -u prometheus-postgres-exporter --no-pager -n 5 -o cat 2>/dev/null | tr '\n' ' ')"
log "exporters on ${PRIVATE_IP}: node :9100, postgres :9187 (TLS, basic auth); pg_up 1"
