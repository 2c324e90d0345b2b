#!/usr/bin/env bash
# Builds the base root file system of the SD-card image and caches it:
# Debian bookworm arm64 (minbase) with the kernel, the Raspberry Pi boot
# firmware, systemd and networking, before tsstore is installed.
#
# usage: build-base.sh CACHE_DIR
# Prints the path of the tarball. It is named after a hash of this script
# and of base/, so a change to either builds a new one; an unchanged one
# is reused (the debootstrap and package installs under emulation take
# minutes, the rest of the image seconds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/image/lib.sh source-path=SCRIPTDIR
. "$here/lib.sh"

cache=${1:?usage: build-base.sh CACHE_DIR}
# What the image needs beyond minbase: boot (kernel, initramfs, firmware),
# systemd as init with DHCP, DNS with mDNS (tsstore-XXXX.local) and time
# sync (the Pi has no clock, and a time-series store needs the time), the
# first-boot tools (sfdisk, resize2fs; growpart would bring python3) and
# adduser for the package.
packages=(linux-image-arm64 initramfs-tools raspi-firmware systemd systemd-sysv udev
  systemd-resolved systemd-timesyncd fdisk e2fsprogs dosfstools kmod adduser)

key=$(cat "$here/build-base.sh" "$here/lib.sh" "$here"/base/* | sha256sum | cut -c1-12)
tarball=$cache/base-arm64-$key.tar
if [ -s "$tarball" ]; then
  log "base root file system cached: $tarball"
  echo "$tarball"
  exit 0
fi

ensure_binfmt
mirror=${MIRROR:-http://deb.debian.org/debian}
suite=bookworm
mkdir -p "$cache"
root=$cache/base-root.tmp
remove_root "$root"
trap 'remove_root "$root"' EXIT

log "debootstrap $suite arm64 minbase (first stage)"
debootstrap --arch=arm64 --variant=minbase --foreign --components=main,non-free-firmware \
  "$suite" "$root" "$mirror" >&2
log "debootstrap second stage (under qemu-user)"
chroot "$root" /debootstrap/debootstrap --second-stage >&2

cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main non-free-firmware
deb $mirror $suite-updates main non-free-firmware
deb http://deb.debian.org/debian-security $suite-security main non-free-firmware
SOURCES
install -m 0644 "$here/base/dpkg-nodoc" "$root/etc/dpkg/dpkg.cfg.d/01-tsstore-nodoc"
# Before the kernel: its initramfs is built with this configuration.
mkdir -p "$root/etc/initramfs-tools/hooks" "$root/etc/initramfs-tools/conf.d" "$root/boot/firmware"
echo MODULES=list > "$root/etc/initramfs-tools/conf.d/tsstore-modules"
install -m 0755 "$here/base/initramfs-modules" "$root/etc/initramfs-tools/hooks/tsstore-modules"
# The host's resolver while apt runs; systemd-resolved's stub at the end.
rm -f "$root/etc/resolv.conf"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Nothing is started inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

# What debootstrap installed before the dpkg filter was in place.
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
find "$root/usr/share/doc" -type f ! -name copyright -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*

chroot_mount "$root"
log "apt-get install (under qemu-user): ${packages[*]}"
in_root "$root" apt-get update >&2
# INITRD=No: the kernel's and the triggers' initramfs builds are skipped;
# one is made below, once every hook is installed (each build takes minutes
# under emulation).
in_root "$root" env INITRD=No apt-get install -y --no-install-recommends "${packages[@]}" >&2
in_root "$root" apt-get clean
log "initramfs (MODULES=list)"
in_root "$root" update-initramfs -c -k all >&2
chroot_umount "$root"

rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
  "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

log "caching $tarball"
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
echo "$tarball"
