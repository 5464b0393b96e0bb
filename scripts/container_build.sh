#!/usr/bin/env bash
# The container's build steps, in one place. The Dockerfile RUNs this script, and
# `make check-container` (scripts/check_container.sh) executes the Dockerfile's instructions,
# this script included, in a Debian bookworm root filesystem, so the two cannot drift.
#   scripts/container_build.sh system   as root: the non-root user citeqa (uid/gid 10001),
#                                       /data and /app owned by it
#   scripts/container_build.sh app      as citeqa, in /app: scripts/install.sh /app/.venv (no
#                                       extras, torch from $TORCH_INDEX_URL if set), then the
#                                       index of the bundled articles in $CITEQA_DATA_DIR/index
set -euo pipefail
user=citeqa
uid=10001
app=/app
data=${CITEQA_DATA_DIR:-/data}

die() { echo "container_build.sh: $*" >&2; exit 1; }

case "${1:-}" in
  system)
    [ "$(id -u)" = 0 ] || die "the system step runs as root (before USER in the Dockerfile)"
    # --no-log-init: a high uid would otherwise make /var/log/lastlog a huge sparse file.
    useradd --no-log-init --create-home --uid "$uid" --user-group "$user"
    [ "$(id -g "$user")" = "$uid" ] || die "group $user did not get gid $uid"
    mkdir -p "$data" "$app"
    chown "$user:$user" "$data" "$app"
    ;;
  app)
    [ "$(id -u)" = "$uid" ] || die "the app step runs as $user (uid $uid), not uid $(id -u)"
    cd "$app"
    bash scripts/install.sh "$app/.venv"
    "$app/.venv/bin/citeqa" index corpus --index-dir "$data/index"
    ;;
  *)
    die "usage: $0 system|app"
    ;;
esac
