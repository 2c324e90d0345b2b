#!/usr/bin/env bash
# make setup-image: the host tools of make image and make image-test, as
# Debian packages (idempotent: installs only what is missing).
#
# usage: setup.sh TOOLS_DIR
#
# qemu-system-aarch64 comes from Debian's qemu-system-arm. Where apt cannot
# install it without removing something (a newer qemu-utils from
# backports pins another qemu-system-common), its .deb and
# qemu-system-data's are unpacked into TOOLS_DIR instead and their
# libraries installed with apt; test.sh looks there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/image/lib.sh source-path=SCRIPTDIR
. "$here/lib.sh"

tools=${1:?usage: setup.sh TOOLS_DIR}

packages=(debootstrap qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs
  xz-utils curl iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
ensure_binfmt

if command -v qemu-system-aarch64 >/dev/null || [ -x "$tools/usr/bin/qemu-system-aarch64" ]; then
  exit 0
fi
if apt_install --no-remove qemu-system-arm; then
  exit 0
fi
log "qemu-system-arm cannot be installed beside this machine's qemu packages: unpacking it into $tools"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
(cd "$download" && apt-get download qemu-system-arm qemu-system-data)
mapfile -t libs < <(apt-cache depends qemu-system-arm | awk '/^ +Depends: lib/ { print $2 }' | sort -u)
apt_install "${libs[@]}"
mkdir -p "$tools"
for deb in "$download"/*.deb; do dpkg -x "$deb" "$tools"; done
"$tools/usr/bin/qemu-system-aarch64" --version | head -n 1
