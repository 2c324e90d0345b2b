#!/usr/bin/env bash
# Builds the flashable SD-card image for 64-bit Raspberry Pi boards from
# the cached base root (build-base.sh) and the project's arm64 .deb.
#
# usage: build-image.sh DEB OUTPUT.img.xz CACHE_DIR WORK_DIR
#
# Layout (MBR, 4 MiB aligned for SD erase blocks):
#   1  FAT32 "RASPIFIRM", 256 MiB: firmware, kernel, initramfs, device trees,
#      config.txt and cmdline.txt, written by Debian's raspi-firmware hook
#   2  ext4 "RASPIROOT": the root, grown to fill the card at first boot
# No loop mounts: mkfs.vfat -C + mcopy, mkfs.ext4 -d, sfdisk on the file,
# dd conv=notrunc to place the partitions.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/image/lib.sh source-path=SCRIPTDIR
. "$here/lib.sh"

deb=${1:?usage: build-image.sh DEB OUTPUT.img.xz CACHE_DIR WORK_DIR}
out=${2:?output .img.xz}
cache=${3:?cache dir}
work=${4:?work dir}
[ -f "$deb" ] || die "$deb not found (make deb builds it)"

boot_mib=256
first_sector=8192  # 4 MiB

base=$("$here/build-base.sh" "$cache")
ensure_binfmt
mkdir -p "$work" "$(dirname "$out")"
root=$work/root
remove_root "$root"
trap 'remove_root "$root"' EXIT

log "unpacking $base"
mkdir -p "$root"
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -xpf "$base"

log "installing $(basename "$deb") with dpkg"
cp "$deb" "$root/tmp/tsstore.deb"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
chroot_mount "$root"
in_root "$root" dpkg -i /tmp/tsstore.deb >&2
rm -f "$root/tmp/tsstore.deb" "$root/usr/sbin/policy-rc.d"
[ -x "$root/usr/bin/tsstore" ] || die "the package did not install /usr/bin/tsstore"
# The key the package generated here would be the same on every card made
# from this image: each device makes its own at first boot.
rm -f "$root/etc/tsstore/tsstore.env"

log "image files: first boot, network, host name"
cp -a --no-preserve=ownership "$here/files/." "$root/"
in_root "$root" systemctl enable tsstore-firstboot.service systemd-networkd.service \
  systemd-resolved.service systemd-timesyncd.service tsstore.service >&2
# Empty: systemd makes a unique one at first boot (and the host name follows).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
echo tsstore > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttsstore\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
  > "$root/etc/hosts"
# No password login anywhere: root stays locked (the web console is the
# way in; see README "Flash an SD card").
in_root "$root" passwd -l root >/dev/null

# One disk id per build; the kernel finds its root by it.
disk_id=$(od -An -tx4 -N4 /dev/urandom | tr -d ' ')
cat > "$root/etc/fstab" <<FSTAB
PARTUUID=$disk_id-02  /              ext4  defaults,noatime  0  1
PARTUUID=$disk_id-01  /boot/firmware vfat  defaults,noatime,fmask=0077,dmask=0077,nofail  0  2
FSTAB
# The raspi-firmware hook writes config.txt and cmdline.txt from this at
# every kernel update on the device too. Serial console on the GPIO UART,
# HDMI last (it gets the boot messages); no CMA pool: headless.
cat > "$root/etc/default/raspi-firmware" <<DEFAULTS
# tsstore image (see /usr/share/doc/raspi-firmware for every setting).
ROOTPART=PARTUUID=$disk_id-02
CONSOLES="ttyS1,115200 tty0"
CMA=0
DEFAULTS
rm -rf "$root/boot/firmware" && mkdir -p "$root/boot/firmware"
in_root "$root" env DEB_MAINT_PARAMS=configure /bin/sh -c \
  'cp /usr/lib/raspi-firmware/* /boot/firmware/ && /etc/kernel/postinst.d/z50-raspi-firmware' >&2
chroot_umount "$root"
grep -q "root=PARTUUID=$disk_id-02" "$root/boot/firmware/cmdline.txt" \
  || die "cmdline.txt does not name the root partition"

log "boot partition (FAT32, ${boot_mib} MiB)"
bootfs=$work/boot.vfat
rm -f "$bootfs"
mkfs.vfat -C -F 32 -n RASPIFIRM -i "$disk_id" "$bootfs" $((boot_mib * 1024)) >/dev/null
mcopy -i "$bootfs" -s -p -m "$root"/boot/firmware/* ::/
rm -rf "$root"/boot/firmware/*

log "root partition (ext4)"
used_mib=$(( $(du -sxm "$root" | cut -f1) ))
# Room for ext4's metadata and journal and some to spare; the first boot
# grows it to the card.
root_mib=$(( (used_mib * 13 / 10 + 256 + 3) / 4 * 4 ))
rootfs=$work/root.ext4
rm -f "$rootfs"
mkfs.ext4 -q -F -L RASPIROOT -d "$root" -E root_owner=0:0 "$rootfs" "${root_mib}M"

log "disk image (MBR, disk id $disk_id)"
img=$work/tsstore-rpi-arm64.img
boot_sectors=$((boot_mib * 2048))
root_start=$((first_sector + boot_sectors))
rm -f "$img"
truncate -s $(( (root_start + root_mib * 2048) * 512 )) "$img"
sfdisk --quiet "$img" <<TABLE
label: dos
label-id: 0x$disk_id
unit: sectors
start=$first_sector, size=$boot_sectors, type=c, bootable
start=$root_start, size=$((root_mib * 2048)), type=83
TABLE
dd if="$bootfs" of="$img" bs=512 seek="$first_sector" conv=notrunc,sparse status=none
dd if="$rootfs" of="$img" bs=512 seek="$root_start" conv=notrunc,sparse status=none
rm -f "$bootfs" "$rootfs"

log "compressing to $out"
xz -T0 -1 -c "$img" > "$out.tmp"
mv "$out.tmp" "$out"
rm -f "$img"
(cd "$(dirname "$out")" && sha256sum "$(basename "$out")" > "$(basename "$out").sha256")
log "done: $out ($(du -h "$out" | cut -f1) compressed, $((root_start / 2048 + root_mib)) MiB raw)"
