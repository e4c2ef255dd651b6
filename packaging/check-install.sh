#!/usr/bin/env bash
# Installs the Debian package into a fresh Debian root (debootstrap: minbase plus systemd)
# and checks what lands where: files, the conffile, the user, /srv/podstore, the units
# enabled but the node not started until its config names disks, `systemd-analyze verify`
# of the installed units inside that root, then removal and purge.
#
#   packaging/check-install.sh [DEB]   (root; needs debootstrap; builds the package if no DEB)
# PODSTORE_DEBOOTSTRAP_CACHE=DIR keeps the pristine root between runs (default: made anew).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "check-install: needs root (chroot)"; exit 1; }
command -v debootstrap >/dev/null || { echo "check-install: debootstrap is not installed"; exit 1; }
deb=${1:-}
if [ -z "$deb" ]; then deb=$("$top/packaging/build-deb.sh" | tail -1); fi
work=$(mktemp -d /tmp/podstore-pkg.XXXXXX)
trap 'umount "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
. "$top/packaging/fresh-root.sh"
fresh_root "$work" "$deb"
in_root() { chroot "$root" "$@"; }
fail() { echo "check-install: $*" >&2; exit 1; }

for f in /usr/bin/podstore /usr/bin/podstore-tune /etc/podstore/podstore.toml \
  /usr/lib/systemd/system/podstore.service /usr/lib/systemd/system/podstore-tune.service \
  /usr/lib/sysusers.d/podstore.conf /usr/lib/tmpfiles.d/podstore.conf /usr/lib/udev/rules.d/60-podstore.rules \
  /usr/share/podstore/nginx/podstore.conf /usr/share/podstore/prometheus/podstore-alerts.yml \
  /usr/share/podstore/grafana/podstore-node.json /usr/share/doc/podstore/README.md; do
  in_root dpkg -S "$f" >/dev/null 2>&1 || fail "$f is not in the package's file list"
  [ -e "$root$f" ] || fail "$f did not land"
done
# The documentation's links resolve inside the package (every relative link of every page).
python3 "$top/packaging/check-doc-links.py" "$root/usr/share/doc/podstore" || fail "a link in the packaged docs does not resolve"
in_root dpkg-query -W -f='${Conffiles}\n' podstore | grep -c '/etc/podstore/podstore.toml' >/dev/null || fail "the config is not a conffile"
in_root getent passwd podstore | grep -c ':/var/lib/podstore:/usr/sbin/nologin$' >/dev/null || fail "no podstore system user"
[ "$(in_root stat -c '%a %U %G' /srv/podstore)" = "750 podstore podstore" ] || fail "/srv/podstore: $(in_root stat -c '%a %U %G' /srv/podstore)"
[ "$(in_root stat -c '%a %U %G' /etc/podstore/podstore.toml)" = "640 root podstore" ] || fail "the config is not 0640 root:podstore"
for u in podstore.service podstore-tune.service; do
  [ -L "$root/etc/systemd/system/multi-user.target.wants/$u" ] || fail "$u is not enabled"
done
set +e; in_root /usr/bin/podstore check-config --require-disks /etc/podstore/podstore.toml 2>/dev/null; c=$?; set -e
[ $c = 1 ] || fail "with the config as shipped the node's start condition says $c (want 1: not configured, skip)"
in_root /usr/bin/podstore-tune check >/dev/null || fail "podstore-tune check does not run in the root"
out=$(in_root systemd-analyze verify podstore.service podstore-tune.service 2>&1) || true
[ -z "$out" ] || { echo "$out"; fail "systemd-analyze verify of the installed units"; }
echo "installed into a fresh Debian root: files, conffile, user, /srv/podstore (0750), units enabled, node waiting for disks, units verified"

in_root dpkg -r podstore >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -r failed"; }
[ -e "$root/etc/podstore/podstore.toml" ] || fail "remove deleted the conffile (only purge may)"
[ ! -e "$root/usr/bin/podstore" ] || fail "remove left the binary"
in_root dpkg -P podstore >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -P failed"; }
[ ! -e "$root/etc/podstore/podstore.toml" ] || fail "purge left the conffile"
[ ! -L "$root/etc/systemd/system/multi-user.target.wants/podstore.service" ] || fail "purge left the unit enabled"
echo "removed (conffile kept) and purged (conffile and enablement gone)"
