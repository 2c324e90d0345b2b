#!/bin/sh
# deb-test: the amd64 package in a throwaway Debian 12 root (run as root).
#
#   packaging/debian/deb-test.sh PKG.deb UPGRADE.deb [WORKDIR]
#
# PKG is the package under test, UPGRADE the same build with a higher
# version. The pristine root (debootstrap --variant=minbase bookworm, plus
# adduser, which the package depends on) is made once and cached as
# WORKDIR/bookworm-minbase.tar, so a rerun takes seconds. Each run unpacks
# it into a fresh directory, which it removes at the end.
#
# Checks, in order: install (user, group, files, owners, modes, conffile,
# admin key); the installed binary started as user tsstore with the
# installed config and env file answers /health, creates a store, stores
# and reads back over HTTP, and takes a line on the Unix socket from a
# member of group tsstore (and refuses a non-member); the maintainer
# script run again changes nothing; an upgrade keeps data, keys and a
# local edit of config.json, and the upgraded server, run in a user
# namespace as PrivateUsers=yes runs it, still lets group tsstore (only)
# onto the socket; remove keeps data; purge leaves nothing.
#
# systemd is not PID 1 in the root (nor, often, on the host): the server is
# started the way the unit starts it (EnvironmentFile= read as root, then
# User=/Group=), and the unit's start/restart is not exercised here.
# Mounts and processes are cleaned up by a trap, also on failure.
#
# ${Version} and the like are dpkg-query's formats, $s perl's: literal on purpose.
# shellcheck disable=SC2016
set -eu

die() {
    echo "deb-test: FAIL: $*" >&2
    exit 1
}
ok() { echo "deb-test: ok: $*"; }

[ $# -ge 2 ] || die "usage: $0 PKG.deb UPGRADE.deb [WORKDIR]"
PKG=$(realpath "$1")
UPGRADE=$(realpath "$2")
WORK=${3:-target/deb-test}
MIRROR=${DEB_TEST_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || die "must run as root (chroot, mounts, dpkg)"
[ -f "$PKG" ] || die "no package $PKG"
[ -f "$UPGRADE" ] || die "no package $UPGRADE"
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
CACHE=$WORK/bookworm-minbase.tar
START=$(date +%s)

ROOT=
SERVER=

# Every process whose root directory is the test root (the server, a
# client), then the mounts, then the root itself; the root is removed only
# when nothing is mounted below it any more.
cleanup() {
    rc=$?
    set +e
    if [ -n "$ROOT" ]; then
        for p in /proc/[0-9]*; do
            if [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ]; then
                kill -KILL "${p#/proc/}" 2>/dev/null
            fi
        done
        if [ -n "$SERVER" ]; then
            kill -KILL "$SERVER" 2>/dev/null
            wait "$SERVER" 2>/dev/null
        fi
        for m in dev/pts dev proc; do
            if mountpoint -q "$ROOT/$m"; then
                umount "$ROOT/$m" || umount -l "$ROOT/$m"
            fi
        done
        if grep -q " $ROOT/" /proc/mounts; then
            echo "deb-test: still mounted under $ROOT, not removing it" >&2
            rc=1
        else
            rm -rf "$ROOT"
        fi
    fi
    rm -f "$WORK/userns.go"
    [ "$rc" = 0 ] || echo "deb-test: FAILED after $(($(date +%s) - START)) s" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- The pristine root, cached ---
if [ ! -s "$CACHE" ]; then
    echo "deb-test: making the bookworm minbase root (once; 45 s on an idle machine, minutes on a busy one)"
    fresh=$(mktemp -d "$WORK/debootstrap.XXXXXX")
    chmod 0755 "$fresh"
    ROOT=$fresh
    debootstrap --variant=minbase --include=adduser bookworm "$fresh" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        die "debootstrap failed, see $WORK/debootstrap.log"
    rm -rf "$fresh"/var/cache/apt/archives/*.deb "$fresh"/var/lib/apt/lists/*
    tar -C "$fresh" --numeric-owner -cf "$CACHE.tmp" .
    mv "$CACHE.tmp" "$CACHE"
    rm -rf "$fresh"
    ROOT=
fi
ROOT=$(mktemp -d "$WORK/root.XXXXXX")
tar -C "$ROOT" --numeric-owner -xpf "$CACHE"
# mktemp makes directories 0700: as / of the root it must let tsstore through.
chmod 0755 "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
cp "$PKG" "$ROOT/tmp/pkg.deb"
cp "$UPGRADE" "$ROOT/tmp/upgrade.deb"
ok "root ready in $(($(date +%s) - START)) s"

in_root() { chroot "$ROOT" "$@"; }

# "owner:group mode" of a path in the root.
stat_of() { in_root stat -c '%U:%G %a' "$1"; }
expect_stat() {
    got=$(stat_of "$1") || die "$1 is missing"
    [ "$got" = "$2" ] || die "$1 is $got, expected $2"
}
admin_key() { sed -n 's/^TSSTORE_ADMIN_KEY=//p' "$ROOT/etc/tsstore/tsstore.env"; }

# --- Install ---
in_root dpkg -i /tmp/pkg.deb </dev/null >"$WORK/install.log" 2>&1 ||
    { cat "$WORK/install.log"; die "dpkg -i"; }
in_root getent passwd tsstore >/dev/null || die "no user tsstore"
in_root getent group tsstore >/dev/null || die "no group tsstore"
pw=$(in_root getent passwd tsstore)
case $pw in
*:/var/lib/tsstore:/usr/sbin/nologin) ;;
*) die "user tsstore is $pw" ;;
esac
[ "$(in_root id -gn tsstore)" = tsstore ] || die "primary group of tsstore"
[ "$(in_root id -u tsstore)" -lt 1000 ] || die "tsstore is not a system user"
ok "user and group tsstore"

expect_stat /usr/bin/tsstore "root:root 755"
expect_stat /lib/systemd/system/tsstore.service "root:root 644"
expect_stat /etc/tsstore "root:tsstore 750"
expect_stat /etc/tsstore/config.json "root:root 644"
expect_stat /etc/tsstore/tsstore.env "root:root 600"
expect_stat /var/lib/tsstore "tsstore:tsstore 750"
expect_stat /usr/share/man/man1/tsstore.1.gz "root:root 644"
expect_stat /usr/share/doc/tsstore/copyright "root:root 644"
expect_stat /usr/share/doc/tsstore/changelog.Debian.gz "root:root 644"
in_root dpkg-query -W -f='${Conffiles}\n' tsstore | grep -q '^ /etc/tsstore/config.json ' ||
    die "config.json is not a conffile"
cmp -s "$ROOT/etc/tsstore/config.json" packaging/systemd/config.json ||
    die "config.json is not packaging/systemd/config.json"
KEY=$(admin_key)
[ "${#KEY}" -ge 32 ] || die "admin key of ${#KEY} characters"
[ "$(grep -c '^TSSTORE_ADMIN_KEY=' "$ROOT/etc/tsstore/tsstore.env")" = 1 ] || die "one key line"
in_root /usr/bin/tsstore version >/dev/null || die "the installed binary does not run"
ok "files, owners, modes, conffile, admin key of ${#KEY} characters"

# The postinst again (dpkg-reconfigure, a half-finished upgrade): no change.
in_root env DPKG_MAINTSCRIPT_PACKAGE=tsstore DPKG_MAINTSCRIPT_NAME=postinst \
    /var/lib/dpkg/info/tsstore.postinst configure 0.1.0-1 >/dev/null
[ "$(admin_key)" = "$KEY" ] || die "postinst replaced the admin key"
expect_stat /etc/tsstore/tsstore.env "root:root 600"
ok "postinst is idempotent"

# --- The installed binary as the service runs it ---
# As systemd would: /run/tsstore made by RuntimeDirectory= (tsstore, 0750),
# the env file read as root, then the server run as tsstore:tsstore.
# --port 0 picks a free loopback port; the log says which.
SERVE='set -a; . /etc/tsstore/tsstore.env; set +a
    export TSSTORE_CONFIG=/etc/tsstore/config.json
    exec setpriv --reuid=tsstore --regid=tsstore --init-groups --no-new-privs \
        /usr/bin/tsstore serve --host 127.0.0.1 --port 0'

# start_server [userns]: with userns, in a user namespace that maps only
# root and tsstore to themselves, as the unit's PrivateUsers=yes does (with
# a mount namespace of its own, which chroot needs there).
start_server() {
    in_root install -d -o tsstore -g tsstore -m 0750 /run/tsstore
    : >"$WORK/server.log"
    if [ "${1:-}" = userns ]; then
        go=$WORK/userns.go
        rm -f "$go"
        mkfifo "$go"
        unshare --user --mount -- /bin/sh -c 'read -r _ <"$1" && exec chroot "$2" /bin/sh -c "$3"' \
            sh "$go" "$ROOT" "$SERVE" </dev/null >>"$WORK/server.log" 2>&1 &
        SERVER=$!
        i=0
        while [ "$(readlink "/proc/$SERVER/ns/user")" = "$(readlink /proc/self/ns/user)" ]; do
            i=$((i + 1))
            [ "$i" -lt 100 ] || die "unshare --user did not happen"
            sleep 0.1
        done
        # Each map in one write(2), as the kernel wants.
        for m in "u $(in_root id -u tsstore)" "g $(in_root id -g tsstore)"; do
            printf '0 0 1\n%s %s 1\n' "${m#? }" "${m#? }" |
                dd of="/proc/$SERVER/${m%% *}id_map" bs=4096 status=none || die "${m%% *}id_map"
        done
        timeout 10 sh -c 'echo go >"$1"' sh "$go" || die "the namespaced server did not wait"
    else
        chroot "$ROOT" /bin/sh -c "$SERVE" </dev/null >>"$WORK/server.log" 2>&1 &
        SERVER=$!
    fi
    i=0
    while :; do
        ADDR=$(sed -n 's/.*Starting tsstore server on \([0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n1)
        [ -n "$ADDR" ] && break
        kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log"; die "the server exited"; }
        i=$((i + 1))
        [ "$i" -lt 200 ] || { cat "$WORK/server.log"; die "the server did not start in 20 s"; }
        sleep 0.1
    done
    [ "$(curl -sS -o /dev/null -w '%{http_code}' "http://$ADDR/health")" = 200 ] || die "/health"
    [ "$(in_root stat -c '%U:%G %a' /run/tsstore/tsstore.sock)" = "tsstore:tsstore 660" ] ||
        die "socket is $(in_root stat -c '%U:%G %a' /run/tsstore/tsstore.sock)"
}
stop_server() {
    kill -TERM "$SERVER"
    wait "$SERVER" || die "the server exited $? on SIGTERM"
    SERVER=
}
# curl METHOD PATH [ARGS...]: the body; fails on an HTTP error.
api() {
    m=$1 p=$2
    shift 2
    curl -sS --fail-with-body -X "$m" "http://$ADDR$p" "$@"
}
# A line on the Unix socket as USER in the root; prints the answers.
socket_send() {
    user=$1 store=$2 key=$3 line=$4
    in_root runuser -u "$user" -- perl -MIO::Socket::UNIX -e '
        my $s = IO::Socket::UNIX->new(Peer => "/run/tsstore/tsstore.sock") or die "connect: $!\n";
        print $s "AUTH $ARGV[0] $ARGV[1]\n$ARGV[2]\nQUIT\n";
        print while <$s>;' "$store" "$key" "$line"
}

# socket_checks TAG: a line from sensor (group tsstore) lands, the same
# from outsider is refused at connect().
socket_checks() {
    answers=$(socket_send sensor sensors "$STORE_KEY" "{\"temp\":22.5,\"via\":\"$1\"}") ||
        die "socket as sensor"
    echo "$answers" | grep -q '^OK [0-9]' || die "socket answers: $answers"
    if socket_send outsider sensors "$STORE_KEY" '{"temp":0}' 2>"$WORK/outsider.err"; then
        die "a user outside group tsstore wrote on the socket"
    fi
    grep -q 'Permission denied' "$WORK/outsider.err" || die "outsider: $(cat "$WORK/outsider.err")"
    newest=$(api GET '/api/stores/sensors/data/newest?limit=10' -H "X-API-Key: $STORE_KEY")
    echo "$newest" | grep -q "\"via\":\"$1\"" || die "socket line not stored: $newest"
}

start_server
ok "the service's user started the installed binary with the installed config: $ADDR answers /health"
[ "$(in_root stat -c %U /var/lib/tsstore/.tsstore-server.lock)" = tsstore ] ||
    die "the server does not keep its data in /var/lib/tsstore"

# Without the admin key, no store.
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://$ADDR/api/stores" -d '{"name":"x"}')
[ "$code" = 401 ] || [ "$code" = 403 ] || die "POST /api/stores without a key answered $code"
created=$(api POST /api/stores -H "X-Admin-Key: $KEY" -H 'Content-Type: application/json' \
    -d '{"name":"sensors","data_type":"json","num_blocks":64}') || die "create store: $created"
STORE_KEY=$(echo "$created" | sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p')
[ -n "$STORE_KEY" ] || die "no api_key in $created"
api POST /api/stores/sensors/data -H "X-API-Key: $STORE_KEY" -H 'Content-Type: application/json' \
    -d '{"data":{"temp":21.5}}' >/dev/null || die "insert"
newest=$(api GET '/api/stores/sensors/data/newest?limit=10' -H "X-API-Key: $STORE_KEY")
echo "$newest" | grep -q '"temp":21.5' || die "read back: $newest"
ok "store created with the admin key, object inserted and read back"

# Socket: a member of group tsstore gets in, another user does not.
in_root useradd --create-home --groups tsstore sensor
in_root useradd --create-home outsider
socket_checks socket
ok "a member of group tsstore wrote on the socket and the line landed; a non-member was refused"
stop_server
[ ! -e "$ROOT/run/tsstore/tsstore.sock" ] || die "socket file left after SIGTERM"
ok "the server stopped cleanly on SIGTERM"

# --- Upgrade: data, keys and a local config edit survive ---
sed -i 's/"mode": "release",/"mode": "release",\n    "ws_ping_seconds": 20,/' "$ROOT/etc/tsstore/config.json"
grep -q ws_ping_seconds "$ROOT/etc/tsstore/config.json" || die "could not edit config.json"
cp "$ROOT/etc/tsstore/config.json" "$WORK/config.edited"
old_version=$(in_root dpkg-query -W -f='${Version}' tsstore)
in_root dpkg -i /tmp/upgrade.deb </dev/null >"$WORK/upgrade.log" 2>&1 ||
    { cat "$WORK/upgrade.log"; die "dpkg -i of the upgrade"; }
new_version=$(in_root dpkg-query -W -f='${Version}' tsstore)
in_root dpkg --compare-versions "$new_version" gt "$old_version" ||
    die "the upgrade is $new_version, installed was $old_version"
cmp -s "$ROOT/etc/tsstore/config.json" "$WORK/config.edited" || die "the local edit of config.json was lost"
[ "$(admin_key)" = "$KEY" ] || die "the upgrade changed the admin key"
expect_stat /etc/tsstore "root:tsstore 750"
expect_stat /etc/tsstore/tsstore.env "root:root 600"
expect_stat /var/lib/tsstore "tsstore:tsstore 750"
# This time in a user namespace, as PrivateUsers=yes runs it.
start_server userns
grep -q 'unknown key' "$WORK/server.log" && die "the edited config was not understood"
newest=$(api GET '/api/stores/sensors/data/newest?limit=10' -H "X-API-Key: $STORE_KEY") ||
    die "the store key no longer works: $newest"
echo "$newest" | grep -q '"temp":21.5' || die "data lost: $newest"
echo "$newest" | grep -q '"via":"socket"' || die "socket data lost: $newest"
api POST /api/stores -H "X-Admin-Key: $KEY" -H 'Content-Type: application/json' \
    -d '{"name":"after_upgrade","num_blocks":64}' >/dev/null || die "the admin key no longer works"
ok "upgrade $old_version -> $new_version kept the data, the admin key, the store key and the edited config.json"
socket_checks userns
stop_server
ok "under a user namespace mapping only root and tsstore (PrivateUsers=yes) group tsstore still reaches the socket, others do not"

# --- Remove keeps the data; purge leaves nothing ---
in_root dpkg -r tsstore </dev/null >"$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log"; die "dpkg -r"; }
[ ! -e "$ROOT/usr/bin/tsstore" ] || die "remove left the binary"
[ -d "$ROOT/var/lib/tsstore/sensors" ] || die "remove deleted the data"
[ "$(admin_key)" = "$KEY" ] || die "remove deleted the admin key"
in_root getent passwd tsstore >/dev/null || die "remove deleted the user"
ok "remove kept the data, the key and the user"
in_root dpkg --purge tsstore </dev/null >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; die "dpkg --purge"; }
for f in /usr/bin/tsstore /lib/systemd/system/tsstore.service /etc/tsstore /var/lib/tsstore \
    /run/tsstore /usr/share/doc/tsstore /usr/share/man/man1/tsstore.1.gz \
    /etc/systemd/system/multi-user.target.wants/tsstore.service; do
    if [ -e "$ROOT$f" ] || [ -L "$ROOT$f" ]; then die "purge left $f"; fi
done
left=$(find "$ROOT/etc" "$ROOT/var/lib" -name '*tsstore*' 2>/dev/null | sed "s|^$ROOT||")
[ -z "$left" ] || die "purge left: $left"
in_root getent passwd tsstore >/dev/null && die "purge left the user"
in_root getent group tsstore >/dev/null && die "purge left the group"
in_root dpkg-query -W tsstore >/dev/null 2>&1 && die "dpkg still knows tsstore"
ok "purge removed the files, the data, the user and the group"

echo "deb-test: PASS in $(($(date +%s) - START)) s"
