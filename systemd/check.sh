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

# udev rules: parsed by udevadm on a device of its own where udev can run (root, a loop
# device); elsewhere only their syntax is checked by udevadm's own rule parser when present.
if command -v udevadm >/dev/null && udevadm verify --help >/dev/null 2>&1; then
  udevadm verify "$top/systemd/60-podstore.rules"
  echo "udevadm verify: 60-podstore.rules"
fi
