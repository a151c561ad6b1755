#!/usr/bin/env bash
# Give the server its data directory and a cluster with data checksums.
# With a data volume, it is mounted (nofail, so a missing volume cannot stop the boot) on
# /var/lib/postgresql before any cluster exists there. A default cluster that the package made
# without checksums is recreated, but only while it is still empty: guards come before actions.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${VOLUME_DEVICE?}"

mount_point=/var/lib/postgresql
if [[ -n $VOLUME_DEVICE ]]; then
  wait_for 120 "volume ${VOLUME_DEVICE}" test -b "$VOLUME_DEVICE"
  if ! blkid "$VOLUME_DEVICE" >/dev/null 2>&1; then
    mkfs.ext4 -q -L pgdata "$VOLUME_DEVICE"
    log "formatted ${VOLUME_DEVICE}"
  fi
  uuid=$(blkid -s UUID -o value "$VOLUME_DEVICE")
  if ! grep -q "UUID=${uuid} ${mount_point} " /etc/fstab; then
    echo "UUID=${uuid} ${mount_point} ext4 defaults,nofail,noatime 0 2" >>/etc/fstab
  fi
  if ! mountpoint -q "$mount_point"; then
    if cluster_exists && [[ -d "$PG_DATA" ]]; then
      # The package made its cluster on the root disk; move it onto the volume once.
      systemctl stop "$PG_SERVICE" || true
      tmp=$(mktemp -d)
      mount "UUID=${uuid}" "$tmp"
      cp -a "${mount_point}/." "$tmp/"
      umount "$tmp"
      rmdir "$tmp"
    fi
    mount "$mount_point"
    chown postgres:postgres "$mount_point"
    log "mounted ${VOLUME_DEVICE} on ${mount_point}"
  fi
fi

user_databases() { pg_sql -d postgres -c "select count(*) from pg_database where datname not in ('postgres','template0','template1')"; }
checksums_on() { as_postgres "${PG_BIN}/pg_controldata" "$PG_DATA" | grep -q '^Data page checksum version: *[1-9]'; }

if cluster_exists && [[ -f "${PG_DATA}/PG_VERSION" ]]; then
  if checksums_on; then
    log "cluster ${PG_VERSION}/main exists with data checksums"
  else
    if [[ -f "${PG_DATA}/standby.signal" || -f "${PG_DATA}/pgstack-bootstrapped" ]]; then
      log "cluster ${PG_VERSION}/main came from a base backup or restore: leaving it"
      exit 0
    fi
    start_cluster
    if [[ $(user_databases) != 0 ]]; then
      die "cluster ${PG_VERSION}/main has no data checksums and already holds databases; enable them with pg_checksums during a maintenance window"
    fi
    log "recreating the empty default cluster with data checksums"
    pg_dropcluster --stop "$PG_VERSION" main
    pg_createcluster "$PG_VERSION" main >/dev/null
  fi
else
  pg_createcluster "$PG_VERSION" main >/dev/null
  log "created cluster ${PG_VERSION}/main"
fi
checksums_on || die "cluster ${PG_VERSION}/main has no data checksums after creation"
