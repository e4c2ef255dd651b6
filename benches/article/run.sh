#!/usr/bin/env bash
# The article's own benchmark: response time as concurrency grows, on objects of 2 to 30 MB,
# GET and PUT, from 1 to 256 clients; podstore directly, podstore through the shipped nginx
# configuration (deploy/nginx/podstore.conf), and nginx serving the same files (direct I/O with
# a thread pool, the setting for files this large); then once more with the link capped at
# 1 Gbit/s (tc tbf). For each level: throughput, p50, p99 and errors. The target is the
# article's: zero errors and no cliff (throughput never falls far below what fewer clients
# got, latency rises smoothly).
#
#   benches/article/run.sh [--quick]
#
# Root only: the servers run in a network namespace of their own and the clients (wrk,
# podstore-load) in another, joined by a veth pair (10.79.0.1 and .2), so the cap applies to
# every byte between them; the disk is XFS on a loop device of the bench's own. Needs nginx,
# wrk and tc (Debian: nginx, wrk, iproute2).
set -euo pipefail
quick=0
[ "${1:-}" = "--quick" ] && quick=1
top=$(cd "$(dirname "$0")/../.." && pwd)
results=${PODSTORE_BENCH_RESULTS:-$top/target/bench-results}
if [ -z "${PODSTORE_BENCH_REPORTING:-}" ]; then
  PODSTORE_BENCH_REPORTING=1 bash "$0" "$@" | python3 "$top/benches/report.py" article "$results" "peak MiB/s"
  status=${PIPESTATUS[0]}
  [ "$status" = 0 ] && python3 "$top/benches/article/curves.py" "$results/article.json" "$results/article-curves.svg"
  exit "$status"
fi
cd "$top"
[ "$(id -u)" = 0 ] || { echo "article-bench: run as root (network namespaces, a loop device, tc)"; exit 1; }
for t in nginx wrk tc; do command -v $t >/dev/null || { echo "article-bench: $t is not installed"; exit 1; }; done

if [ $quick = 1 ]; then
  OBJECTS=24; DUR=3; GET_LEVELS="1 4 16 64 256"; PUT_LEVELS="1 4 16 64"; CAP_LEVELS="1 4 16"
else
  OBJECTS=300; DUR=8; GET_LEVELS="1 2 4 8 16 32 64 128 256"; PUT_LEVELS="$GET_LEVELS"; CAP_LEVELS="$GET_LEVELS"
fi
SIZE_MIN=2000000; SIZE_MAX=30000000; CAP=1gbit; CAP_MIB_PER_S=119

cargo build --release --locked -q -p podstore-net -p podstore-benches
PODSTORE=$top/target/release/podstore
LOAD=$top/target/release/podstore-load

work=$(mktemp -d /tmp/podstore-articlebench.XXXXXX)
chmod 755 "$work"
ns_s=podstore-art-s-$$; ns_c=podstore-art-c-$$
dev=""; ps_pid=""; ng_pid=""
cleanup() {
  status=$?
  if [ $status != 0 ]; then
    echo "article-bench failed ($status); logs:" >&2
    tail -n 5 "$work/nginx/error.log" 1>&2 || true; tail -n 30 "$work/podstore.log" 1>&2 || true
  fi
  [ -n "$ps_pid" ] && kill "$ps_pid" 2>/dev/null || true
  [ -n "$ng_pid" ] && kill "$ng_pid" 2>/dev/null || true
  sleep 0.5
  ip netns del "$ns_s" 2>/dev/null || true
  ip netns del "$ns_c" 2>/dev/null || true
  if [ -n "$dev" ]; then umount "$work/mnt" 2>/dev/null || true; losetup -d "$dev" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

truncate -s 96G "$work/disk.img"
dev=$(losetup -f --show --direct-io=on "$work/disk.img")
mkfs.xfs -q -f "$dev"
mkdir -p "$work/mnt"; mount "$dev" "$work/mnt"
mnt=$work/mnt
mkdir -p "$mnt/podstore" "$mnt/www/bench" "$mnt/nginx-tmp" "$work/nginx"
chown -R nobody:nogroup "$mnt/www" "$mnt/nginx-tmp"

ip netns add "$ns_s"; ip netns add "$ns_c"
ip -n "$ns_s" link add eth0 type veth peer name eth0 netns "$ns_c"
ip -n "$ns_s" addr add 10.79.0.1/24 dev eth0; ip -n "$ns_c" addr add 10.79.0.2/24 dev eth0
for ns in "$ns_s" "$ns_c"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
S=10.79.0.1
in_s() { ip netns exec "$ns_s" "$@"; }
in_c() { ip netns exec "$ns_c" "$@"; }

cat > "$work/podstore.toml" <<TOML
node_id = "article"
[listen]
data = "$S:7070"
admin = "127.0.0.1:7072"
[[disks]]
id = 0
path = "$mnt/podstore"
tier = "capacity"
require_mount_point = false
TOML
# The shipped proxy configuration, its upstream and listen lines pointed at this namespace.
sed -e "s|^\(\s*\)server .*# podstore-upstream$|\1server $S:7070 max_fails=2 fail_timeout=5s;|" \
    -e "s|^\(\s*\)listen .*# podstore-listen$|\1listen $S:8080;|" deploy/nginx/podstore.conf > "$work/nginx/proxy.conf"
# Two upstream lines became the same server: keep one.
awk '!(/server 10.79.0.1:7070/ && seen++)' "$work/nginx/proxy.conf" > "$work/nginx/proxy.conf.1" && mv "$work/nginx/proxy.conf.1" "$work/nginx/proxy.conf"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes $(nproc);
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $mnt/nginx-tmp;
  client_max_body_size 0;
  include $work/nginx/proxy.conf;
  # nginx serving the same objects from the same disk: direct I/O with a thread pool, 1 MiB
  # output buffers, every object's descriptor cached (benches/README.md says why); reads
  # aligned to the filesystem's 4 KiB blocks (the default 512 makes the last, partial block of
  # an object whose size is no multiple of 4 KiB fail with EINVAL)
  server {
    listen $S:8081;
    root $mnt/www;
    open_file_cache max=10000 inactive=600s; open_file_cache_valid 600s;
    directio 4k; directio_alignment 4k; aio threads; output_buffers 2 1m; sendfile off;
    location / { dav_methods PUT; create_full_put_path on; }
  }
}
NGINX
# Started directly (`ip netns exec` becomes the server: the PID is the server's), their output
# away from the pipe to the report.
ip netns exec "$ns_s" "$PODSTORE" serve --config "$work/podstore.toml" --insecure >/dev/null 2>"$work/podstore.log" & ps_pid=$!
ip netns exec "$ns_s" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" >/dev/null 2>&1 & ng_pid=$!
for _ in $(seq 100); do in_c curl -sf "http://$S:7070/_/ready" >/dev/null && break; sleep 0.1; done
in_c curl -sf "http://$S:7070/_/ready" >/dev/null
for _ in $(seq 100); do in_c curl -s -o /dev/null "http://$S:8081/" && break; sleep 0.1; done

echo "loading: $OBJECTS objects of $SIZE_MIN to $SIZE_MAX bytes into podstore and nginx" >&2
for port in 7070 8081; do
  in_c "$LOAD" --addr $S:$port --prefix /bench/a --count $OBJECTS --size $SIZE_MIN --size-max $SIZE_MAX --conns 8 >/dev/null
done
total_mb=$(du -sm "$mnt/www/bench" | cut -f1)
sync; echo 3 > /proc/sys/vm/drop_caches

# One level: "MiB/s req/s p50_ms p99_ms errors"
# A level lasts DUR seconds, on the capped link at least long enough for every client to get
# two objects of the mean size through it.
capped=0
dur_for() { # clients
  local d=$DUR need
  if [ $capped = 1 ]; then need=$(( 2 * $1 * (SIZE_MIN + SIZE_MAX) / 2 / 1048576 / CAP_MIB_PER_S + 1 )); [ $need -gt $d ] && d=$need; fi
  echo $d
}
get_point() { # port clients
  in_c wrk -t "$(( $2 < 2 ? 1 : 2 ))" -c "$2" -d "$(dur_for "$2")s" --timeout 120s --latency -s "$top/benches/http/get.lua" "http://$S:$1" -- /bench/a $OBJECTS > "$work/wrk.txt" 2>&1 || true
  { python3 "$top/benches/http/wrk_summary.py" "$work/wrk.txt" --errors || true; } | awk '{print $3, $1, $4, $2, $5}'
}
put_point() { # port clients round
  in_c "$LOAD" --addr $S:$1 --prefix "/bench/put-$3-$2" --count "$2" --size $SIZE_MIN --size-max $SIZE_MAX --conns "$2" 2>/dev/null |
    sed -n 's/.*puts=\([0-9]*\) failures=\([0-9]*\) seconds=\([0-9.]*\) req_per_s=\([0-9.]*\) mib_per_s=\([0-9.]*\) p50_ms=\([0-9.]*\) p99_ms=\([0-9.]*\).*/\5 \4 \6 \7 \2/p' || true
}
cap() { # on|off: the link between the namespaces, both ways
  capped=0; [ "$1" = on ] && capped=1
  for ns in "$ns_s" "$ns_c"; do
    tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
    [ "$1" = on ] && tc -n "$ns" qdisc add dev eth0 root tbf rate $CAP burst 1mb latency 100ms
  done
  return 0
}

points="$work/points.txt"; : > "$points"
sweep() { # label op port levels round
  local c
  for c in $4; do
    local p; if [ "$2" = GET ]; then p=$(get_point "$3" "$c"); else p=$(put_point "$3" "$c" "$5"); fi
    [ -n "$p" ] || p="0 0 0 0 $c"  # a level that produced no figures counts every client as an error
    echo "$1|$c|$p" >> "$points"
    echo "  $1, $c clients: $p (MiB/s req/s p50 p99 errors)" >&2
  done
}
cap off
sweep "GET podstore" GET 7070 "$GET_LEVELS" 0
sweep "GET podstore through nginx" GET 8080 "$GET_LEVELS" 0
sweep "GET nginx" GET 8081 "$GET_LEVELS" 0
sweep "PUT podstore" PUT 7070 "$PUT_LEVELS" 0
sweep "PUT podstore through nginx" PUT 8080 "$PUT_LEVELS" 1
sweep "PUT nginx (WebDAV, no fsync)" PUT 8081 "$PUT_LEVELS" 0
cap on
sweep "GET podstore, $CAP link" GET 7070 "$CAP_LEVELS" 0
sweep "GET nginx, $CAP link" GET 8081 "$CAP_LEVELS" 0
sweep "PUT podstore, $CAP link" PUT 7070 "$CAP_LEVELS" 2
sweep "PUT nginx (WebDAV, no fsync), $CAP link" PUT 8081 "$CAP_LEVELS" 2
cap off
# What nginx said about its errors, if anything (to the progress output).
[ -s "$work/nginx/error.log" ] && { echo "nginx's error log, last lines:" >&2; tail -n 5 "$work/nginx/error.log" | cut -c1-300 >&2; }

echo "# The article's benchmark: 2-30 MB objects, 1 to 256 clients ($(nproc) cores, $(uname -r))"
echo "mode: $([ $quick = 1 ] && echo quick || echo full); $OBJECTS objects of $SIZE_MIN-$SIZE_MAX bytes ($total_mb MB) on XFS on a loop device (--direct-io=on); servers and clients in two network namespaces joined by a veth pair; $DUR s per GET level (on the capped link long enough for two objects per client), one PUT per client per PUT level; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') with directio 4k (aligned to the disk's 4 KiB blocks), aio threads, output_buffers 2 1m, open_file_cache; the proxy is deploy/nginx/podstore.conf; the capped runs put tc tbf rate $CAP on both ends of the link."
echo
python3 - "$points" <<'PY'
import sys
runs = {}
for line in open(sys.argv[1]):
    label, c, p = line.rstrip('\n').split('|')
    mib, rps, p50, p99, err = (float(x) for x in p.split())
    runs.setdefault(label, []).append((int(c), mib, rps, p50, p99, int(err)))
print("| run | errors | peak MiB/s | MiB/s at most clients | p50 at 1 client (ms) | p99 at most clients (ms) | worst fall below an earlier level | target | |")
print("|---|---|---|---|---|---|---|---|---|")
for label, pts in runs.items():
    errors = sum(p[5] for p in pts)
    peak = max(p[1] for p in pts)
    # A cliff: throughput at a level well below the best of the levels with fewer clients.
    fall = max((1 - p[1] / max(q[1] for q in pts[:i])) for i, p in enumerate(pts) if i > 0) if len(pts) > 1 else 0
    fall = max(fall, 0.0)
    ok = errors == 0 and fall <= 0.25
    print(f"| {label} | {errors} | {peak:.0f} | {pts[-1][1]:.0f} | {pts[0][3]:.1f} | {pts[-1][4]:.0f} | {fall * 100:.0f}% | zero errors, no fall over 25% | {'meets' if ok else 'below'} |")
print()
print("Every level (clients: MiB/s, req/s, p50 ms, p99 ms, errors):")
print()
print("| run | clients | MiB/s | req/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|---|")
for label, pts in runs.items():
    for c, mib, rps, p50, p99, err in pts:
        print(f"| {label} | {c} | {mib:.0f} | {rps:.1f} | {p50:.1f} | {p99:.0f} | {err} |")
PY
