#!/usr/bin/env bash
# The server's TLS identity: key, certificate and the stack CA, read from stdin (the key is a
# secret) and written next to the cluster's configuration. PostgreSQL reloads them on SIGHUP.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}"

# stdin: the private key, then the server certificate, then the CA certificate (PEM blocks).
parts=$(mktemp -d)
trap 'rm -rf "$parts"' EXIT
awk -v dir="$parts" '/^-----BEGIN /{n++} n{print > (dir "/" n)}'
grep -q 'PRIVATE KEY-----' "${parts}/1" 2>/dev/null || die "stdin must start with the private key"
grep -q 'BEGIN CERTIFICATE' "${parts}/2" 2>/dev/null || die "the server certificate is missing"
grep -q 'BEGIN CERTIFICATE' "${parts}/3" 2>/dev/null || die "the CA certificate is missing"

changed=0
for spec in "1 600 pgstack-server.key" "2 644 pgstack-server.crt" "3 644 pgstack-ca.crt"; do
  read -r part mode file <<<"$spec"
  if [[ $(install_file "$mode" postgres:postgres "${PG_CLUSTER_DIR}/${file}" <"${parts}/${part}") == changed ]]; then
    changed=1
  fi
done
if ((changed)) && cluster_running; then
  pg_sql -c 'select pg_reload_conf()' >/dev/null
  log "TLS files changed: reloaded"
elif ((changed)); then
  log "TLS files written"
else
  log "TLS files unchanged"
fi
