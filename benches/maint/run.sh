#!/usr/bin/env bash
# Foreground I/O while the disks' background work runs, beside the same node idle, in one run
# (issue 6), and the background work's own rates beside fio on the same disk:
#   - GET 4 KiB (wrk, 64 connections) and durable PUT 4 KiB (podstore-load, 64 connections):
#     throughput and p99 idle, then with compaction (every other 1 MiB object overwritten:
#     half-dead blobs to rewrite), a scrub pass and the rebalance onto a disk added at that
#     moment all running, at the default budgets (background_mib_per_s = 64 per disk, cut to
#     busy_share = 0.25 of it while a core serves busy_ops_per_s = 500 object requests/s; each
#     background operation also costs op_cost_kib = 32 KiB of it).
#     Targets: p99 at most 1.5 times idle, throughput at least 0.8 of idle. The background
#     bytes done during the busy window are printed, and whether each job was still running at
#     its end.
#   - reclaim rate (a compaction pass) and scrub rate (a scrub pass) of one disk with its
#     budget lifted, beside fio's sequential read on the same filesystem.
#
#   benches/maint/run.sh [--quick]      (root: loop devices)
#   PODSTORE_BENCH_BUSY=compact,scrub,add (the default: all three) picks the background work.
#
# The RAM cache is off: the GETs measured are disk reads, beside the background work's.
#
# Each disk is an XFS filesystem on a loop device of its own (losetup -f --show
# --direct-io=on, detached at the end); the loop devices share the machine's one disk, so the
# figures are per node, not per spindle. Needs wrk, fio, xfsprogs.
set -euo pipefail
quick=0
[ "${1:-}" = "--quick" ] && quick=1
top=$(cd "$(dirname "$0")/../.." && pwd)
# The results also as JSON and an SVG chart of the ratios (benches/report.py), in
# $PODSTORE_BENCH_RESULTS (default target/bench-results): the script runs itself through it.
if [ -z "${PODSTORE_BENCH_REPORTING:-}" ]; then
  PODSTORE_BENCH_REPORTING=1 bash "$0" "$@" | python3 "$top/benches/report.py" maint "${PODSTORE_BENCH_RESULTS:-$top/target/bench-results}" busy/idle
  exit "${PIPESTATUS[0]}"
fi
cd "$top"
[ "$(id -u)" = 0 ] || { echo "maint-bench: needs root (loop devices)"; exit 1; }
for t in wrk fio mkfs.xfs curl; do command -v $t >/dev/null || { echo "maint-bench: $t is not installed"; exit 1; }; done
# ROUNDS windows of each state (idle before, busy, idle after), each a GET run then a PUT run
# of DUR seconds; the medians are compared, so one noisy window decides nothing.
if [ $quick = 1 ]; then N4K=20000; NBIG=1200; DUR=3; ROUNDS=3
else N4K=100000; NBIG=3000; DUR=8; ROUNDS=3; fi

[ -n "${PODSTORE_BENCH_NOBUILD:-}" ] || cargo build --release --locked -q -p podstore-net -p podstore-benches
PODSTORE=$top/target/release/podstore
LOAD=$top/target/release/podstore-load

work=$(mktemp -d /tmp/podstore-maintbench.XXXXXX)
devs=(); ps_pid=""
cleanup() {
  status=$?
  if [ $status != 0 ]; then
    echo "maint-bench failed ($status); the node's log:" >&2
    tail -n 30 "$work/podstore.log" >&2 || true
  fi
  [ -n "$ps_pid" ] && kill "$ps_pid" 2>/dev/null && wait "$ps_pid" 2>/dev/null || true
  sleep 0.3
  for i in "${!devs[@]}"; do
    umount "$work/d$i" 2>/dev/null || true
    losetup -d "${devs[$i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
for i in 0 1 2; do
  truncate -s 32G "$work/d$i.img"
  dev=$(losetup -f --show --direct-io=on "$work/d$i.img")
  devs+=("$dev")
  mkfs.xfs -q -f "$dev"
  mkdir -p "$work/d$i"
  mount "$dev" "$work/d$i"
done

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PS=$(port); PA=$(port)
config() { # background_mib_per_s
  cat > "$work/podstore.toml" <<TOML
node_id = "bench"
[listen]
data = "127.0.0.1:$PS"
admin = "127.0.0.1:$PA"
[engine]
blob_size_bytes = 67108864
[ram_cache]
size_bytes = 0
[maintenance]
background_mib_per_s = $1
compact_interval_s = 0
scrub_period_s = 0
[[disks]]
id = 0
path = "$work/d0"
tier = "capacity"
weight = 1.0
[[disks]]
id = 1
path = "$work/d1"
tier = "capacity"
weight = 1.0
TOML
}
start() {
  "$PODSTORE" serve --config "$work/podstore.toml" 2>>"$work/podstore.log" & ps_pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PS/_/ready" >/dev/null && return; sleep 0.1; done
  echo "the node did not become ready" >&2; exit 1
}
stop() { kill "$ps_pid"; wait "$ps_pid" || true; ps_pid=""; }
admin() { curl -sf "$@"; }
jobs() { admin "http://127.0.0.1:$PA/admin/jobs"; }
# Sum of a field over every disk of /admin/jobs: jsum compaction.bytes_reclaimed
jsum() {
  jobs | python3 -c "
import json, sys
def field(x):
    for k in '$1'.split('.'):
        x = x[k]
    return x
print(sum(field(x) for x in json.load(sys.stdin)['disks']))"
}
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
wrk_get() { # -> "req_per_s p99_ms mib_per_s"
  wrk -t2 -c64 -d${DUR}s --latency -s "$top/benches/http/get.lua" "http://127.0.0.1:$PS" -- /bench/s $N4K > "$work/wrk.txt"
  python3 "$top/benches/http/wrk_summary.py" "$work/wrk.txt"
}
put4k() { # prefix -> "req_per_s p99_ms puts"
  local out; out=$("$LOAD" --addr 127.0.0.1:$PS --prefix "$1" --count 100000000 --seconds $DUR --size 4096 --conns 64)
  echo "$(echo "$out" | val req_per_s) $(echo "$out" | val p99_ms) $(echo "$out" | val puts)"
}
PUTS=0
# windows STATE: ROUNDS x (GET then PUT), one "state get get_p99 put put_p99" line each in
# $work/windows.
windows() {
  local r g gp p pp n
  for r in $(seq $ROUNDS); do
    read g gp _ < <(wrk_get)
    read p pp n < <(put4k "/bench/$1$r")
    PUTS=$((PUTS + n))
    echo "$1 $g $gp $p $pp" >> "$work/windows"
    echo "  $1 window $r: GET $g req/s p99 $gp ms; PUT $p req/s p99 $pp ms" >&2
  done
}
# med STATES COLUMN: the median of a column (2 GET, 3 GET p99, 4 PUT, 5 PUT p99) over the
# windows of the given states ("idle" matches both idle states).
med() { awk -v s="$1" -v c=$2 'index($1, s) == 1 {print $c}' "$work/windows" | sort -g |
  awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

config 64
start
echo "loading: $N4K objects of 4 KiB and $NBIG of 1 MiB on two disks" >&2
"$LOAD" --addr 127.0.0.1:$PS --prefix /bench/s --count $N4K --size 4096 --conns 64 >/dev/null
"$LOAD" --addr 127.0.0.1:$PS --prefix /bench/b --count $NBIG --size 1048576 --conns 16 >/dev/null
# Every other 1 MiB object overwritten: every blob of them half dead.
"$LOAD" --addr 127.0.0.1:$PS --prefix /bench/b --count $((NBIG / 2)) --step 2 --size 1048576 --conns 16 >/dev/null
sync

echo "idle, before" >&2
windows idle_before

echo "busy: compaction, scrub and a disk added (rebalance), default budgets" >&2
bg0=$(jsum background_bytes)
kinds=",${PODSTORE_BENCH_BUSY:-compact,scrub,add},"
[[ $kinds == *,compact,* ]] && admin -X POST "http://127.0.0.1:$PA/admin/compact?ratio=0.3" >/dev/null
[[ $kinds == *,scrub,* ]] && admin -X POST "http://127.0.0.1:$PA/admin/scrub" >/dev/null
[[ $kinds == *,add,* ]] && admin -X POST "http://127.0.0.1:$PA/admin/disks?id=2&path=$work/d2&weight=1&require_mount_point=true" >/dev/null
sleep 0.5
t0=$(date +%s.%N)
windows busy
t1=$(date +%s.%N)
bg1=$(jsum background_bytes)
state=$(jobs | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"]
print("compaction running on %d, scrub running on %d of %d disks" % (sum(x["compaction"]["running"] for x in d), sum(x["scrub"]["running"] for x in d), len(d)))')
moved=$(curl -s "http://127.0.0.1:$PA/metrics" | awk '/^podstore_disk_moved_away_total/ {s+=$2} END {print int(s)}')
bg_mib=$(python3 -c "print(f'{($bg1-$bg0)/2**20/($t1-$t0):.0f}')")
# Let the background work end (the new disk holds its share: no longer spilled), then the
# node's own count of objects must match what was written: none lost, none left twice.
for _ in $(seq 1200); do
  busy=$(jobs | python3 -c 'import json,sys; print(any(x["compaction"]["running"] or x["scrub"]["running"] for x in json.load(sys.stdin)["disks"]))')
  spilled=$(admin "http://127.0.0.1:$PA/admin/disks" | python3 -c 'import json,sys; print(any(d["spilled"] for d in json.load(sys.stdin)["disks"]))')
  [ "$busy$spilled" = FalseFalse ] && break
  sleep 0.5
done
[ "$busy$spilled" = FalseFalse ] || { echo "maint-bench: the background work did not end in 10 minutes" >&2; exit 1; }
objs=$(admin "http://127.0.0.1:$PA/admin/disks" | python3 -c 'import json,sys; print(sum(d["objects"] for d in json.load(sys.stdin)["disks"]))')
want=$((N4K + NBIG + PUTS))
[ "$objs" = "$want" ] || { echo "maint-bench: the node holds $objs objects, $want were written" >&2; exit 1; }
echo "idle, after (three disks)" >&2
windows idle_after
get_idle=$(med idle 2); get_idle_p99=$(med idle 3); put_idle=$(med idle 4); put_idle_p99=$(med idle 5)
get_busy=$(med busy 2); get_busy_p99=$(med busy 3); put_busy=$(med busy 4); put_busy_p99=$(med busy 5)

echo "rates of one disk, budget lifted, beside fio" >&2
stop
config 100000
start
# Fresh dead space on disk 0: the other half of the 1 MiB objects overwritten.
"$LOAD" --addr 127.0.0.1:$PS --prefix /bench/b --count $((NBIG / 2)) --first 1 --step 2 --size 1048576 --conns 16 >/dev/null
sync
d0() { jobs | python3 -c "import json,sys; d=[x for x in json.load(sys.stdin)['disks'] if x['disk']==0][0]; print(d$1)"; }
r0=$(d0 "['compaction']['bytes_reclaimed']"); b0=$(d0 "['background_bytes']"); t0=$(date +%s.%N)
"$PODSTORE" compact --disk 0 --ratio 0.3 --admin 127.0.0.1:$PA >/dev/null
t1=$(date +%s.%N); r1=$(d0 "['compaction']['bytes_reclaimed']"); b1=$(d0 "['background_bytes']")
reclaim=$(python3 -c "print(f'{($r1-$r0)/2**20/($t1-$t0):.0f}')")
compact_io=$(python3 -c "print(f'{($b1-$b0)/2**20/($t1-$t0):.0f}')")
b0=$(d0 "['background_bytes']"); t0=$(date +%s.%N)
"$PODSTORE" scrub --disk 0 --admin 127.0.0.1:$PA >/dev/null
t1=$(date +%s.%N); b1=$(d0 "['background_bytes']")
scrub=$(python3 -c "print(f'{($b1-$b0)/2**20/($t1-$t0):.0f}')")
scrubbed=$(python3 -c "print(f'{($b1-$b0)/2**20:.0f}')")
stop
fio --name=w --filename="$work/d0/fio.test" --rw=write --bs=1M --size=1G --direct=1 --ioengine=io_uring --iodepth=8 --output-format=json >/dev/null
fio_read=$(fio --name=r --filename="$work/d0/fio.test" --rw=read --bs=1M --size=1G --direct=1 --ioengine=io_uring --iodepth=8 --output-format=json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["bw"]/1024))')

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
ok() { python3 -c "print('meets' if $1 else 'below')"; }
echo "# foreground I/O with background work running, beside the node idle ($(nproc) cores, $(uname -r), XFS on loop devices --direct-io=on)"
echo "mode: $([ $quick = 1 ] && echo quick || echo full); $N4K x 4 KiB and $NBIG x 1 MiB objects (half of the latter overwritten) on 2 disks; busy: ${kinds:1:-1} ($moved keys moved to the added disk by the end), background_mib_per_s = 64 per disk (a quarter while the foreground is busy), op_cost_kib = 32; background I/O during the busy window: $bg_mib MiB/s ($state at its end)"
echo "medians of $ROUNDS windows of ${DUR} s per state (idle: $ROUNDS before the background work and $ROUNDS after it ended); idle before / after: GET $(med idle_b 2) / $(med idle_a 2) req/s, p99 $(med idle_b 3) / $(med idle_a 3) ms; PUT $(med idle_b 4) / $(med idle_a 4) req/s, p99 $(med idle_b 5) / $(med idle_a 5) ms"
echo
echo "| workload | idle | busy | busy/idle | target | |"
echo "|---|---|---|---|---|---|"
r=$(ratio $get_busy $get_idle); echo "| GET 4 KiB, 64 connections | $get_idle req/s | $get_busy req/s | $r | at least 0.8 | $(ok "$r >= 0.8") |"
r=$(ratio $get_busy_p99 $get_idle_p99); echo "| GET 4 KiB p99 | $get_idle_p99 ms | $get_busy_p99 ms | $r | at most 1.5 | $(ok "$r <= 1.5") |"
r=$(ratio $put_busy $put_idle); echo "| durable PUT 4 KiB, 64 connections | $put_idle req/s | $put_busy req/s | $r | at least 0.8 | $(ok "$r >= 0.8") |"
r=$(ratio $put_busy_p99 $put_idle_p99); echo "| durable PUT 4 KiB p99 | $put_idle_p99 ms | $put_busy_p99 ms | $r | at most 1.5 | $(ok "$r <= 1.5") |"
echo
echo "| one disk, budget lifted | podstore | fio sequential read, same filesystem | ratio |"
echo "|---|---|---|---|"
echo "| compaction: space reclaimed | $reclaim MiB/s (reads and writes: $compact_io MiB/s) | $fio_read MiB/s | $(ratio $reclaim $fio_read) |"
echo "| scrub: bytes verified ($scrubbed MiB) | $scrub MiB/s | $fio_read MiB/s | $(ratio $scrub $fio_read) |"
