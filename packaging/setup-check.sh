#!/usr/bin/env bash
# make setup-check: checks in seconds that this machine has every tool the
# build, packaging and image targets call, and names the package that
# brings each missing one (as `make setup` installs it), so a missing
# package fails here and not twenty minutes into a build.
#
# Each cross target's C compiler (the one cc-rs picks for ring's C code)
# compiles a file that includes <stdint.h>: a compiler without its target's
# libc headers (Debian's gcc-aarch64-linux-gnu installed without its
# recommended libc6-dev-arm64-cross) is found here, not by ring's build.
#
# usage: setup-check.sh   (the Makefile passes, in the environment:)
#   CROSS_TARGETS ZIG_TARGETS  the triples of make cross, and those zig links
#   SYSROOT                    rustc --print sysroot
#   YOCTO_VENV IMAGE_TOOLS     the venv of setup-yocto, the tools dir of setup-image
# Exit status 1 if anything is missing; every finding is printed first.
set -uo pipefail

: "${CROSS_TARGETS:?}" "${SYSROOT:?}" "${YOCTO_VENV:?}" "${IMAGE_TOOLS:?}"
ZIG_TARGETS=${ZIG_TARGETS:-}

missing=()     # packages (or install steps) to name at the end
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '#include <stdint.h>\nuint64_t setup_check(uint32_t x) { return (uint64_t)x << 1; }\n' \
  > "$work/check.c"

ok() { printf 'ok      %s\n' "$1"; }
bad() {  # bad WHAT PACKAGE [DETAIL]
  printf 'MISSING %s: install %s%s\n' "$1" "$2" "${3:+ ($3)}"
  missing+=("$2")
  failures=$((failures + 1))
}

# have WHAT PACKAGE COMMAND: COMMAND is on the PATH.
have() {
  if command -v "$3" >/dev/null 2>&1; then ok "$1 ($3)"; else bad "$1 ($3)" "$2"; fi
}

# has_file WHAT PACKAGE PATH: a program that is not on the PATH.
has_file() {
  if [ -x "$3" ]; then ok "$1 ($3)"; else bad "$1 ($3)" "$2"; fi
}

# compiles WHAT PACKAGE CC...: the compiler turns check.c into an object.
compiles() {
  local what=$1 pkg=$2; shift 2
  if ! command -v "$1" >/dev/null 2>&1; then
    bad "$what ($1)" "$pkg"
    return
  fi
  local err
  if err=$("$@" -c "$work/check.c" -o "$work/check.o" 2>&1); then
    ok "$what ($*: <stdint.h> compiles)"
  else
    bad "$what ($*: <stdint.h> does not compile)" "$pkg" "$(printf '%s' "$err" | grep -m1 -i 'error' || printf '%s' "$err" | head -n1)"
  fi
}

echo "== host"
compiles "host C compiler (build scripts, bundled SQLite of the tests)" build-essential cc
have "make" make make
have "rustup" "rustup (https://rustup.rs)" rustup
have "cargo" "rustup (https://rustup.rs)" cargo

echo "== make cross, make cross-test"
for t in $CROSS_TARGETS; do
  if ls "$SYSROOT"/lib/rustlib/"$t"/lib/libstd-*.rlib >/dev/null 2>&1; then
    ok "$t: prebuilt std"
  elif [ -d "$SYSROOT/lib/rustlib/src/rust/library" ]; then
    ok "$t: std built from source (rust-src)"
  else
    bad "$t: std" "make setup-cross" "rustup target add $t, or rustup component add rust-src"
  fi
  # The C compiler cc-rs uses for the target: its default name, or the
  # CC_<triple> of .cargo/config.toml, or zig's for the ZIG_TARGETS.
  case " $ZIG_TARGETS " in
  *" $t "*)
    if python3 -m ziglang version >/dev/null 2>&1; then
      zt=$(printf '%s' "$t" | sed -e 's/^armv7-unknown-linux-/arm-linux-/' -e 's/-unknown-linux-/-linux-/')
      compiles "$t: C compiler (zig)" "make setup-cross (pip: ziglang)" python3 -m ziglang cc -target "$zt"
    else
      bad "$t: zig" "make setup-cross (pip: ziglang)"
    fi
    have "$t: linker driver" "make setup-cross (pip: cargo-zigbuild)" cargo-zigbuild
    ;;
  *)
    case $t in
    x86_64-unknown-linux-musl)
      compiles "$t: C compiler" musl-tools x86_64-linux-musl-gcc ;;
    aarch64-unknown-linux-musl)
      if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
        compiles "$t: C compiler and libc headers" libc6-dev-arm64-cross aarch64-linux-gnu-gcc
      else
        bad "$t: C compiler (aarch64-linux-gnu-gcc)" gcc-aarch64-linux-gnu
      fi
      have "$t: archiver" binutils-aarch64-linux-gnu aarch64-linux-gnu-ar
      if ls "$SYSROOT"/lib/rustlib/*/bin/rust-lld >/dev/null 2>&1; then
        ok "$t: linker (rust-lld of the toolchain)"
      else
        bad "$t: linker (rust-lld)" "a rustup toolchain (rust-lld ships with rustc)"
      fi
      ;;
    *)
      bad "$t: C compiler" "a case for $t in packaging/setup-check.sh" "no compiler known for this target" ;;
    esac
    ;;
  esac
done
have "aarch64 tests under emulation" qemu-user-static qemu-aarch64-static
have "armv7 tests under emulation" qemu-user-static qemu-arm-static
have "static-binary check of make cross" file file

echo "== make deb, lint-deb, deb-test"
have "Debian packages" "make setup-deb (cargo install cargo-deb)" cargo-deb
have "package lint" lintian lintian
have "Debian 12 root of deb-test" debootstrap debootstrap
have "HTTP checks of deb-test and image-test" curl curl

echo "== make yocto-check"
if [ -f "$YOCTO_VENV/.installed" ] && [ -x "$YOCTO_VENV/bin/oelint-adv" ] && [ -x "$YOCTO_VENV/bin/kas" ]; then
  ok "Yocto checks (oelint-adv, kas in $YOCTO_VENV)"
else
  bad "Yocto checks (oelint-adv, kas in $YOCTO_VENV)" "make setup-yocto" "python3-venv and the pinned PyPI packages"
fi

echo "== make image, image-test"
have "FAT boot partition" dosfstools mkfs.vfat
have "FAT files" mtools mcopy
have "partition table" fdisk sfdisk
have "ext4 root partition" e2fsprogs mkfs.ext4
have "image compression" xz-utils xz
have "binfmt registration of the arm64 root" binfmt-support update-binfmts
have "guest network check" iproute2 ip
if command -v qemu-system-aarch64 >/dev/null 2>&1 || [ -x "$IMAGE_TOOLS/usr/bin/qemu-system-aarch64" ]; then
  ok "boots under qemu-system-aarch64"
else
  bad "boots under qemu-system-aarch64" "qemu-system-arm" "make setup-image unpacks it into $IMAGE_TOOLS when apt cannot install it"
fi

echo "== make oci, oci-test"
have "image builds, container runs" podman podman
have "container runtime (the tests run runc)" runc runc
has_file "published ports (network backend)" netavark /usr/lib/podman/netavark
have "published ports (port forwarding rules)" iptables iptables
have "compose file test" podman-compose podman-compose

if [ "$failures" -gt 0 ]; then
  printf '\nsetup-check: %d missing; install: %s\n' "$failures" \
    "$(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++ { printf "%s%s", (n++ ? ", " : ""), $0 }')"
  echo "(make setup, as root, installs them)"
  exit 1
fi
echo "setup-check: everything the targets call is there"
