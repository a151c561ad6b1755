#!/usr/bin/env bash
# Apply the role model to an RDS instance, from the bastion, with psql over TLS.
# stdin: the master password on the first line, then the idempotent psql script (SCRAM
# verifiers, never plain passwords). Neither ever appears in the command text or in ps.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${DB_HOST:?}" "${DB_PORT:?}" "${MASTER_USER:?}" "${SSL_MODE:?}" "${CA_BUNDLE_URL?}"

command -v psql >/dev/null 2>&1 || die "psql is not installed on the bastion; install postgresql-client (15 or newer)"
IFS= read -r PGPASSWORD || die "stdin must start with the master password line"
[[ -n $PGPASSWORD ]] || die "the master password line is empty"
export PGPASSWORD PGHOST="$DB_HOST" PGPORT="$DB_PORT" PGUSER="$MASTER_USER" PGDATABASE=postgres
export PGSSLMODE="$SSL_MODE" PGCONNECT_TIMEOUT=10 PGAPPNAME=pgstack-roles

if [[ $SSL_MODE == verify-full ]]; then
  # The instance certificate names the instance endpoint, which is what DB_HOST is.
  ca=$(mktemp)
  trap 'rm -f "$ca"' EXIT
  curl -fsS --retry 3 -o "$ca" "$CA_BUNDLE_URL" || die "could not download the RDS CA bundle from ${CA_BUNDLE_URL}"
  export PGSSLROOTCERT="$ca"
fi

# A restored or modified instance may still be rebooting to apply its parameter group.
wait_for 600 "${DB_HOST} to accept connections" pg_isready -q
psql -X -q -At -v ON_ERROR_STOP=1 -f - >/dev/null
log "role model applied to ${DB_HOST}"
