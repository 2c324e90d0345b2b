#!/usr/bin/env bash
# make image-test: checks the SD-card image's structure, then boots its
# root under qemu-system-aarch64 (virt, cortex-a72) twice and checks
# tsstore from the host and, through a test-only unit, from inside.
#
# usage: test.sh IMAGE.img.xz WORK_DIR [QEMU_TOOLS_DIR]
#
# The guest is the shipped image (decompressed, 1 GiB larger so the first
# boot must grow the root) plus, in this copy only, tsstore-image-test.service
# (test/), which writes what it sees to a 1 MiB results disk. The kernel and
# initramfs are the ones on the image's boot partition, the kernel command
# line its cmdline.txt with the console moved to the virt machine's UART.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/image/lib.sh source-path=SCRIPTDIR
. "$here/lib.sh"

image=${1:?usage: test.sh IMAGE.img.xz WORK_DIR [QEMU_TOOLS_DIR]}
work=${2:?work dir}/test
tools=${3:-}
boot_timeout=${BOOT_TIMEOUT:-600}

fail() { log "FAIL: $*"; exit 1; }
ok() { log "ok: $*"; }

qemu=$(command -v qemu-system-aarch64 || true)
qemu_args=()
if [ -z "$qemu" ] && [ -n "$tools" ] && [ -x "$tools/usr/bin/qemu-system-aarch64" ]; then
  qemu=$tools/usr/bin/qemu-system-aarch64
  qemu_args=(-L "$tools/usr/share/qemu")
fi
[ -n "$qemu" ] || die "qemu-system-aarch64 not found: run make setup-image"

rm -rf "$work"
mkdir -p "$work"
disk=$work/disk.img
results=$work/results.img
serial=$work/serial.log

# --- The image file ---------------------------------------------------
(cd "$(dirname "$image")" && sha256sum --quiet -c "$(basename "$image").sha256") \
  || fail "checksum of $image"
xz -T0 -dc "$image" > "$disk"
ok "checksum, decompressed to $(( $(stat -c %s "$disk") / 1048576 )) MiB"

table=$(sfdisk -d "$disk")
disk_id=$(sed -n 's/^label-id: 0x//p' <<<"$table")
[ "$(sed -n 's/^label: //p' <<<"$table")" = dos ] || fail "partition table is not MBR"
p1=$(grep "^$disk""1 " <<<"$table") || fail "no partition 1"
p2=$(grep "^$disk""2 " <<<"$table") || fail "no partition 2"
grep -q 'type=c, bootable' <<<"$p1" || fail "partition 1 is not a bootable FAT32 (LBA): $p1"
grep -q 'type=83' <<<"$p2" || fail "partition 2 is not Linux: $p2"
field() { grep -o "$1= *[0-9]*" <<<"$2" | tr -dc '0-9'; }
boot_start=$(field start "$p1")
root_start=$(field start "$p2")
root_sectors=$(field size "$p2")
ok "MBR, disk id $disk_id: FAT32 boot at sector $boot_start, Linux root at $root_start"

fat="$disk@@$((boot_start * 512))"
listing=$(mdir -i "$fat" -b ::/)
for f in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat config.txt cmdline.txt \
  bcm2837-rpi-3-b.dtb bcm2837-rpi-3-b-plus.dtb bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb \
  bcm2711-rpi-cm4-io.dtb; do
  grep -q "^::/$f\$" <<<"$listing" || fail "boot partition lacks $f"
done
kernel=$(grep -o 'vmlinuz-[^ ]*' <<<"$listing" | head -n 1)
initrd=$(grep -o 'initrd.img-[^ ]*' <<<"$listing" | head -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then fail "boot partition lacks the kernel or initramfs"; fi
config=$(mtype -i "$fat" ::/config.txt)
cmdline=$(mtype -i "$fat" ::/cmdline.txt | tr -d '\r')
for line in arm_64bit=1 "kernel=$kernel" "initramfs $initrd"; do
  grep -qx "$line" <<<"$config" || fail "config.txt lacks '$line'"
done
grep -q "root=PARTUUID=$disk_id-02 " <<<"$cmdline" || fail "cmdline.txt root is not the table's partition 2: $cmdline"
ok "boot partition: firmware, $kernel, $initrd, device trees; config.txt; cmdline.txt root=PARTUUID=$disk_id-02"

# --- The test copy ----------------------------------------------------
mcopy -i "$fat" "::/$kernel" "$work/vmlinuz"
mcopy -i "$fat" "::/$initrd" "$work/initrd.img"
rootfs=$work/root.ext4
dd if="$disk" of="$rootfs" bs=512 skip="$root_start" count="$root_sectors" conv=sparse status=none
debugfs -w "$rootfs" >/dev/null 2>&1 <<DEBUGFS
write $here/test/tsstore-image-test.service /etc/systemd/system/tsstore-image-test.service
symlink /etc/systemd/system/multi-user.target.wants/tsstore-image-test.service /etc/systemd/system/tsstore-image-test.service
write $here/test/guest-check.sh /usr/local/sbin/tsstore-image-test
set_inode_field /usr/local/sbin/tsstore-image-test mode 0100755
DEBUGFS
debugfs -R 'stat /usr/local/sbin/tsstore-image-test' "$rootfs" 2>/dev/null | grep -q 'Mode:  0755' \
  || fail "could not add the test unit to the test copy"
dd if="$rootfs" of="$disk" bs=512 seek="$root_start" conv=notrunc,sparse status=none
rm -f "$rootfs"
truncate -s +1G "$disk"
truncate -s 1M "$results"

# cmdline.txt without the Pi's consoles.
append=()
for word in $cmdline; do
  case $word in console=*) ;; *) append+=("$word") ;; esac
done

# A free loopback port for the guest's 21080.
port=
for _ in $(seq 50); do
  candidate=$((20000 + RANDOM % 40000))
  if ! ss -Htln "sport = :$candidate" | grep -q .; then port=$candidate; break; fi
done
[ -n "$port" ] || die "no free port"

log "booting under qemu (TCG), serial log: $serial, console on 127.0.0.1:$port"
start=$(date +%s)
"$qemu" "${qemu_args[@]}" -M virt -cpu cortex-a72 -accel tcg -smp 2 -m 1024 \
  -display none -monitor none -serial "file:$serial" \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
  -append "${append[*]} console=ttyAMA0" \
  -drive "file=$disk,format=raw,if=virtio" -drive "file=$results,format=raw,if=virtio" \
  -device virtio-rng-pci \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$port-:21080" -device virtio-net-pci,netdev=net0,romfile= \
  > "$work/qemu.log" 2>&1 &
qemu_pid=$!
trap 'kill "$qemu_pid" 2>/dev/null || true' EXIT

phase() { dd if="$results" bs=64k skip="$1" count=1 status=none | tr -d '\0'; }
value() { sed -n "s/^$2=//p" <<<"$1" | head -n 1; }
while ! grep -q '^end=1' <<<"$(phase 2)"; do
  kill -0 "$qemu_pid" 2>/dev/null || fail "qemu stopped: $(cat "$work/qemu.log")"
  [ $(( $(date +%s) - start )) -lt "$boot_timeout" ] || fail "no report of the second boot after ${boot_timeout}s (see $serial)"
  sleep 2
done
first=$(phase 1)
second=$(phase 2)
log "both boots reported after $(( $(date +%s) - start ))s"

# --- Inside the guest ---------------------------------------------------
for report in "$first" "$second"; do
  n=$(value "$report" phase)
  for want in ActiveState=active SubState=running NRestarts=0 Result=success firstboot=active \
    env_file=600:root:root socket_file=660:tsstore:tsstore key_file=present sshd=none \
    root_password=L issue_url=1; do
    grep -qx "$want" <<<"$report" || fail "boot $n: expected $want in: $report"
  done
done
ok "both boots: tsstore active (running, READY=1 reached), no restarts; first-boot unit done"
key=$(value "$first" admin_key)
[ "${#key}" -ge 32 ] || fail "no admin key generated (got '${key}')"
[ "$key" = "$(value "$second" admin_key)" ] || fail "the admin key changed across the reboot"
ok "admin key generated at first boot (${#key} characters), /etc/tsstore/tsstore.env 0600 root, same after reboot"
host=$(value "$first" hostname)
[ "$host" = "tsstore-$(value "$first" machine_id | cut -c1-4)" ] || fail "host name $host"
[ "$host" = "$(value "$second" hostname)" ] || fail "host name changed across the reboot"
ok "host name $host from the machine id, kept"
grown=$(value "$first" root_bytes)
[ "$grown" -gt $(( root_sectors * 512 + 900 * 1048576 )) ] || fail "root not grown: $grown bytes"
ok "root file system grown to $(( grown / 1048576 )) MiB (partition was $(( root_sectors / 2048 )) MiB)"
session=$(value "$first" socket_session)
[[ "$session" =~ ^OK\|OK\ [0-9]+\|OK\ bye\|$ ]] || fail "Unix socket session as group tsstore: $session"
ok "Unix socket: a group-tsstore user authenticated and stored a line ($session)"
sock_key=$(value "$first" sock_store_key)

# --- From the host, after the reboot -------------------------------------
url=http://127.0.0.1:$port
health=$(curl -fsS "$url/health") || fail "/health"
ok "/health: $health"
page=$(curl -fsSL "$url/") || fail "GET / (following the redirect to the sign-in page)"
grep -qi '<form' <<<"$page" || fail "GET / is not the console's sign-in page"
ok "web console page ($(wc -c <<<"$page") bytes)"
made=$(curl -fsS -X POST "$url/api/stores" -H "X-Admin-Key: $key" \
  -d '{"name":"hoststore","data_type":"json"}') || fail "create a store with the admin key"
store_key=$(sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p' <<<"$made")
[ -n "$store_key" ] || fail "no store key in: $made"
for t in 21.5 22.5; do
  curl -fsS -X POST "$url/api/stores/hoststore/data" -H "X-API-Key: $store_key" \
    -H 'Content-Type: application/json' -d "{\"data\":{\"temp\":$t}}" >/dev/null || fail "insert"
done
newest=$(curl -fsS "$url/api/stores/hoststore/data/newest?limit=5" -H "X-API-Key: $store_key")
for t in 21.5 22.5; do grep -q "$t" <<<"$newest" || fail "query: $newest"; done
ok "store created with the generated admin key: 2 inserts, query answers both"
kept=$(curl -fsS "$url/api/stores/sockstore/data/newest?limit=5" -H "X-API-Key: $sock_key") \
  || fail "the store made before the reboot, with its key"
grep -q 'socket' <<<"$kept" || fail "the socket's line is gone after the reboot: $kept"
ok "after the reboot: the store, its key and the line written over the socket are there"

kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true
trap - EXIT
! grep -qF "$key" "$serial" || fail "the admin key appears on the serial console"
grep -q 'tsstore: web console: http://tsstore-' "$serial" || fail "the console URL is not printed on the console"
grep -q 'tsstore: admin key generated; a copy is on the boot partition' "$serial" \
  || fail "the console does not say where the generated key is"
ok "serial console: the URL printed, the key never"
[ "$(mtype -i "$fat" ::/tsstore-admin-key.txt | head -n 1 | tr -d '\r')" = "$key" ] \
  || fail "tsstore-admin-key.txt on the boot partition is not the admin key"
ok "the boot partition holds the key for the owner (tsstore-admin-key.txt)"

# Optional (IMAGE_TEST_RASPI3B=1, about 3 more minutes): the same card on
# QEMU's Raspberry Pi 3B with the image's Pi device tree, so the
# initramfs must find the root through the Pi's own SD host driver. The
# machine has no Ethernet: the check stops once the root is mounted by
# its PARTUUID and the first-boot unit has run.
if [ "${IMAGE_TEST_RASPI3B:-0}" = 1 ]; then
  mcopy -o -i "$fat" ::/bcm2837-rpi-3-b.dtb "$work/"
  truncate -s 4G "$disk"  # an SD card's size is a power of 2
  raspi_log=$work/raspi3b-serial.log
  "$qemu" "${qemu_args[@]}" -M raspi3b -display none -monitor none -serial "file:$raspi_log" \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -dtb "$work/bcm2837-rpi-3-b.dtb" \
    -append "${append[*]} console=ttyAMA0,115200" -drive "file=$disk,if=sd,format=raw" \
    > "$work/qemu-raspi3b.log" 2>&1 &
  qemu_pid=$!
  trap 'kill "$qemu_pid" 2>/dev/null || true' EXIT
  raspi_start=$(date +%s)
  until grep -aq 'Finished .*tsstore-firstboot' "$raspi_log" 2>/dev/null; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "qemu raspi3b stopped: $(cat "$work/qemu-raspi3b.log")"
    [ $(( $(date +%s) - raspi_start )) -lt "$boot_timeout" ] || fail "raspi3b: no first-boot unit (see $raspi_log)"
    sleep 2
  done
  kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true
  trap - EXIT
  grep -aq 'sdhost-bcm2835' "$raspi_log" || fail "raspi3b: the Pi's SD host driver did not load"
  grep -aq 'EXT4-fs (mmcblk0p2): mounted' "$raspi_log" || fail "raspi3b: root not mounted from the SD card"
  ok "raspi3b: root mounted from mmcblk0p2 by PARTUUID through sdhost-bcm2835; first-boot unit ran"
fi
log "image test passed in $(( $(date +%s) - start ))s of emulation"
