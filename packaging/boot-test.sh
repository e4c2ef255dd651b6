#!/usr/bin/env bash
# Boots the installed package's units for real: a fresh Debian root (debootstrap) with the
# package installed and a config naming one disk, booted with `systemd-nspawn -b` (systemd as
# the container's PID 1). Checks that podstore.service starts and reports ready (Type=notify),
# that a SIGKILL is followed by a restart, and that a hung node (SIGSTOP) is killed by the
# watchdog and restarted, with an object stored before still readable after each restart;
# then an orderly shutdown stops the node cleanly.
#
#   packaging/boot-test.sh [DEB]   (root; needs debootstrap and systemd-nspawn)
# PODSTORE_DEBOOTSTRAP_CACHE=DIR keeps the pristine root between runs.
# If the container can't boot here, the test says why and exits 0 (the units are still gated
# by systemd/check.sh and packaging/check-install.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "boot-test: needs root"; exit 1; }
for t in debootstrap systemd-nspawn nsenter curl; do
  command -v $t >/dev/null || { echo "boot-test: $t is not installed"; exit 1; }
done
deb=${1:-}
if [ -z "$deb" ]; then deb=$("$top/packaging/build-deb.sh" | tail -1); fi
work=$(mktemp -d /tmp/podstore-boot.XXXXXX)
nspawn_pid=""
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  umount "$work/root/proc" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. "$top/packaging/fresh-root.sh"
fresh_root "$work" "$deb"
umount "$root/proc"   # systemd-nspawn mounts its own
mkdir -p "$root/srv/podstore/disk0"
chroot "$root" chown podstore:podstore /srv/podstore/disk0
cat > "$root/etc/podstore/podstore.toml" <<'TOML'
node_id = "boot-test"
[listen]
data = "127.0.0.1:7070"
admin = "127.0.0.1:7072"
[[disks]]
id = 0
path = "/srv/podstore/disk0"
tier = "capacity"
require_mount_point = false
TOML
# Only for the test's pace: a 4 s watchdog and a quick restart (the shipped unit: 30 s, 2 s).
mkdir -p "$root/etc/systemd/system/podstore.service.d"
printf '[Service]\nWatchdogSec=4s\nRestartSec=1s\n' > "$root/etc/systemd/system/podstore.service.d/boot-test.conf"

# --keep-unit --register=no: the host has no systemd as PID 1 to ask for a scope.
systemd-nspawn -D "$root" --keep-unit --register=no --private-network -b --console=passive \
  >"$work/boot.log" 2>&1 &
nspawn_pid=$!
init=""
for _ in $(seq 100); do
  init=$(pgrep -P "$nspawn_pid" -x systemd || true)
  [ -n "$init" ] && break
  kill -0 "$nspawn_pid" 2>/dev/null || break
  sleep 0.2
done
inside() { nsenter -t "$init" -m -u -i -n -p "$@"; }
booted=""
if [ -n "$init" ]; then
  for _ in $(seq 150); do
    case "$(inside systemctl is-system-running 2>/dev/null || true)" in
      running | degraded) booted=1; break ;;
    esac
    sleep 0.2
  done
fi
if [ -z "$booted" ]; then
  echo "SKIPPED boot test: systemd-nspawn could not boot a container here:"
  sed 's/^/  /' "$work/boot.log" | tail -10
  exit 0
fi
fail() {
  echo "boot-test: $*" >&2
  inside journalctl -u podstore --no-pager 2>/dev/null | tail -30 >&2 || true
  exit 1
}
prop() { inside systemctl show -p "$1" --value podstore.service; }
# Host curl in the container's network namespace.
http() { nsenter -t "$init" -n curl -s -o "$work/body" -w '%{http_code}' "$@"; }
wait_ready() { # $1: restarts expected
  for _ in $(seq 150); do
    if [ "$(prop ActiveState)" = active ] && [ "$(prop NRestarts)" = "$1" ] &&
      [ "$(http http://127.0.0.1:7072/ready)" = 200 ]; then
      return 0
    fi
    sleep 0.2
  done
  fail "not active and ready (restarts: $(prop NRestarts), want $1; state $(prop ActiveState)/$(prop SubState))"
}

wait_ready 0
[ "$(prop Type)" = notify ] || fail "not Type=notify"
[ "$(prop StatusText)" = serving ] || fail "status: $(prop StatusText)"
printf 'stored before the restarts' > "$work/object"
[ "$(http -X PUT --data-binary @"$work/object" http://127.0.0.1:7070/photos/boot)" = 201 ] || fail "PUT"
check_object() {
  [ "$(http http://127.0.0.1:7070/photos/boot)" = 200 ] && cmp -s "$work/body" "$work/object" ||
    fail "the object does not read back after $1"
}
echo "booted: podstore.service active, READY=1 sent (status \"serving\"), serving data"

# systemctl reload: the node reads its file again (SIGHUP through ExecReload) and keeps serving.
main_pid=$(prop MainPID)
inside systemctl reload podstore.service || fail "systemctl reload failed"
for _ in $(seq 50); do
  inside journalctl -u podstore --no-pager | grep -c "configuration reloaded" >/dev/null && break
  sleep 0.2
done
inside journalctl -u podstore --no-pager | grep -c "configuration reloaded" >/dev/null || fail "no reload in the journal"
[ "$(prop MainPID)" = "$main_pid" ] && [ "$(prop ActiveState)" = active ] || fail "the reload restarted or stopped the node"
check_object "a reload"
echo "reload: configuration read again, same process, serving"

# $1 signal, $2 restarts expected after it, $3 what killed the node (for messages).
expect_restart() {
  local pid; pid=$(prop MainPID)
  inside systemctl kill --kill-whom=main --signal="$1" podstore.service
  wait_ready "$2"
  [ "$(prop MainPID)" != "$pid" ] || fail "same main PID after $3"
  check_object "$3"
}
expect_restart SIGKILL 1 "a SIGKILL"
echo "SIGKILL: restarted (NRestarts 1), object intact"
expect_restart SIGSTOP 2 "the watchdog's kill"
# (grep -c reads all of the journal: grep -q would stop early, and journalctl's SIGPIPE fail the
# pipeline under pipefail.)
inside journalctl -u podstore --no-pager | grep -c "Watchdog timeout" >/dev/null || fail "no watchdog timeout in the journal"
echo "SIGSTOP: the watchdog killed the hung node and it restarted (NRestarts 2), object intact"

inside systemctl stop podstore.service
[ "$(prop ActiveState)" = inactive ] || fail "did not stop: $(prop ActiveState)"
[ "$(prop ExecMainStatus)" = 0 ] || fail "stopped with status $(prop ExecMainStatus) (want a clean drain, 0)"
echo "stop: drained and exited 0"
kill -TERM "$nspawn_pid"   # the container shuts down in order
for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
