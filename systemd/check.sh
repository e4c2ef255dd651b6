#!/usr/bin/env bash
# Checks the units with the real tools: `systemd-analyze verify` must print nothing for
# every unit, `systemd-analyze security --offline=true` must score podstore.service 2.0 or
# better, and sysusers/tmpfiles entries must apply to an empty root.
#
#   systemd/check.sh [BINDIR]   (BINDIR: where podstore and podstore-tune are; default
#                                target/release, built if missing)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bindir=${1:-$top/target/release}
if [ ! -x "$bindir/podstore" ] || [ ! -x "$bindir/podstore-tune" ]; then
  (cd "$top" && cargo build --release --locked -q -p podstore-net -p podstore-tuning)
fi
command -v systemd-analyze >/dev/null || { echo "systemd/check.sh: systemd-analyze is not installed"; exit 1; }
work=$(mktemp -d /tmp/podstore-units.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The units as installed, but naming the binaries where they are (verify checks they exist).
for u in podstore.service podstore-tune.service; do
  sed "s|/usr/bin/|$bindir/|g" "$top/systemd/$u" > "$work/$u"
done
out=$(cd "$work" && systemd-analyze verify --man=no podstore.service podstore-tune.service 2>&1) || true
if [ -n "$out" ]; then
  echo "systemd-analyze verify:"; echo "$out"; exit 1
fi
echo "systemd-analyze verify: no findings (podstore.service, podstore-tune.service)"

sec=$(cd "$work" && systemd-analyze security --offline=true --no-pager podstore.service 2>&1 || true)
score=$(echo "$sec" | sed -n 's/.*Overall exposure level for podstore.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "$sec"; echo "no exposure score"; exit 1; }
python3 -c "import sys; sys.exit(0 if float('$score') <= 2.0 else 1)" || {
  echo "$sec"; echo "podstore.service exposure $score: above 2.0"; exit 1; }
echo "systemd-analyze security: podstore.service exposure $score (at most 2.0)"

root="$work/root"; mkdir -p "$root/etc" "$root/srv" "$root/var/lib"
touch "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow"
systemd-sysusers --root="$root" "$top/systemd/podstore.sysusers" >/dev/null 2>&1
grep -q '^podstore:x:[0-9]*:[0-9]*:.*:/usr/sbin/nologin$' "$root/etc/passwd" || {
  echo "sysusers did not create the podstore user"; cat "$root/etc/passwd"; exit 1; }
systemd-tmpfiles --create --root="$root" "$top/systemd/podstore.tmpfiles"
[ "$(stat -c '%a %u' "$root/srv/podstore")" = "750 $(awk -F: '$1=="podstore"{print $3}' "$root/etc/passwd")" ] || {
  echo "tmpfiles: /srv/podstore is not 0750 podstore"; stat "$root/srv/podstore"; exit 1; }
echo "sysusers and tmpfiles: the podstore user and /srv/podstore (0750) created in an empty root"

# udev rules, applied for real (root, udevadm): `udevadm test` on loop devices of our own,
# one labelled podstore-* (gets the settings) and one labelled otherwise (keeps its own).
if [ "$(id -u)" = 0 ] && command -v udevadm >/dev/null && command -v mkfs.xfs >/dev/null; then
  rules=/run/udev/rules.d/60-podstore.rules
  mkdir -p /run/udev/rules.d
  [ ! -e "$rules" ] || { echo "$rules exists already: not ours to replace"; exit 1; }
  cp "$top/systemd/60-podstore.rules" "$rules"
  devs=()
  cleanup_udev() {
    rm -f "$rules"
    for d in "${devs[@]}"; do losetup -d "$d" 2>/dev/null || true; done
  }
  trap 'cleanup_udev; rm -rf "$work"' EXIT
  probe() { # label -> $work/<label>.q: "read_ahead_kb scheduler nr_requests rotational" after
    # udevadm test (not called in a subshell: the device must be recorded for the clean-up)
    truncate -s 300M "$work/$1.img"
    local d; d=$(losetup -f --show --direct-io=on "$work/$1.img"); devs+=("$d")
    mkfs.xfs -q -f -L "$1" "$d"
    local q=/sys/block/$(basename "$d")/queue
    echo 128 > "$q/read_ahead_kb"
    udevadm test --action=add "/sys/class/block/$(basename "$d")" >"$work/udev-$1.log" 2>&1
    local sched; sched=$(sed 's/.*\[\(.*\)\].*/\1/' "$q/scheduler")
    echo "$(cat "$q/read_ahead_kb") $sched $(cat "$q/nr_requests") $(cat "$q/rotational")" > "$work/$1.q"
  }
  probe podstore-t1; read ra sched nr rot < "$work/podstore-t1.q"
  if [ "$rot" = 1 ]; then want="0 mq-deadline 256"; else want="0 none $nr"; fi
  [ "$ra $sched $nr" = "$want" ] || { cat "$work/udev-podstore-t1.log" | tail -20; echo "udev: a podstore disk got '$ra $sched $nr', want '$want'"; exit 1; }
  probe other-t2; read ra _ _ _ < "$work/other-t2.q"
  [ "$ra" = 128 ] || { echo "udev: a disk not labelled podstore was changed (read_ahead_kb $ra)"; exit 1; }
  echo "udev rules: a podstore-labelled disk gets read_ahead_kb 0, $sched$([ "$rot" = 1 ] && echo ", nr_requests 256"); another disk is left alone"
else
  echo "udev rules: not applied here (needs root, udevadm and mkfs.xfs)"
fi
