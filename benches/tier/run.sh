#!/usr/bin/env bash
# Tiering (issue 7): a skewed (Zipf) GET workload with steady PUTs, on a node with a fast
# device and two capacity devices, tiering on (the small device is the fast tier, RAM cache
# on) beside the same node and devices with tiering off (every device a capacity disk, no RAM
# cache), in one run. Reports GET throughput, p50 and p99, PUT throughput and p99, and the
# share of GETs each tier served. Target: GET p99 at least 3 times lower with tiering, and no
# loss of PUT throughput. Then the migration rate: a forced pass moving small objects from the
# fast device to the capped capacity devices, beside fio's sequential write rate on them.
#
#   benches/tier/run.sh [--quick]      (root: loop devices and a blkio cgroup)
#
# The devices: XFS on loop devices of our own (losetup -f --show --direct-io=on, detached at
# the end), sharing the machine's one disk. The two capacity devices are made slow the same
# way every run: the node runs in a blkio cgroup (v1) that caps each of them at
# PODSTORE_BENCH_CAP_IOPS (300) reads and 300 writes a second and 150 MiB/s each way, about a
# 7,200 rpm disk; the fast device is not capped. Popularity follows recency, as on photo and
# music platforms (Dropbox: 40% of reads hit data less than a day old): object rank r, asked
# for in proportion to 1 / r^PODSTORE_BENCH_ZIPF_S (1.5), is the r-th newest object
# (PODSTORE_BENCH_ZIPF_ORDER=spread spreads the ranks over the objects instead).
set -euo pipefail
quick=0
[ "${1:-}" = "--quick" ] && quick=1
top=$(cd "$(dirname "$0")/../.." && pwd)
# The results also as JSON and an SVG chart of the ratios (benches/report.py), in
# $PODSTORE_BENCH_RESULTS (default target/bench-results): the script runs itself through it.
if [ -z "${PODSTORE_BENCH_REPORTING:-}" ]; then
  PODSTORE_BENCH_REPORTING=1 bash "$0" "$@" | python3 "$top/benches/report.py" tier "${PODSTORE_BENCH_RESULTS:-$top/target/bench-results}" "GET p99"
  exit "${PIPESTATUS[0]}"
fi
cd "$top"
[ "$(id -u)" = 0 ] || { echo "tier-bench: needs root (loop devices, cgroup)"; exit 1; }
for t in wrk mkfs.xfs curl; do command -v $t >/dev/null || { echo "tier-bench: $t is not installed"; exit 1; }; done
BLKIO=/sys/fs/cgroup/blkio
[ -w "$BLKIO" ] || { echo "tier-bench: no blkio cgroup at $BLKIO"; exit 1; }
SIZE=16384
S=${PODSTORE_BENCH_ZIPF_S:-1.5}
ORDER=${PODSTORE_BENCH_ZIPF_ORDER:-recent}
IOPS=${PODSTORE_BENCH_CAP_IOPS:-300}
PUT_RATE=${PODSTORE_BENCH_PUT_RATE:-200}
if [ $quick = 1 ]; then N=20000; DUR=10; WARM=10; FAST_MIB=384; CACHE=$((32 << 20)); MIG_N=12000
else N=60000; DUR=30; WARM=30; FAST_MIB=1024; CACHE=$((128 << 20)); MIG_N=40000; fi

[ -n "${PODSTORE_BENCH_NOBUILD:-}" ] || cargo build --release --locked -q -p podstore-net -p podstore-benches
PODSTORE=$top/target/release/podstore
LOAD=$top/target/release/podstore-load

work=$(mktemp -d /tmp/podstore-tierbench.XXXXXX)
cg=$BLKIO/podstore-tierbench-$$
devs=(); ps_pid=""
teardown() {
  for i in "${!devs[@]}"; do
    umount "$work/d$i" 2>/dev/null || true
    losetup -d "${devs[$i]}" 2>/dev/null || true
  done
  devs=()
}
cleanup() {
  status=$?
  if [ $status != 0 ]; then
    echo "tier-bench failed ($status); the node's log:" >&2
    tail -n 30 "$work/podstore.log" >&2 || true
  fi
  [ -n "$ps_pid" ] && kill "$ps_pid" 2>/dev/null && wait "$ps_pid" 2>/dev/null || true
  sleep 0.3
  teardown
  rmdir "$cg" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$cg"

# Fresh devices: d0 the small fast one, d1 and d2 capped in the cgroup.
setup() {
  local i dev size mm
  for i in 0 1 2; do
    size=8G; [ $i = 0 ] && size=${FAST_MIB}M
    rm -f "$work/d$i.img"
    truncate -s $size "$work/d$i.img"
    dev=$(losetup -f --show --direct-io=on "$work/d$i.img")
    devs+=("$dev")
    mkfs.xfs -q -f "$dev"
    mkdir -p "$work/d$i"
    mount "$dev" "$work/d$i"
    if [ $i != 0 ]; then
      mm=$(lsblk -dno MAJ:MIN "$dev" | tr -d ' ')
      echo "$mm $IOPS" > "$cg/blkio.throttle.read_iops_device"
      echo "$mm $IOPS" > "$cg/blkio.throttle.write_iops_device"
      echo "$mm $((150 << 20))" > "$cg/blkio.throttle.read_bps_device"
      echo "$mm $((150 << 20))" > "$cg/blkio.throttle.write_bps_device"
    fi
  done
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PS=$(port); PA=$(port)
config() { # fast_tier(0|1) [extra tiering lines] [extra maintenance lines] -> podstore.toml
  local tier0=capacity cache=0
  [ "$1" = 1 ] && tier0=fast && cache=$CACHE
  cat > "$work/podstore.toml" <<TOML
node_id = "bench"
[listen]
data = "127.0.0.1:$PS"
admin = "127.0.0.1:$PA"
[engine]
blob_size_bytes = 8388608
[ram_cache]
size_bytes = $cache
[tiering]
migrate_interval_s = 1
${2:-}
[maintenance]
compact_interval_s = 5
scrub_period_s = 0
${3:-}
[[disks]]
id = 0
path = "$work/d0"
tier = "$tier0"
[[disks]]
id = 1
path = "$work/d1"
tier = "capacity"
[[disks]]
id = 2
path = "$work/d2"
tier = "capacity"
TOML
}
start() {
  # In the cgroup from its first I/O on.
  sh -c "echo \$\$ > $cg/cgroup.procs && exec $PODSTORE serve --config $work/podstore.toml" 2>>"$work/podstore.log" &
  ps_pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PS/_/ready" >/dev/null && return; sleep 0.1; done
  echo "the node did not become ready" >&2; exit 1
}
stop() { kill "$ps_pid"; wait "$ps_pid" || true; ps_pid=""; }
tiers() { curl -sf "http://127.0.0.1:$PA/admin/tiers"; }
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# run NAME FAST_TIER -> one line "name get_rps get_p50 get_p99 put_rps put_p99 ram fast capacity"
run() {
  setup
  config "$2"
  start
  # Loaded in twenty parts, as a steady ingest: with tiering on, after each part the migration
  # brings the fast disk down to its low watermark (its coldest objects to the capacity tier)
  # and it takes writes again before the next part comes.
  echo "$1: loading $N objects of $SIZE bytes" >&2
  local part=$((N / 20)) p
  for p in $(seq 0 19); do
    "$LOAD" --addr 127.0.0.1:$PS --prefix /bench/z --first $((p * part)) --count $part --size $SIZE --conns 32 >/dev/null
    [ "$2" = 1 ] || continue
    for _ in $(seq 1200); do
      b=$(tiers | python3 -c 'import json,sys; t=json.load(sys.stdin); print(t["migration"]["backlog_bytes"] + t["migration"]["running"])')
      w=$(curl -sf "http://127.0.0.1:$PA/admin/disks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["takes_writes"])')
      [ "$b$w" = 0True ] && break
      sleep 0.5
    done
  done
  echo "$1: warming up ${WARM}s" >&2
  wrk -t2 -c32 -d${WARM}s -s "$top/benches/tier/zipf.lua" "http://127.0.0.1:$PS" -- /bench/z $N $S $ORDER >/dev/null
  local before after
  before=$(tiers)
  echo "$1: measuring ${DUR}s (Zipf GETs, 32 connections, beside $PUT_RATE PUTs/s, 4 connections)" >&2
  "$LOAD" --addr 127.0.0.1:$PS --prefix /bench/w --count 100000000 --seconds $DUR --rate $PUT_RATE --size $SIZE --conns 4 > "$work/put.txt" &
  local put_pid=$!
  wrk -t2 -c32 -d${DUR}s --latency -s "$top/benches/tier/zipf.lua" "http://127.0.0.1:$PS" -- /bench/z $N $S $ORDER > "$work/wrk.txt"
  wait $put_pid
  after=$(tiers)
  local g gp50 gp99 shares
  read g gp99 _ gp50 < <(python3 "$top/benches/http/wrk_summary.py" "$work/wrk.txt")
  shares=$(python3 -c "
import json
b, a = json.loads('''$before'''), json.loads('''$after''')
def reads(t):
    r = {x['tier']: x['reads'] for x in t['tiers']}
    r['ram'] = t['ram_cache']['reads']
    return r
rb, ra = reads(b), reads(a)
d = {k: ra[k] - rb[k] for k in ra}
n = sum(d.values()) or 1
print(' '.join(f'{d[k] / n:.3f}' for k in ('ram', 'fast', 'capacity')))")
  echo "$1 $g $gp50 $gp99 $(val req_per_s < "$work/put.txt") $(val p99_ms < "$work/put.txt") $shares"
  stop
  teardown
}

# Migration rate: a forced pass (podstore migrate --idle-s 0) moving MIG_N objects of SIZE
# bytes from the fast device to the two capped capacity devices, the background budget lifted
# (the rate of the mechanism, not of the budget), beside fio's sequential write rate (1 MiB
# blocks, direct) on those devices in the same cgroup. -> "mib_per_s objects seconds fio_mib_per_s"
migration() {
  setup
  config 1 "fast_high_watermark = 1.0
fast_low_watermark = 0.9
migrate_idle_s = 0" "background_mib_per_s = 100000"
  start
  echo "migration: loading $MIG_N objects of $SIZE bytes onto the fast tier" >&2
  "$LOAD" --addr 127.0.0.1:$PS --prefix /bench/m --count $MIG_N --size $SIZE --conns 32 >/dev/null
  local t0 t1 bytes objs fio_sum=0 i
  t0=$(date +%s.%N)
  "$PODSTORE" migrate --idle-s 0 --admin 127.0.0.1:$PA > "$work/migrate.txt" 2>/dev/null
  t1=$(date +%s.%N)
  read bytes objs < <(tiers | python3 -c 'import json,sys; m=json.load(sys.stdin)["migration"]; print(m["migrated_bytes"], m["migrated_objects"])')
  [ "$objs" -gt 0 ] || { echo "migration moved nothing" >&2; cat "$work/migrate.txt" >&2; exit 1; }
  stop
  for i in 1 2; do
    sh -c "echo \$\$ > $cg/cgroup.procs && exec fio --name=seq --filename=$work/d$i/fio --rw=write --bs=1M --size=1G \
      --direct=1 --ioengine=io_uring --iodepth=8 --runtime=4 --time_based --output-format=terse" > "$work/fio$i.txt"
    fio_sum=$(python3 -c "print($fio_sum + $(cut -d';' -f48 "$work/fio$i.txt") / 1024)")
    rm -f "$work/d$i/fio"
  done
  teardown
  python3 -c "d = $t1 - $t0; print(f'{$bytes / 2**20 / d:.1f} $objs {d:.1f} {$fio_sum:.1f}')"
}

run tiered 1 > "$work/r-tiered"
run flat 0 > "$work/r-flat"
migration > "$work/r-mig"
read _ tg tg50 tg99 tp tp99 tram tfast tcap < "$work/r-tiered"
read _ fg fg50 fg99 fp fp99 fram ffast fcap < "$work/r-flat"
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
ok() { python3 -c "print('meets' if $1 else 'below')"; }
echo "# tiering: Zipf GETs beside steady PUTs, tiering on and off ($(nproc) cores, $(uname -r), XFS on loop devices --direct-io=on)"
echo "mode: $([ $quick = 1 ] && echo quick || echo full); $N objects of $SIZE bytes; Zipf s = $S over $ORDER objects; fast device ${FAST_MIB} MiB; capacity devices capped at $IOPS IOPS and 150 MiB/s each way (blkio cgroup); RAM cache $((CACHE >> 20)) MiB when on; ${WARM} s warm-up, ${DUR} s measured; GETs 32 connections; PUTs 4 connections, at most $PUT_RATE a second (steady writes)"
echo
echo "| configuration | GET req/s | GET p50 | GET p99 | PUT req/s | PUT p99 | GETs from RAM | from fast | from capacity |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| tiering on (fast tier + RAM cache) | $tg | $tg50 ms | $tg99 ms | $tp | $tp99 ms | $tram | $tfast | $tcap |"
echo "| tiering off (every disk capacity, no cache) | $fg | $fg50 ms | $fg99 ms | $fp | $fp99 ms | $fram | $ffast | $fcap |"
echo
r=$(ratio $fg99 $tg99); echo "GET p99 off/on: $r (target at least 3: $(ok "$r >= 3"))"
r=$(ratio $tp $fp); echo "PUT throughput on/off: $r (target: no loss, at least 0.95: $(ok "$r >= 0.95"))"
echo "GET throughput on/off: $(ratio $tg $fg)"
read mig_rate mig_objs mig_s mig_fio < "$work/r-mig"
echo
echo "Migration (a forced pass, background budget lifted): $mig_objs objects of $SIZE bytes to the two capped capacity devices in $mig_s s: $mig_rate MiB/s, fio's sequential write (1 MiB blocks) on them $mig_fio MiB/s: $(ratio $mig_rate $mig_fio) of it"
