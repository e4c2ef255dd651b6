# Sourced by check-install.sh and boot-test.sh: a fresh Debian root with the package in it.
#
#   fresh_root WORK DEB   sets $root to WORK/root: a copy of a pristine bookworm root
#                         (debootstrap, minbase + systemd; kept in $PODSTORE_DEBOOTSTRAP_CACHE
#                         when set, else made in WORK) with DEB installed by dpkg inside it,
#                         /proc mounted (the caller's clean-up unmounts WORK/root/proc).
fresh_root() {
  local work=$1 deb=$2
  local base=${PODSTORE_DEBOOTSTRAP_CACHE:-$work/base}
  if [ ! -x "$base/usr/bin/systemctl" ]; then
    echo "debootstrap: bookworm, minbase + systemd, into $base" >&2
    debootstrap --variant=minbase --include=systemd,systemd-sysv,adduser bookworm "$base" \
      http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; return 1; }
  fi
  root="$work/root"
  cp -a "$base/." "$root/"
  cp "$deb" "$root/tmp/podstore.deb"
  mount -t proc proc "$root/proc"   # as on a running system (systemd-tmpfiles wants it)
  chroot "$root" dpkg -i /tmp/podstore.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; echo "dpkg -i failed"; return 1; }
}
