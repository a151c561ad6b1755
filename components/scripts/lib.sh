#!/usr/bin/env bash
# Shared helpers for pgstack's in-guest scripts. Inlined into each command's text.

# The PostgreSQL major version is one parameter of every step (PG_VERSION); every path, the
# unit name and the package names derive from it here, so no script names a version itself.
: "${PG_VERSION:?PG_VERSION must be bound in the command text}"
[[ $PG_VERSION =~ ^[0-9]+$ ]] || { echo "PG_VERSION must be a major version number, not ${PG_VERSION}" >&2; exit 1; }
PG_CLUSTER_DIR="/etc/postgresql/${PG_VERSION}/main"
# Used by the scripts that inline this file.
# shellcheck disable=SC2034
PG_DATA="/var/lib/postgresql/${PG_VERSION}/main"
# shellcheck disable=SC2034
PG_BIN="/usr/lib/postgresql/${PG_VERSION}/bin"
PG_SERVICE="postgresql@${PG_VERSION}-main"
# shellcheck disable=SC2034
PG_LOG="/var/log/postgresql/postgresql-${PG_VERSION}-main.log"
# shellcheck disable=SC2034
PG_PACKAGES=("postgresql-${PG_VERSION}" "postgresql-client-${PG_VERSION}")
export DEBIAN_FRONTEND=noninteractive
umask 022
# runuser keeps the working directory; postgres may not read root's home.
cd /

log() { printf '[pgstack %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for SECONDS DESCRIPTION CMD...: retry CMD every 0.2 s until it succeeds. Most waits are
# for PostgreSQL, which is ready within a fraction of a second: a 1 s poll cost up to 1 s a wait.
wait_for() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
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

# fill NAME...: copy stdin to stdout with each @NAME@ replaced by the value of variable NAME:
# how a shipped unit gets the few values it cannot read from an environment file (systemd
# expands no variables in OnCalendar=, After= or Description=). Each NAME must occur, no other
# @UPPER_CASE@ placeholder may be left, and a value with a newline is refused (in a unit it
# would start a directive of its own). Prints nothing unless it succeeds.
fill() {
  local text name value
  text=$(cat && printf x) # the x keeps the trailing newlines $(...) would strip
  text=${text%x}
  for name in "$@"; do
    value=${!name}
    [[ $value != *$'\n'* ]] || die "fill: ${name} holds a newline"
    [[ $text == *"@${name}@"* ]] || die "fill: the template has no @${name}@"
    text=${text//"@${name}@"/"$value"}
  done
  if [[ $text =~ @[A-Z][A-Z0-9_]*@ ]]; then die "fill: ${BASH_REMATCH[0]} is left unfilled"; fi
  printf '%s' "$text"
}

# ship MODE PATH [NAME...]: install the file on stdin, with its @NAME@ placeholders filled, as
# PATH owned by root. Scripts redirect stdin from a file next to them (units/, bin/); the
# command text carries that file as a quoted here-document (components/scripts/__init__.py), so
# editing a shipped file changes the text and re-runs the step. Sets units_changed=1 when PATH
# changed: systemd then needs a daemon-reload.
units_changed=0
ship() {
  local mode=$1 path=$2 content result
  shift 2
  content=$(fill "$@" && printf x)
  content=${content%x}
  result=$(printf '%s' "$content" | install_file "$mode" root:root "$path")
  if [[ $result == changed ]]; then
    # Read by the scripts that call ship.
    # shellcheck disable=SC2034
    units_changed=1
    log "installed ${path}"
  fi
}

as_postgres() { runuser -u postgres -- "$@"; }

# psql as the postgres superuser over the local socket; -At for scriptable output.
pg_sql() { as_postgres psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

cluster_exists() { [[ -f "${PG_CLUSTER_DIR}/postgresql.conf" ]]; }

cluster_running() { pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q '^online'; }

start_cluster() {
  systemctl enable --quiet "$PG_SERVICE"
  systemctl start "$PG_SERVICE"
  wait_for 60 "PostgreSQL to accept connections" as_postgres pg_isready -q
}

# The timeline a primary writes now: from its current WAL file name. pg_control_checkpoint()
# would show the old one until the first checkpoint after a promotion.
current_timeline() { pg_sql -c "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"; }

in_recovery() { [[ $(pg_sql -c 'select pg_is_in_recovery()') == t ]]; }

pgbackrest_version_at_least() {
  local want=$1 have
  have=$(pgbackrest version | awk '{print $2}')
  [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) == "$want" ]]
}

# missing PKG...: the packages of the list that are not installed, one per line.
missing() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

# install_unstarted PKG...: install the missing ones without starting their services (a
# policy-rc.d for the install's duration): their packaged defaults may listen on every address
# without auth, so the step configures them first and starts them itself.
install_unstarted() {
  local todo
  mapfile -t todo < <(missing "$@")
  ((${#todo[@]})) || return 0
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -q >/dev/null
  # unattended-upgrades may hold the dpkg lock on a running server: wait for it.
  apt-get install -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold --no-install-recommends \
    "${todo[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
  log "installed ${todo[*]}"
}
