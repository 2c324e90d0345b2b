#!/usr/bin/env bash
# make oci-test: the images of make oci, in a Podman storage of their own
# (so the README's names, tsstore and tsstore-data, clash with nothing):
#
# 1. each OCI archive in DIST: its size, its image config (user, variables,
#    volume, port, stop signal, health check, platform), its files (only
#    the static binary of the right architecture, and /data owned by the
#    user), and the multi-arch index against the three;
# 2. the amd64 archive's image run as the README runs it (a volume, a port
#    published on loopback): the admin key in the log, the health check,
#    the user, stores and keys made with `podman exec`, inserts and reads
#    over HTTP, a restart and a new container on the same volume;
# 3. the amd64 archive read as `docker load` reads it (manifest.json and
#    Docker's config, with the HEALTHCHECK), under podman-compose with
#    compose.yaml: the same volume, the health check, the restart policy
#    after a kill -9, down and up.
#
# usage: test.sh VERSION DIST WORK
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${1:?usage: test.sh VERSION DIST WORK}
dist=${2:?dist dir}
work=${3:?work dir}
mkdir -p "$work"
work=$(cd "$work" && pwd)
started=$(date +%s)

log() { printf '%s oci-test: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
ok() { log "ok: $*"; }

# The test's own storage, volumes and networks.
export CONTAINERS_CONF=$work/containers.conf
export CONTAINERS_STORAGE_CONF=$work/storage.conf
{ cat "$here/containers.conf"; printf '\n[network]\nnetwork_config_dir = "%s"\n' "$work/networks"; } \
  > "$CONTAINERS_CONF"
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
  "$work/storage" "$work/run" > "$CONTAINERS_STORAGE_CONF"
[ "$(podman info --format '{{.Store.GraphRoot}}')" = "$work/storage" ] \
  || fail "podman does not use the test's storage $work/storage"
cleanup() {
  podman rm -af -t 0 >/dev/null 2>&1 || true
  podman volume rm -af >/dev/null 2>&1 || true
  podman network rm -f tsstore-oci-test_default >/dev/null 2>&1 || true
  podman rmi -af >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port

# --- 1. The archives ------------------------------------------------------

# check-archive.py ARCHIVE [ARCH VARIANT]: checks the archive and prints
# its manifests' digests with their platforms.
check_archive() {
  python3 - "$@" <<'PY'
import json, sys, tarfile
path, want = sys.argv[1], sys.argv[2:]
with tarfile.open(path) as t:
    files = {m.name.removeprefix("./"): t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
def blob(d):
    return json.loads(files["blobs/" + d["digest"].replace(":", "/")])
def manifests(d):
    data = blob(d)
    if "manifests" in data:
        for m in data["manifests"]:
            yield from manifests(m)
    else:
        yield d, data
for desc, man in (m for top in json.loads(files["index.json"])["manifests"] for m in manifests(top)):
    cfg = blob(man["config"])
    c = cfg["config"]
    platform = cfg["os"] + "/" + cfg["architecture"] + ("/" + cfg["variant"] if cfg.get("variant") else "")
    problems = []
    def expect(what, got, wanted):
        if got != wanted:
            problems.append(f"{what}: {got!r}, expected {wanted!r}")
    expect("user", c.get("User"), "10001:10001")
    expect("entrypoint", c.get("Entrypoint"), ["/usr/bin/tsstore"])
    expect("cmd", c.get("Cmd"), ["serve"])
    expect("volumes", c.get("Volumes"), {"/data": {}})
    expect("ports", c.get("ExposedPorts"), {"21080/tcp": {}})
    expect("stop signal", c.get("StopSignal"), "SIGTERM")
    expect("health check", (c.get("Healthcheck") or {}).get("Test"), ["CMD", "/usr/bin/tsstore", "healthcheck"])
    for e in ["TSSTORE_DATA_PATH=/data", "TSSTORE_SOCKET_PATH=/data/tsstore.sock",
              "TSSTORE_ADMIN_KEY_FILE=/data/.admin_key"]:
        if e not in c.get("Env", []):
            problems.append(f"no {e} in {c.get('Env')}")
    if want:
        expect("platform", platform, "linux/" + "/".join(w for w in want if w))
    if problems:
        sys.exit(f"{path} ({platform}): " + "; ".join(problems))
    print(desc["digest"], platform)
PY
}

declare -A arch_of=([amd64]="amd64" [arm64]="arm64" [armv7]="arm v7")
declare -A file_says=([amd64]="x86-64" [arm64]="ARM aarch64" [armv7]="ARM, EABI5")
declare -A qemu_of=([arm64]="qemu-aarch64-static" [armv7]="qemu-arm-static -cpu cortex-a7")
declare -A digest_of
for tag in amd64 arm64 armv7; do
  a=$dist/tsstore-$version-linux-$tag.oci.tar
  [ -f "$a" ] || fail "$a is missing: run make oci"
  size=$(stat -c %s "$a")
  [ "$size" -le 8000000 ] || fail "$a is $size bytes, more than 8 MB"
  # shellcheck disable=SC2086 # ARCH and VARIANT are two words
  info=$(check_archive "$a" ${arch_of[$tag]}) || fail "$a"
  read -r digest platform <<<"$info"
  digest_of[$platform]=$digest
  loaded=$(podman load -i "$a" 2>/dev/null | sed -n 's/^Loaded image[^:]*: //p')
  [ -n "$loaded" ] || fail "podman load -i $a"
  podman tag "$loaded" "localhost/tsstore-archive:$tag"
  podman untag "$loaded" "$loaded"
  [ "$(podman image inspect --format '{{.Size}}' "localhost/tsstore-archive:$tag")" -le 8000000 ] \
    || fail "the $tag image is larger than 8 MB"
  m=$(podman image mount "localhost/tsstore-archive:$tag")
  files=$(cd "$m" && find . -mindepth 1 | sort | paste -sd ' ')
  [ "$files" = "./data ./usr ./usr/bin ./usr/bin/tsstore" ] || fail "$tag image holds $files"
  [ "$(stat -c '%u:%g %a' "$m/data")" = "10001:10001 755" ] \
    || fail "$tag /data is $(stat -c '%u:%g %a' "$m/data")"
  [ "$(stat -c '%u:%g %a' "$m/usr/bin/tsstore")" = "0:0 755" ] \
    || fail "$tag binary is $(stat -c '%u:%g %a' "$m/usr/bin/tsstore")"
  what=$(file -b "$m/usr/bin/tsstore")
  case $what in
  *"${file_says[$tag]}"*static*) ;;
  *) fail "$tag binary: $what" ;;
  esac
  # The roots outbound wss:// connections trust are in the binary.
  grep -aq 'ISRG Root X1' "$m/usr/bin/tsstore" || fail "$tag binary holds no webpki root certificates"
  ran=
  if [ -n "${qemu_of[$tag]:-}" ] && command -v "${qemu_of[$tag]%% *}" >/dev/null; then
    # shellcheck disable=SC2086 # the qemu command and its options
    v=$(${qemu_of[$tag]} "$m/usr/bin/tsstore" version)
    [ "$v" = "tsstore v$version" ] || fail "$tag binary under qemu-user printed $v"
    ran=", runs under ${qemu_of[$tag]%% *}"
  fi
  podman image unmount "localhost/tsstore-archive:$tag" >/dev/null
  ok "$(basename "$a"): $size bytes, $platform, a static ${file_says[$tag]} binary${ran}; only /usr/bin/tsstore and /data"
done
index_platforms=$(check_archive "$dist/tsstore-$version.oci.tar" | sort)
want=$(for p in "${!digest_of[@]}"; do echo "${digest_of[$p]} $p"; done | sort)
[ "$index_platforms" = "$want" ] \
  || fail "the multi-arch index holds $index_platforms; the archives: $want"
ok "tsstore-$version.oci.tar: the three archives' manifests, $(stat -c %s "$dist/tsstore-$version.oci.tar") bytes"

# --- 2. The amd64 image, as the README runs it ------------------------------

wait_health() {  # wait_health: the server answers /health within 20 s
  for _ in $(seq 100); do
    curl -fsS "$url/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  podman logs tsstore >&2 || true
  fail "no answer on $url/health"
}
http() {  # http METHOD PATH [curl args...]: prints "STATUS BODY"
  local m=$1 p=$2
  shift 2
  curl -sS -o "$work/body" -w '%{http_code}' -X "$m" "$url$p" "$@"
  printf ' %s' "$(cat "$work/body")"
}
field() { sed -n "s/^$1 *//p"; }
# podman healthcheck run; a second and third try only after a stall of
# Podman's exec itself (seen once at a load of 16 on 2 cores: "exceeded
# timeout of 30s", while the check inside takes well under a second).
healthcheck_run() {
  local out
  for try in 1 2 3; do
    if out=$(podman healthcheck run tsstore 2>&1); then return 0; fi
    case $out in *"exceeded timeout"*) log "podman healthcheck run, try $try: $out" ;; *) break ;; esac
  done
  fail "podman healthcheck run: ${out:-unhealthy}"
}
host_pid() { podman inspect --format '{{.State.Pid}}' tsstore 2>/dev/null || echo 0; }

# Podman takes no HEALTHCHECK from an OCI image (Docker does): given here.
# Without systemd, Podman runs health checks only when asked (podman
# healthcheck run) and says so on stderr: that goes to podman.log.
rm -f "$work/podman.log" "$work/compose.log"
podman run -d -v tsstore-data:/data -p "127.0.0.1:$port:21080" --name tsstore \
  --health-cmd '["/usr/bin/tsstore", "healthcheck"]' localhost/tsstore-archive:amd64 >/dev/null \
  2>>"$work/podman.log"
wait_health
ok "podman run -d -v tsstore-data:/data -p 127.0.0.1:$port:21080 --name tsstore: /health answers"

keys=$(podman logs tsstore 2>&1 | field 'tsstore admin key:')
[ "$(printf '%s\n' "$keys" | grep -c .)" = 1 ] || fail "admin key lines in the log: $keys"
admin=$keys
[[ $admin =~ ^[0-9a-f]{64}$ ]] || fail "admin key $admin"
ok "the generated admin key is in the log once"

healthcheck_run
[ "$(podman inspect --format '{{.State.Health.Status}}' tsstore)" = healthy ] || fail "not healthy"
if out=$(podman exec tsstore tsstore healthcheck --port 1 2>&1); then fail "healthcheck of a closed port passed: $out"; fi
case $out in *"unhealthy: http://127.0.0.1:1/health"*) ;; *) fail "healthcheck --port 1: $out" ;; esac
ok "health check: healthy; fails on a port nobody answers"

read -r _ uid _ < <(grep '^Uid:' "/proc/$(host_pid)/status")
read -r _ gid _ < <(grep '^Gid:' "/proc/$(host_pid)/status")
[ "$uid:$gid" = "10001:10001" ] || fail "the server runs as $uid:$gid"
vol=$(podman volume inspect --format '{{.Mountpoint}}' tsstore-data)
[ "$(stat -c '%u %a' "$vol/.admin_key")" = "10001 600" ] || fail ".admin_key: $(stat -c '%u %a' "$vol/.admin_key")"
[ "$(cat "$vol/.admin_key")" = "$admin" ] || fail ".admin_key does not hold the printed key"
[ -S "$vol/tsstore.sock" ] || fail "no Unix socket at /data/tsstore.sock"
ok "the server runs as 10001:10001; the volume holds .admin_key (0600) and tsstore.sock"

created=$(podman exec tsstore tsstore create my-store)
key=$(printf '%s\n' "$created" | field 'API Key:')
id=$(printf '%s\n' "$created" | field 'Key ID:')
[ -n "$key" ] && [ "$(stat -c %u "$vol/my-store")" = 10001 ] || fail "create: $created"
listed=$(podman exec tsstore tsstore key list my-store)
grep -q "^$id .*Initial key$" <<<"$listed" || fail "key list: $listed"
r=$(http POST /api/stores/my-store/data -H "X-API-Key: $key" -H 'Content-Type: application/json' \
  -d '{"data":{"temp":21.5}}')
[ "${r%% *}" = 201 ] || fail "insert: $r"
r=$(http GET "/api/stores/my-store/data/newest?limit=5" -H "X-API-Key: $key")
case $r in "200 "*'"temp":21.5'*) ;; *) fail "read: $r" ;; esac
regenerated=$(podman exec tsstore tsstore key regenerate my-store)
new_key=$(printf '%s\n' "$regenerated" | field 'API Key:')
[ -n "$new_key" ] && [ "$new_key" != "$key" ] || fail "key regenerate: $regenerated"
for _ in $(seq 20); do
  r=$(http GET "/api/stores/my-store/data/newest" -H "X-API-Key: $key")
  [ "${r%% *}" = 401 ] && break
  sleep 0.1
done
[ "${r%% *}" = 401 ] || fail "the old key still works after key regenerate: $r"
r=$(http GET "/api/stores/my-store/data/newest" -H "X-API-Key: $new_key")
case $r in "200 "*'"temp":21.5'*) ;; *) fail "read with the new key: $r" ;; esac
r=$(http POST /api/stores -H "X-Admin-Key: $admin" -d '{"name":"made-over-http","num_blocks":16}')
[ "${r%% *}" = 201 ] || fail "store creation with the admin key: $r"
r=$(http POST /api/stores -H "X-Admin-Key: wrong-admin-key-0123456789" -d '{"name":"nope"}')
[ "${r%% *}" = 401 ] || fail "store creation with a wrong admin key: $r"
status=$(podman exec tsstore tsstore status)
grep -q '^Server: running' <<<"$status" || fail "status: $status"
ok "podman exec: create, key list, key regenerate (the old key refused); HTTP insert and read; admin key"

t0=$(date +%s)
podman stop tsstore >/dev/null 2>>"$work/podman.log"
[ "$(podman inspect --format '{{.State.ExitCode}}' tsstore)" = 0 ] \
  || fail "exit code after SIGTERM: $(podman inspect --format '{{.State.ExitCode}}' tsstore)"
logs=$(podman logs tsstore 2>&1)
[[ $(tail -n 3 <<<"$logs") == *"Server stopped"* ]] || fail "no ordered shutdown at the end of the log: $logs"
ok "podman stop: SIGTERM, ordered shutdown, exit 0 in $(($(date +%s) - t0)) s"
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
podman start tsstore >/dev/null 2>>"$work/podman.log"
wait_health
r=$(http GET "/api/stores/my-store/data/newest" -H "X-API-Key: $new_key")
case $r in "200 "*'"temp":21.5'*) ;; *) fail "read after the restart: $r" ;; esac
logs=$(podman logs --since "$since" tsstore 2>&1)
grep -q 'admin key:' <<<"$logs" && fail "the admin key was printed again"
r=$(http POST /api/stores -H "X-Admin-Key: $admin" -d '{"name":"after-restart","num_blocks":16}')
[ "${r%% *}" = 201 ] || fail "the admin key after the restart: $r"
ok "restarted: the data, the store key and the admin key (not printed again) are kept"

podman rm -f -t 20 tsstore >/dev/null 2>>"$work/podman.log"
podman run -d -v tsstore-data:/data -p "127.0.0.1:$port:21080" --name tsstore \
  localhost/tsstore-archive:amd64 >/dev/null 2>>"$work/podman.log"
wait_health
logs=$(podman logs tsstore 2>&1)
grep -q 'admin key:' <<<"$logs" && fail "a new container printed an admin key"
r=$(http GET "/api/stores/my-store/data/newest" -H "X-API-Key: $new_key")
case $r in "200 "*'"temp":21.5'*) ;; *) fail "read from a new container: $r" ;; esac
podman rm -f -t 20 tsstore >/dev/null 2>>"$work/podman.log"
ok "a new container on the same volume: same data, same admin key"

# --- 3. compose.yaml ----------------------------------------------------------

id=$(podman pull -q "docker-archive:$dist/tsstore-$version-linux-amd64.oci.tar")
test=$(podman image inspect --format '{{json .Config.Healthcheck.Test}}' "$id")
[ "$test" = '["CMD","/usr/bin/tsstore","healthcheck"]' ] \
  || fail "the archive read through its manifest.json has the health check $test"
podman tag "$id" localhost/tsstore:latest
root=$(cd "$here/../.." && pwd)
compose() {
  TSSTORE_PUBLISH=127.0.0.1:$port podman-compose -p tsstore-oci-test -f "$root/compose.yaml" "$@" \
    >>"$work/compose.log" 2>&1 || { cat "$work/compose.log" >&2; fail "podman-compose $*"; }
}
compose up -d
wait_health
r=$(http GET "/api/stores/my-store/data/newest" -H "X-API-Key: $new_key")
case $r in "200 "*'"temp":21.5'*) ;; *) fail "compose: the volume of docker run: $r" ;; esac
healthcheck_run
# (podman-compose 1.0.3 passes no stop_grace_period: Podman's 10 s apply.)
policy=$(podman inspect --format '{{.HostConfig.RestartPolicy.Name}}' tsstore)
[ "$policy" = unless-stopped ] || fail "compose: restart policy $policy"
# `always`: an acknowledged insert survives the kill -9 below (under the
# default `interval`, only those older than about a second do).
key2=$(podman exec tsstore tsstore create compose-store --durability always | field 'API Key:')
r=$(http POST /api/stores/compose-store/data -H "X-API-Key: $key2" -H 'Content-Type: application/json' \
  -d '{"data":{"n":1}}')
[ "${r%% *}" = 201 ] || fail "compose: insert: $r"
ok "podman-compose up -d: the same volume, healthy, unless-stopped, a store made with podman exec"

pid=$(host_pid)
kill -9 "$pid"
for _ in $(seq 100); do
  new_pid=$(host_pid)
  [ "$new_pid" != 0 ] && [ "$new_pid" != "$pid" ] && break
  sleep 0.2
done
[ "$new_pid" != 0 ] && [ "$new_pid" != "$pid" ] || fail "compose: not restarted after kill -9"
wait_health
r=$(http GET "/api/stores/compose-store/data/newest" -H "X-API-Key: $key2")
case $r in "200 "*'"n":1'*) ;; *) fail "compose: read after kill -9: $r" ;; esac
r=$(http GET "/api/stores/my-store/data/newest" -H "X-API-Key: $new_key")
case $r in "200 "*'"temp":21.5'*) ;; *) fail "compose: read my-store after kill -9: $r" ;; esac
ok "kill -9 of the server: restarted by the policy, the acknowledged inserts are there"

compose down
podman volume exists tsstore-data || fail "compose down removed the volume"
compose up -d
wait_health
r=$(http GET "/api/stores/compose-store/data/newest" -H "X-API-Key: $key2")
case $r in "200 "*'"n":1'*) ;; *) fail "compose: read after down and up: $r" ;; esac
compose down
ok "podman-compose down and up: the volume and its stores are kept"

log "passed in $(($(date +%s) - started)) s"
