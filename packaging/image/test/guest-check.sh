#!/bin/bash
# make image-test only (tsstore-image-test.service in the test copy of the
# image): writes key=value lines about this boot to the results disk (the
# 1 MiB virtio disk), 64 KiB per boot. The first boot also creates a store
# over HTTP with the generated admin key, writes a line to it over the
# Unix socket as a member of group tsstore, and reboots.
set -uo pipefail

state=/var/lib/tsstore-image-test
mkdir -p "$state"
phase=$(( $(cat "$state/phase" 2>/dev/null || echo 0) + 1 ))
echo "$phase" > "$state/phase"
sync

# HTTP on the loopback with perl-base (curl is not in the image).
http() { # METHOD PATH HEADER BODY: prints the response body
  perl -MIO::Socket::INET -e '
    my ($method, $path, $header, $body) = @ARGV;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => 21080) or die "connect: $!\n";
    print $s "$method $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$header\r\n"
      . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    local $/; my $r = <$s>; $r =~ s/^.*?\r\n\r\n//s; print $r;' "$@"
}

# One session on the Unix socket: AUTH, one line, QUIT; prints the answers.
socket_session() { # STORE KEY LINE
  perl -MIO::Socket::UNIX -e '
    my ($store, $key, $line) = @ARGV;
    my $s = IO::Socket::UNIX->new(Peer => "/run/tsstore/tsstore.sock") or die "connect: $!\n";
    $s->autoflush(1);
    for my $out ("AUTH $store $key", $line, "QUIT") { print $s "$out\n"; my $a = <$s>; chomp $a; print "$a|"; }' "$@"
}

report() {
  local key
  key=$(sed -n 's/^TSSTORE_ADMIN_KEY=//p' /etc/tsstore/tsstore.env)
  echo "phase=$phase"
  systemctl show -p ActiveState,SubState,NRestarts,Result tsstore.service
  echo "firstboot=$(systemctl is-active tsstore-firstboot.service)"
  echo "hostname=$(hostname)"
  echo "machine_id=$(cat /etc/machine-id)"
  echo "root_bytes=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')"
  echo "admin_key=$key"
  echo "env_file=$(stat -c %a:%U:%G /etc/tsstore/tsstore.env)"
  echo "key_file=$(if [ -s /boot/firmware/tsstore-admin-key.txt ]; then echo present; else echo absent; fi)"
  echo "socket_file=$(stat -c %a:%U:%G /run/tsstore/tsstore.sock)"
  echo "sshd=$(command -v sshd || echo none)"
  echo "root_password=$(passwd -S root | cut -d' ' -f2)"
  echo "issue_url=$(grep -c ':21080/' /etc/issue)"
  if [ "$phase" = 1 ]; then
    local made store_key gid
    made=$(http POST /api/stores "X-Admin-Key: $key" '{"name":"sockstore","data_type":"json"}')
    store_key=$(printf '%s' "$made" | sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p')
    echo "sock_store_key=$store_key"
    gid=$(getent group tsstore | cut -d: -f3)
    echo "socket_session=$(setpriv --reuid=65534 --regid=65534 --groups="$gid" \
      bash -c "$(declare -f socket_session); socket_session sockstore '$store_key' '{\"via\":\"socket\",\"boot\":1}'" 2>&1)"
  fi
  echo "end=1"
}

results=
for dev in /sys/block/vd*; do
  if [ "$(cat "$dev/size")" = 2048 ]; then results=/dev/${dev##*/}; fi
done
report > /run/tsstore-image-test.txt 2>&1
if [ -n "$results" ]; then
  dd if=/run/tsstore-image-test.txt of="$results" bs=64k seek="$phase" conv=notrunc,fsync status=none
fi
if [ "$phase" = 1 ]; then systemctl --no-block reboot; fi
