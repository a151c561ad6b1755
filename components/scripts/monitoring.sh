#!/usr/bin/env bash
# The monitoring server: Prometheus and Alertmanager from the distribution. Both listen on
# loopback only (reach them with an SSH tunnel); Alertmanager's cluster port is off. Every file
# is checked by promtool / amtool before it replaces the running one, so a bad render never
# stops a working monitoring server.
# stdin: the scrape password (one line), then alertmanager.yml (it may hold receiver secrets).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${PROMETHEUS_YML:?}" "${RULES_YML:?}" "${CA_PEM:?}" "${RETENTION_DAYS:?}"

IFS= read -r scrape_password || true
alertmanager_yml=$(cat)
[[ -n $scrape_password ]] || die "stdin must start with the scrape password"
[[ $alertmanager_yml == *"receivers:"* ]] || die "no alertmanager.yml on stdin after the scrape password"
[[ $RETENTION_DAYS =~ ^[0-9]+$ ]] || die "RETENTION_DAYS ${RETENTION_DAYS} is not a number"

services=(prometheus prometheus-alertmanager)
install_unstarted "${services[@]}"

# Checked in a scratch copy of /etc/prometheus, where the renders' absolute paths point to the
# new files: promtool and amtool read the files the configuration names.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
printf '%s\n' "$PROMETHEUS_YML" | sed "s|/etc/prometheus/|${stage}/|g" >"${stage}/prometheus.yml"
printf '%s\n' "$RULES_YML" >"${stage}/pgstack.rules.yml"
printf '%s\n' "$CA_PEM" >"${stage}/pgstack-ca.crt"
printf '%s\n' "$scrape_password" >"${stage}/pgstack-scrape.pass"
printf '%s\n' "$alertmanager_yml" >"${stage}/alertmanager.yml"
promtool check config "${stage}/prometheus.yml" >/dev/null 2>"${stage}/err" \
  || die "the rendered prometheus.yml or its rules do not pass promtool: $(cat "${stage}/err")"
amtool check-config "${stage}/alertmanager.yml" >/dev/null 2>"${stage}/err" \
  || die "the rendered alertmanager.yml does not pass amtool: $(sed -E 's|https?://[^ ]*|<url>|g' "${stage}/err")"

etc=/etc/prometheus
changed=0
note() { if [[ $1 == changed ]]; then changed=1; fi; }
note "$(install_file 644 root:root "${etc}/prometheus.yml" <<<"$PROMETHEUS_YML")"
note "$(install_file 644 root:root "${etc}/pgstack.rules.yml" <<<"$RULES_YML")"
note "$(install_file 644 root:root "${etc}/pgstack-ca.crt" <<<"$CA_PEM")"
# The secrets: readable by the services' user, nobody else.
note "$(printf '%s\n' "$scrape_password" | install_file 640 root:prometheus "${etc}/pgstack-scrape.pass")"
note "$(printf '%s\n' "$alertmanager_yml" | install_file 640 root:prometheus "${etc}/alertmanager.yml")"
note "$(printf 'ARGS="--web.listen-address=127.0.0.1:9090 --storage.tsdb.retention.time=%sd"\n' "$RETENTION_DAYS" \
  | install_file 644 root:root /etc/default/prometheus)"
note "$(printf 'ARGS="--web.listen-address=127.0.0.1:9093 --cluster.listen-address="\n' \
  | install_file 644 root:root /etc/default/prometheus-alertmanager)"

ship 755 /usr/local/sbin/pgstack-alertmanager <"$(dirname "$0")/bin/pgstack-alertmanager"
install -d -m 755 /etc/systemd/system/prometheus-alertmanager.service.d
ship 644 /etc/systemd/system/prometheus-alertmanager.service.d/pgstack.conf <"$(dirname "$0")/units/prometheus-alertmanager.service.d/pgstack.conf"
if ((units_changed)); then
  systemctl daemon-reload
  changed=1
fi

systemctl enable --quiet "${services[@]}"
if ((changed)); then
  systemctl restart "${services[@]}"
  log "Prometheus and Alertmanager (re)started with the new configuration"
else
  systemctl start "${services[@]}"
fi
wait_for 60 "Prometheus to be ready" curl -fsS --max-time 2 http://127.0.0.1:9090/-/ready
wait_for 60 "Alertmanager to be ready" curl -fsS --max-time 2 http://127.0.0.1:9093/-/ready
log "monitoring: Prometheus $(prometheus --version 2>&1 | awk 'NR==1 {print $3}'), Alertmanager ready; $(grep -c 'alert:' "${etc}/pgstack.rules.yml") alert rules"
