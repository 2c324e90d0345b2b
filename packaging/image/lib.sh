# shellcheck shell=bash
# Helpers shared by the image scripts (sourced, not run).
#
# The arm64 root is built in a chroot on this (x86_64) machine: the
# kernel runs its programs through qemu-user (binfmt_misc, registered by
# Debian's qemu-user-static with the F flag, so nothing is copied into the
# root). Only /proc is mounted inside it; every mount is undone before a
# directory is removed, so an `rm -rf` can never reach the host.

log() { printf '%s image: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# binfmt_misc is not mounted when PID 1 is not systemd; register qemu's
# aarch64 handler once per boot of the build machine.
ensure_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc \
      || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 >/dev/null
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    || die "qemu-aarch64 is not registered with binfmt_misc: run make setup-image"
}

chroot_mount() {
  mountpoint -q "$1/proc" || mount -t proc proc "$1/proc"
}

chroot_umount() {
  if mountpoint -q "$1/proc"; then umount -l "$1/proc"; fi
}

# Removes a build root, refusing while anything is still mounted below it.
remove_root() {
  local root=$1
  [ -e "$root" ] || return 0
  chroot_umount "$root"
  if awk -v r="$(realpath "$root")/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    die "$root still has mounts below it; not removing it"
  fi
  rm -rf "$root"
}

# Runs a command in the root with a clean, non-interactive environment.
in_root() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}
