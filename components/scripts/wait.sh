#!/usr/bin/env bash
# Wait until the server can take configuration: SSH works (we are here), cloud-init has
# finished (it may still be writing apt sources or keys), and no apt run holds the dpkg lock.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

if command -v cloud-init >/dev/null 2>&1; then
  # Exit 2 means "done with recoverable errors": not ours to judge here.
  cloud-init status --wait >/dev/null || [[ $? -eq 2 ]] || die "cloud-init failed: $(cloud-init status --long)"
fi
if command -v fuser >/dev/null 2>&1; then
  wait_for 600 "the dpkg lock" bash -c '! fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock'
fi
log "ready: $(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -r)"
