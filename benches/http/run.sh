#!/usr/bin/env bash
# podstore beside nginx on the same disk, in one run: GET of 4 KiB and 1 MiB objects (wrk, 64
# keep-alive connections), durable PUT of 1 MiB and 4 KiB objects (podstore-load) against
# nginx's WebDAV PUT (which does not even fsync), and podstore's memory while 200 clients each
# stream a 64 MiB PUT at once. Prints a table of ratios.
#
#   benches/http/run.sh [--quick]
#
# As root it measures on an XFS filesystem on a loop device of its own (losetup -f --show
# --direct-io=on, detached at the end); otherwise in a temp directory, and says so.
# Needs nginx and wrk (Debian packages; .ci/run installs them).
set -euo pipefail
quick=0
[ "${1:-}" = "--quick" ] && quick=1
top=$(cd "$(dirname "$0")/../.." && pwd)
# The results also as JSON and an SVG chart of the ratios (benches/report.py), in
# $PODSTORE_BENCH_RESULTS (default target/bench-results): the script runs itself through it.
if [ -z "${PODSTORE_BENCH_REPORTING:-}" ]; then
  PODSTORE_BENCH_REPORTING=1 bash "$0" "$@" | python3 "$top/benches/report.py" http "${PODSTORE_BENCH_RESULTS:-$top/target/bench-results}"
  exit "${PIPESTATUS[0]}"
fi
cd "$top"
for t in nginx wrk; do command -v $t >/dev/null || { echo "http-bench: $t is not installed (apt-get install nginx wrk)"; exit 1; }; done

if [ $quick = 1 ]; then N4K=20000; N1M=400; DUR=4; PUT1M=300; PUT4K=10000; MEMCLIENTS=50; MEMSIZE=16777216
else N4K=100000; N1M=2000; DUR=10; PUT1M=1500; PUT4K=40000; MEMCLIENTS=200; MEMSIZE=67108864; fi

cargo build --release --locked -q -p podstore-net -p podstore-benches
PODSTORE=$top/target/release/podstore
LOAD=$top/target/release/podstore-load

work=$(mktemp -d /tmp/podstore-httpbench.XXXXXX)
chmod 755 "$work"  # nginx workers (nobody) must reach the mount below it
dev=""; ps_pid=""; ng_pid=""
cleanup() {
  status=$?
  if [ $status != 0 ]; then
    echo "http-bench failed ($status); nginx and podstore logs:" >&2
    tail -n 5 "$work/nginx/error.log" 1>&2 || true; tail -n 40 "$work/podstore.log" 1>&2 || true; ls -la "$work/nginx" "$mnt" 1>&2 || true
  fi
  [ -n "$ps_pid" ] && kill "$ps_pid" 2>/dev/null && wait "$ps_pid" 2>/dev/null || true
  [ -n "$ng_pid" ] && kill "$ng_pid" 2>/dev/null || true
  sleep 0.5
  if [ -n "$dev" ]; then umount "$work/mnt" 2>/dev/null || true; losetup -d "$dev" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt"
where="a temp directory on $(df --output=source,fstype "$work" | tail -1 | xargs) (not root: no loop device)"
if [ "$(id -u)" = 0 ]; then
  truncate -s 64G "$work/disk.img"
  dev=$(losetup -f --show --direct-io=on "$work/disk.img")
  mkfs.xfs -q -f "$dev"
  mount "$dev" "$work/mnt"
  where="XFS on loop device $dev (--direct-io=on, backed by $(df --output=source,fstype /tmp | tail -1 | xargs))"
fi
mnt=$work/mnt
mkdir -p "$mnt/podstore" "$mnt/www/bench" "$mnt/nginx-tmp" "$work/nginx"
# nginx workers run as nobody when started by root: give them their directories.
[ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$mnt/www" "$mnt/nginx-tmp"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PS=$(port); PA=$(port); NG=$(port)
cat > "$work/podstore.toml" <<TOML
node_id = "bench"
[listen]
data = "127.0.0.1:$PS"
admin = "127.0.0.1:$PA"
[[disks]]
id = 0
path = "$mnt/podstore"
tier = "capacity"
require_mount_point = false
TOML
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes $(nproc);
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $mnt/nginx-tmp;
  client_max_body_size 0;
  directio 512;
  server {
    listen 127.0.0.1:$NG;
    root $mnt/www;
    location / { dav_methods PUT; create_full_put_path on; }
  }
}
NGINX
"$PODSTORE" serve --config "$work/podstore.toml" 2>"$work/podstore.log" & ps_pid=$!
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & ng_pid=$!
for i in $(seq 100); do curl -sf "http://127.0.0.1:$PS/_/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PS/_/ready" >/dev/null || { cat "$work/podstore.log"; exit 1; }

val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
wrk_get() { # url prefix count -> "req_per_s p99_ms mib_per_s"
  wrk -t2 -c64 -d${DUR}s --latency -s "$top/benches/http/get.lua" "$1" -- "$2" "$3" > "$work/wrk.txt"
  python3 "$top/benches/http/wrk_summary.py" "$work/wrk.txt"
}

echo "loading: $N4K objects of 4 KiB and $N1M of 1 MiB into both servers" >&2
for target in "$PS" "$NG"; do
  "$LOAD" --addr 127.0.0.1:$target --prefix /bench/s --count $N4K --size 4096 --conns 64 >/dev/null
  "$LOAD" --addr 127.0.0.1:$target --prefix /bench/m --count $N1M --size 1048576 --conns 16 >/dev/null
done
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

read ps4 ps4p99 _ < <(wrk_get "http://127.0.0.1:$PS" /bench/s $N4K)
read ng4 ng4p99 _ < <(wrk_get "http://127.0.0.1:$NG" /bench/s $N4K)
read _ _ ps1m _ < <(wrk_get "http://127.0.0.1:$PS" /bench/m $N1M)
read _ _ ng1m _ < <(wrk_get "http://127.0.0.1:$NG" /bench/m $N1M)
# Durable PUTs. Each server starts from a clean page cache (sync), so neither pays for the
# other's writeback. nginx's PUT does not fsync: while what it has written fits under the
# kernel's dirty limit it runs at memory speed (the "burst" row), and only a volume well past
# that limit shows what it sustains on the disk (the row the target applies to).
dirty_kib=$(awk -v r="$(cat /proc/sys/vm/dirty_ratio)" '/MemAvailable/ {print int($2 * r / 100)}' /proc/meminfo)
db=$(cat /proc/sys/vm/dirty_bytes); [ "$db" -gt 0 ] && dirty_kib=$((db / 1024))
if [ $quick = 1 ]; then SUST1M=600; else SUST1M=$(( dirty_kib * 3 / 2 / 1024 )); [ $SUST1M -lt 3000 ] && SUST1M=3000; fi
put_mib() { sync; "$LOAD" --addr 127.0.0.1:$1 --prefix "$2" --count "$3" --size 1048576 --conns 16 | val mib_per_s; }
psburst=$(put_mib $PS /bench/p1 $PUT1M)
ngburst=$(put_mib $NG /bench/p1 $PUT1M)
psput1=$(put_mib $PS /bench/ps $SUST1M)
ngput1=$(put_mib $NG /bench/ps $SUST1M)
sync
psput4=$(sync; "$LOAD" --addr 127.0.0.1:$PS --prefix /bench/p4 --count $PUT4K --size 4096 --conns 64 | val req_per_s)
ngput4=$(sync; "$LOAD" --addr 127.0.0.1:$NG --prefix /bench/p4 --count $PUT4K --size 4096 --conns 64 | val req_per_s)

# Memory: the resident set's peak while many clients stream a large PUT each at once.
peak=0
( while kill -0 $ps_pid 2>/dev/null; do awk '/VmRSS/ {print $2}' /proc/$ps_pid/status; sleep 0.1; done ) > "$work/rss.txt" & sampler=$!
"$LOAD" --addr 127.0.0.1:$PS --prefix /bench/big --count $MEMCLIENTS --size $MEMSIZE --conns $MEMCLIENTS >/dev/null
kill $sampler 2>/dev/null || true
peak=$(sort -n "$work/rss.txt" | tail -1)
index=$(curl -s "http://127.0.0.1:$PA/metrics" | awk '/^podstore_index_memory_bytes/ {s+=$2} END {print int(s/1024)}')

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
verdict() { python3 -c "print('meets' if $1 >= $2 else 'below')"; }
echo "# podstore beside nginx ($(nproc) cores, $(uname -r), $where)"
echo "mode: $([ $quick = 1 ] && echo quick || echo full); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') with directio 512, WebDAV PUT"
echo
echo "| workload | podstore | nginx | ratio | target | |"
echo "|---|---|---|---|---|---|"
r=$(ratio $ps4 $ng4); echo "| GET 4 KiB, random over $N4K objects, 64 connections | $ps4 req/s | $ng4 req/s | $r | at least 1.0 | $(verdict $r 1.0) |"
r=$(ratio $ng4p99 $ps4p99); echo "| GET 4 KiB p99 latency | $ps4p99 ms | $ng4p99 ms | $r (nginx/podstore) | at least 1.0 | $(verdict $r 1.0) |"
r=$(ratio $ps1m $ng1m); echo "| GET 1 MiB, random over $N1M objects | $ps1m MiB/s | $ng1m MiB/s | $r | at least 1.0 | $(verdict $r 1.0) |"
r=$(ratio $psburst $ngburst); echo "| durable PUT 1 MiB, 16 connections, burst of $PUT1M MiB | $psburst MiB/s | $ngburst MiB/s (no fsync: page cache) | $r | - | |"
r=$(ratio $psput1 $ngput1); echo "| durable PUT 1 MiB, 16 connections, $SUST1M MiB (past the dirty limit of $((dirty_kib/1024)) MiB) | $psput1 MiB/s | $ngput1 MiB/s (no fsync) | $r | at least 1.0 | $(verdict $r 1.0) |"
r=$(ratio $psput4 $ngput4); echo "| durable PUT 4 KiB, 64 connections | $psput4 req/s | $ngput4 req/s (no fsync) | $r | at least 1.0 | $(verdict $r 1.0) |"
lim=$((512*1024 + index))
echo "| RSS peak, $MEMCLIENTS clients each streaming a $((MEMSIZE>>20)) MiB PUT | $((peak/1024)) MiB | - | - | under $((lim/1024)) MiB (512 MiB + index) | $([ $peak -lt $lim ] && echo meets || echo above) |"
