#!/usr/bin/env bash
# Shared helpers for pgstack's in-guest scripts. Inlined into each command's text.

PG_VERSION="${PG_VERSION:-15}"
PG_CLUSTER_DIR="/etc/postgresql/${PG_VERSION}/main"
# Used by the scripts that inline this file.
# shellcheck disable=SC2034
PG_DATA="/var/lib/postgresql/${PG_VERSION}/main"
# shellcheck disable=SC2034
PG_BIN="/usr/lib/postgresql/${PG_VERSION}/bin"
export DEBIAN_FRONTEND=noninteractive
umask 022
# runuser keeps the working directory; postgres may not read root's home.
cd /

log() { printf '[pgstack %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for SECONDS DESCRIPTION CMD...: retry CMD once a second until it succeeds.
wait_for() {
  local seconds=$1 what=$2 i
  shift 2
  for ((i = 0; i < seconds; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "timed out after ${seconds}s waiting for ${what}"
}

# install_file MODE USER:GROUP PATH: write stdin to PATH atomically when content or mode differ.
# MODE is octal without a leading 0 (as stat prints it). Prints "changed" or "unchanged".
install_file() {
  local mode=$1 owner=$2 path=$3 tmp
  tmp=$(mktemp "${path}.pgstack.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  if [[ -f $path ]] && cmp -s "$tmp" "$path" && [[ $(stat -c '%a %U:%G' "$path") == "$mode $owner" ]]; then
    rm -f "$tmp"
    echo unchanged
  else
    mv -f "$tmp" "$path"
    echo changed
  fi
}

as_postgres() { runuser -u postgres -- "$@"; }

# psql as the postgres superuser over the local socket; -At for scriptable output.
pg_sql() { as_postgres psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

cluster_exists() { [[ -f "${PG_CLUSTER_DIR}/postgresql.conf" ]]; }

cluster_running() { pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q '^online'; }

start_cluster() {
  systemctl enable --quiet "postgresql@${PG_VERSION}-main"
  systemctl start "postgresql@${PG_VERSION}-main"
  wait_for 60 "PostgreSQL to accept connections" as_postgres pg_isready -q
}

in_recovery() { [[ $(pg_sql -c 'select pg_is_in_recovery()') == t ]]; }

pgbackrest_version_at_least() {
  local want=$1 have
  have=$(pgbackrest version | awk '{print $2}')
  [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) == "$want" ]]
}
