#!/usr/bin/env bash
# Install PostgreSQL from the PostgreSQL apt repository (seed 000), or from the distribution
# when PACKAGE_SOURCE=distro (the local rehearsal, which has no internet).
# Data checksums are set at initdb: createcluster.conf is configured before the server package
# creates its default cluster.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PACKAGE_SOURCE:?}" "${PG_VERSION:?}" "${PGBACKREST_SERIES:?}"

# jq: the scripts read pgBackRest's JSON with it.
packages=("${PG_PACKAGES[@]}" libpq-dev pgbackrest jq)

apt_install() {
  apt-get install -y -q -o Dpkg::Options::=--force-confold --no-install-recommends "$@" >/dev/null
}

if [[ -n $(missing postgresql-common) ]]; then
  apt-get update -q >/dev/null
  apt_install postgresql-common
fi

conf=/etc/postgresql-common/createcluster.conf
if ! grep -q "^initdb_options = '--data-checksums'" "$conf"; then
  sed -i '/^initdb_options/d' "$conf"
  echo "initdb_options = '--data-checksums'" >>"$conf"
  log "createcluster.conf: new clusters get data checksums"
fi

if [[ $PACKAGE_SOURCE == pgdg ]]; then
  if [[ ! -f /etc/apt/sources.list.d/pgdg.list && ! -f /etc/apt/sources.list.d/pgdg.sources ]]; then
    /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y >/dev/null
    log "added the PostgreSQL apt repository"
  fi
elif [[ $PACKAGE_SOURCE != distro ]]; then
  die "PACKAGE_SOURCE must be pgdg or distro, not ${PACKAGE_SOURCE}"
fi

pgbackrest_series_ok() { [[ $(pgbackrest version | awk '{print $2}') == "${PGBACKREST_SERIES}".* ]]; }
if [[ $PACKAGE_SOURCE == pgdg ]]; then
  # The repository carries the newest release; servers run the series pgstack was tested with.
  pin=$(printf 'Package: pgbackrest\nPin: version %s.*\nPin-Priority: 1001\n' "$PGBACKREST_SERIES" \
    | install_file 644 root:root /etc/apt/preferences.d/pgstack-pgbackrest)
  if [[ $pin == changed ]] && command -v pgbackrest >/dev/null && ! pgbackrest_series_ok; then
    apt-get update -q >/dev/null
    apt_install --allow-downgrades pgbackrest
    log "pgBackRest moved to the pinned ${PGBACKREST_SERIES} series"
  fi
fi

mapfile -t todo < <(missing "${packages[@]}")
if ((${#todo[@]})); then
  apt-get update -q >/dev/null
  apt_install "${todo[@]}"
  log "installed ${todo[*]}"
else
  log "packages already installed"
fi
if ! pgbackrest_series_ok; then
  die "$(pgbackrest version) is installed; pgstack is tested with the ${PGBACKREST_SERIES} series. To move to another series: rehearse it, set TESTED_SERIES in postgres/pgbackrest.py, and run up (this step rewrites the apt pin /etc/apt/preferences.d/pgstack-pgbackrest)"
fi
log "$("${PG_BIN}/postgres" --version); $(pgbackrest version)"
