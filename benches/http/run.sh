#!/usr/bin/env bash
# podstore beside nginx on the same disk, in one run: GET of 4 KiB, 1 MiB and 16 MiB objects
# (wrk, 64 keep-alive connections), durable PUT of 1 MiB and 4 KiB objects (podstore-load)
# against nginx's WebDAV PUT (which does not even fsync), and podstore's memory while 200
# clients each stream a 64 MiB PUT at once. Prints a table of ratios, with each server's CPU
# seconds per GiB served and per 10^5 requests.
#
# nginx runs as the people who serve large files from direct I/O configure it, in three
# variants on the same files (their settings are printed with the results): direct I/O with a
# thread pool (aio threads; directio 4k; output_buffers 2 1m; sendfile off), direct I/O read
# synchronously (the same without aio: for small files a synchronous read beats the hand-off to
# a thread), and the page cache (sendfile on; tcp_nopush on) as the upper reference. All three
# keep an open_file_cache sized to the object count (or to the file limit, if lower). podstore's ratio is against the better of
# the two direct-I/O variants for each size, and against the page cache where the target says.
#
#   benches/http/run.sh [--quick]
#
# As root it measures on an XFS filesystem on a loop device of its own (losetup -f --show
# --direct-io=on, detached at the end); otherwise in a temp directory, and says so.
# Needs nginx, wrk and fio (Debian packages; .ci/run installs them).
#
# Before measuring, a checked read of every 4 KiB object on both servers (podstore-load --get):
# nginx's `directio` does not apply to files shorter than its output buffer (it turns O_DIRECT
# off for such a read, ngx_output_chain_align_file_buf, as strace shows: fcntl, pread, fcntl),
# so its small objects are served from the page cache whatever the configuration says; podstore
# keeps them in its RAM cache. Both are compared warm. Large GETs are also set beside what the
# disk itself reads at random (fio, O_DIRECT, the same sizes, best of several queue depths).
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
for t in nginx wrk fio; do command -v $t >/dev/null || { echo "http-bench: $t is not installed (apt-get install nginx wrk fio)"; exit 1; }; done

if [ $quick = 1 ]; then N4K=20000; N1M=400; N16M=24; DUR=4; PUT1M=300; PUT4K=10000; MEMCLIENTS=50; MEMSIZE=16777216
else N4K=100000; N1M=2000; N16M=160; DUR=10; PUT1M=1500; PUT4K=40000; MEMCLIENTS=200; MEMSIZE=67108864; fi

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
PS=$(port); PA=$(port); NG=$(port); NGS=$(port); NGP=$(port)
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
# The three nginx variants (see the top of this file), one server block each on the same root.
# The descriptor cache holds every object, unless this machine's file limit (which nginx can't
# raise past the hard limit) is lower: then as many as fit beside the connections.
FILES=$((N4K + N1M + N16M))
NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] && NOFILE=1048576
CACHE=$((FILES + 1000)); [ $CACHE -gt $((NOFILE - 6000)) ] && CACHE=$((NOFILE - 6000))
cat > "$work/nginx/variants.conf" <<NGINX
  # every variant: descriptors and sizes of the objects kept open (no open/stat per request)
  open_file_cache max=$CACHE inactive=600s;
  open_file_cache_valid 600s;
  open_file_cache_errors on;
  # direct I/O, read by the thread pool: the worker sends one 1 MiB buffer while the next is read
  server {
    listen 127.0.0.1:$NG;
    root $mnt/www;
    directio 4k; directio_alignment 4k; aio threads; output_buffers 2 1m; sendfile off;
    location / { dav_methods PUT; create_full_put_path on; }
  }
  # direct I/O, read synchronously by the worker (cheaper for small objects)
  server {
    listen 127.0.0.1:$NGS;
    root $mnt/www;
    directio 4k; directio_alignment 4k; output_buffers 2 1m; sendfile off;
  }
  # the page cache, sent with sendfile: the upper reference (memory, not the disk)
  server {
    listen 127.0.0.1:$NGP;
    root $mnt/www;
    sendfile on; tcp_nopush on;
  }
NGINX
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes $(nproc);
# room for the cache of open descriptors beside the connections
worker_rlimit_nofile $NOFILE;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $mnt/nginx-tmp;
  client_max_body_size 0;
$(cat "$work/nginx/variants.conf")
}
NGINX
"$PODSTORE" serve --config "$work/podstore.toml" 2>"$work/podstore.log" & ps_pid=$!
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & ng_pid=$!
for i in $(seq 100); do curl -sf "http://127.0.0.1:$PS/_/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PS/_/ready" >/dev/null || { cat "$work/podstore.log"; exit 1; }

val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
ticks() { # CPU clock ticks (user + system) of the given processes, threads included
  local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t
}
hz=$(getconf CLK_TCK)
server_pids() { if [ "$1" = "$PS" ]; then echo "$ps_pid"; else echo "$ng_pid $(pgrep -P "$ng_pid" | xargs)"; fi; }
# GETs of random objects PREFIX-0..COUNT-1 from the server on PORT for DUR seconds. Prints
# "req_per_s p99_ms mib_per_s p50_ms cpu_s_per_GiB cpu_s_per_1e5_requests" (the server's own
# CPU time over the run).
wrk_get() { # port prefix count
  local pids t0 t1; pids=$(server_pids "$1"); t0=$(ticks $pids)
  wrk -t2 -c64 -d${DUR}s --latency -s "$top/benches/http/get.lua" "http://127.0.0.1:$1" -- "$2" "$3" > "$work/wrk.txt"
  t1=$(ticks $pids)
  python3 "$top/benches/http/wrk_summary.py" "$work/wrk.txt" --totals | python3 -c "
import sys
rps, p99, mib, p50, n, b = sys.stdin.read().split()
cpu = ($t1 - $t0) / $hz
print(rps, p99, mib, p50, f'{cpu / (float(b) / 2**30):.2f}', f'{cpu / (float(n) / 1e5):.2f}')"
}

echo "loading: $N4K objects of 4 KiB, $N1M of 1 MiB and $N16M of 16 MiB into both servers" >&2
for target in "$PS" "$NG"; do
  "$LOAD" --addr 127.0.0.1:$target --prefix /bench/s --count $N4K --size 4096 --conns 64 >/dev/null
  "$LOAD" --addr 127.0.0.1:$target --prefix /bench/m --count $N1M --size 1048576 --conns 16 >/dev/null
  "$LOAD" --addr 127.0.0.1:$target --prefix /bench/l --count $N16M --size 16777216 --conns 8 >/dev/null
done
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
echo "warming: a checked read of every 4 KiB object from both servers" >&2
for target in "$PS" "$NGS"; do
  "$LOAD" --addr 127.0.0.1:$target --prefix /bench/s --count $N4K --size 4096 --conns 64 --get >/dev/null
done

# Each size: podstore, then nginx reading with direct I/O (thread pool, then synchronously);
# the better nginx variant is the one compared. The page-cache variant runs last, once the
# files were read into the cache (a pass of cat), and is compared where the target says.
declare -A R
for size in s m l; do
  case $size in s) n=$N4K ;; m) n=$N1M ;; l) n=$N16M ;; esac
  R[ps$size]=$(wrk_get "$PS" /bench/$size $n)
  R[aio$size]=$(wrk_get "$NG" /bench/$size $n)
  R[sync$size]=$(wrk_get "$NGS" /bench/$size $n)
done
# What the disk reads at random by itself, for the large sizes: fio with O_DIRECT on a file of
# the same filesystem, best of queue depths 1, 4 and 16 (MiB/s and the depth).
FIOMIB=$N1M; [ $FIOMIB -gt 2000 ] && FIOMIB=2000
FIOSEC=$([ $quick = 1 ] && echo 2 || echo 5)
fio_limit() { # block size
  local best=0 qd=0 d bw
  for d in 1 4 16; do
    bw=$(fio --name=limit --filename="$mnt/fio.dat" --size=${FIOMIB}M --rw=randread --bs="$1" --direct=1 \
      --ioengine=io_uring --iodepth=$d --runtime=$FIOSEC --time_based --output-format=json 2>/dev/null |
      python3 -c 'import json,sys; print(int(json.load(sys.stdin)["jobs"][0]["read"]["bw"] / 1024))')
    [ "$bw" -gt "$best" ] && { best=$bw; qd=$d; }
  done
  echo "$best $qd"
}
fio --name=fill --filename="$mnt/fio.dat" --size=${FIOMIB}M --rw=write --bs=1M --direct=1 --output-format=terse >/dev/null
R[fiom]=$(fio_limit 1M)
R[fiol]=$(fio_limit 16M)
rm -f "$mnt/fio.dat"
find "$mnt/www/bench" -type f -exec cat {} + > /dev/null
for size in s m l; do
  case $size in s) n=$N4K ;; m) n=$N1M ;; l) n=$N16M ;; esac
  R[pc$size]=$(wrk_get "$NGP" /bench/$size $n)
done
field() { echo "${R[$1]}" | cut -d' ' -f"$2"; }  # key, field number (1 req/s, 2 p99, 3 MiB/s, 5 CPU/GiB, 6 CPU/1e5)
# The better direct-I/O nginx for a size: by req/s for 4 KiB, by MiB/s for the others.
best() { local f=3; [ "$1" = s ] && f=1
  if python3 -c "import sys; sys.exit(0 if $(field aio$1 $f) >= $(field sync$1 $f) else 1)"; then echo aio$1; else echo sync$1; fi; }
variant() { case $1 in aio*) echo "direct I/O, aio threads" ;; sync*) echo "direct I/O, synchronous reads" ;; pc*) echo "page cache, sendfile" ;; esac; }

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
curl -s "http://127.0.0.1:$PA/metrics" > "$work/metrics.txt"
index=$(awk '/^podstore_index_memory_bytes/ {s+=$2} END {print int(s/1024)}' "$work/metrics.txt")
# The RAM cache holds what the GET phases put in it (its size is ram_cache.size_bytes, memory the
# operator gave it): counted beside the target, not against it.
cache=$(awk '/^podstore_ram_cache_bytes/ {s+=$2} END {print int(s/1024)}' "$work/metrics.txt")

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
verdict() { python3 -c "print('meets' if $1 >= $2 else 'below')"; }
cpu() { echo "$(field $1 5) s/GiB, $(field $1 6) s/10^5 req"; }
echo "# podstore beside nginx ($(nproc) cores, $(uname -r), $where)"
echo "mode: $([ $quick = 1 ] && echo quick || echo full); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $(nproc) workers, WebDAV PUT; its variants, as configured in this run (the descriptor cache holds $CACHE of the $FILES objects: this machine's file limit is $NOFILE):"
echo
echo '```nginx'
cat "$work/nginx/variants.conf"
echo '```'
echo
echo "CPU: each server's own user and system time over the run (nginx: master and workers, thread pools included), per GiB sent and per 10^5 requests; wrk shares the same $(nproc) cores."
echo
echo "| workload | podstore | podstore CPU | nginx | nginx CPU | ratio | target | |"
echo "|---|---|---|---|---|---|---|---|"
b=$(best s)
for k in aios syncs; do
  echo "| GET 4 KiB from nginx, $(variant $k) | - | - | $(field $k 1) req/s, p99 $(field $k 2) ms | $(cpu $k) | - | - | $([ $k = $b ] && echo compared) |"
done
r=$(ratio $(field pss 1) $(field $b 1)); echo "| GET 4 KiB, random over $N4K objects, 64 connections | $(field pss 1) req/s | $(cpu pss) | $(field $b 1) req/s ($(variant $b)) | $(cpu $b) | $r | at least 1.0 | $(verdict $r 1.0) |"
r=$(ratio $(field $b 2) $(field pss 2)); echo "| GET 4 KiB p99 latency | $(field pss 2) ms | - | $(field $b 2) ms | - | $r (nginx/podstore) | at least 1.0 | $(verdict $r 1.0) |"
r=$(ratio $(field pss 1) $(field pcs 1)); echo "| GET 4 KiB against nginx from the page cache | $(field pss 1) req/s | $(cpu pss) | $(field pcs 1) req/s (page cache) | $(cpu pcs) | $r | - | |"
for size in m l; do
  case $size in m) what="1 MiB, random over $N1M objects" ;; l) what="16 MiB, random over $N16M objects" ;; esac
  b=$(best $size)
  for k in aio$size sync$size; do
    echo "| GET ${what%%,*} from nginx, $(variant $k) | - | - | $(field $k 3) MiB/s | $(cpu $k) | - | - | $([ $k = $b ] && echo compared) |"
  done
  r=$(ratio $(field ps$size 3) $(field $b 3)); echo "| GET $what | $(field ps$size 3) MiB/s | $(cpu ps$size) | $(field $b 3) MiB/s ($(variant $b)) | $(cpu $b) | $r | at least 1.0 | $(verdict $r 1.0) |"
  r=$(ratio $(field ps$size 3) $(field fio$size 1)); echo "| GET ${what%%,*} against the disk's random-read limit (fio, O_DIRECT, best queue depth: $(field fio$size 2)) | $(field ps$size 3) MiB/s | $(cpu ps$size) | $(field fio$size 1) MiB/s (fio) | - | $r | - | |"
  r=$(ratio $(field ps$size 3) $(field pc$size 3)); echo "| GET ${what%%,*} against nginx from the page cache | $(field ps$size 3) MiB/s | $(cpu ps$size) | $(field pc$size 3) MiB/s (page cache) | $(cpu pc$size) | $r | at least 0.8 | $(verdict $r 0.8) |"
done
r=$(ratio $psburst $ngburst); echo "| durable PUT 1 MiB, 16 connections, burst of $PUT1M MiB | $psburst MiB/s | - | $ngburst MiB/s (no fsync: page cache) | - | $r | - | |"
r=$(ratio $psput1 $ngput1); echo "| durable PUT 1 MiB, 16 connections, $SUST1M MiB (past the dirty limit of $((dirty_kib/1024)) MiB) | $psput1 MiB/s | - | $ngput1 MiB/s (no fsync) | - | $r | at least 1.0 | $(verdict $r 1.0) |"
r=$(ratio $psput4 $ngput4); echo "| durable PUT 4 KiB, 64 connections | $psput4 req/s | - | $ngput4 req/s (no fsync) | - | $r | at least 1.0 | $(verdict $r 1.0) |"
lim=$((512*1024 + index + cache))
echo "| RSS peak, $MEMCLIENTS clients each streaming a $((MEMSIZE>>20)) MiB PUT ($((cache/1024)) MiB of it the RAM cache's objects) | $((peak/1024)) MiB | - | - | - | - | under $((lim/1024)) MiB (512 MiB + index + RAM cache) | $([ $peak -lt $lim ] && echo meets || echo above) |"
