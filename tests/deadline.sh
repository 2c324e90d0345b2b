#!/usr/bin/env bash
# Usage: tests/deadline.sh SECONDS COMMAND [ARG...]
#
# Runs COMMAND in a process group of its own and fails it once it has run
# SECONDS: first the process tree under it is printed (state, kernel wait
# channel, age, command line of each process), then the group is killed and
# this exits with 124. `make cross-test` runs its qemu-user steps through
# it, so a hang (qemu-user can deadlock in a process forked by a
# multi-threaded guest) fails that step within its bound and says where,
# instead of using up the whole CI run.
set -u
limit=$1
shift
setsid "$@" &
pid=$!
trap 'kill -TERM -- -$pid 2>/dev/null' INT TERM
for ((waited = 0; waited < limit; waited++)); do
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"
    exit $?
  fi
  sleep 1
done
echo "deadline.sh: still running after ${limit} s, killed: $*" >&2
ps -s "$pid" -o pid,ppid,stat,wchan:32,etime,args --forest >&2
for p in $(pgrep -s "$pid"); do
  echo "pid $p, its threads wait in:" \
    "$(for t in /proc/"$p"/task/*; do cat "$t"/wchan 2>/dev/null; echo -n ' '; done)" >&2
done
kill -KILL -- -"$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit 124
