#!/usr/bin/env bash
# Replication between two appliances in their own network namespaces, beside the machine's
# own limits measured in the same run:
#   - catch-up: a backlog of 1 MiB objects written while the peer was away, drained when it
#     returns, against the smaller of iperf3 between the namespaces (as many streams as the
#     replication's connections; one stream printed beside) and fio's sequential write rate
#     on the receiving disk (target: at least 0.8); CPU seconds per GiB copied;
#   - PUT throughput with X-Copies: all across the two appliances against one appliance.
#
#   benches/repl/run.sh [--quick]      (root: namespaces, loop devices)
#   PODSTORE_BENCH_ROUNDS=N catch-up rounds (5 in full mode, 1 quick; the median is reported),
#   PODSTORE_BENCH_BACKLOG=MiB the backlog of each round (2048 full, 512 quick),
#   PODSTORE_BENCH_PIN=0 lets the appliances and the limit measurements float over all cores,
#   PODSTORE_BENCH_WINDOW=N sets replication.catch_up_in_flight (the node's default otherwise),
#   PODSTORE_BENCH_CONNS=N replication.connections_per_peer (and iperf3's streams),
#   PODSTORE_BENCH_SENDER_DISK=tmpfs the sender's disk a loop device over tmpfs instead of zram,
#   PODSTORE_BENCH_PERF=FILE also records a system-wide `perf record -a -g` of the drain.
#
# Each appliance gets an XFS filesystem of its own: the receiver's on a loop device
# (losetup -f --show --direct-io=on, detached at the end), the sender's on a zram device
# (hot_add, removed at the end; see below). Needs iproute2, iperf3, fio, xfsprogs.
set -euo pipefail
quick=0
[ "${1:-}" = "--quick" ] && quick=1
top=$(cd "$(dirname "$0")/../.." && pwd)
# The results also as JSON and an SVG chart of the ratios (benches/report.py), in
# $PODSTORE_BENCH_RESULTS (default target/bench-results): the script runs itself through it.
if [ -z "${PODSTORE_BENCH_REPORTING:-}" ]; then
  PODSTORE_BENCH_REPORTING=1 bash "$0" "$@" | python3 "$top/benches/report.py" repl "${PODSTORE_BENCH_RESULTS:-$top/target/bench-results}"
  exit "${PIPESTATUS[0]}"
fi
cd "$top"
[ "$(id -u)" = 0 ] || { echo "repl-bench: needs root (network namespaces, loop devices)"; exit 1; }
for t in ip iperf3 fio mkfs.xfs; do command -v $t >/dev/null || { echo "repl-bench: $t is not installed"; exit 1; }; done
if [ $quick = 1 ]; then BACKLOG=512; PUTS=300; else BACKLOG=2048; PUTS=1500; fi
BACKLOG=${PODSTORE_BENCH_BACKLOG:-$BACKLOG}  # MiB of 1 MiB objects
ROUNDS=${PODSTORE_BENCH_ROUNDS:-$([ $quick = 1 ] && echo 1 || echo 5)}
# Each appliance on a core of its own (as on two machines), and each limit measured the same
# way: iperf3's client on pod-a's core and its server on pod-b's, fio on pod-b's core.
# PODSTORE_BENCH_PIN=0: no pinning.
pin_a=""; pin_b=""
if [ "${PODSTORE_BENCH_PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ]; then pin_a="taskset -c 0"; pin_b="taskset -c 1"; fi

[ -n "${PODSTORE_BENCH_NOBUILD:-}" ] || cargo build --release --locked -q -p podstore-net -p podstore-benches
PODSTORE=$top/target/release/podstore
LOAD=$top/target/release/podstore-load

work=$(mktemp -d /tmp/podstore-replbench.XXXXXX)
p="prb$$"
nsa="$p-a"; nsb="$p-b"
devs=(); pids=(); zid=""
stop() { # pid: started in a command substitution, so not this shell's child for `wait`:
  # poll until it is gone (the next start on its disks would find them locked)
  # (and off the list cleanup stops: a PID once ended may be another process's later)
  local kept=() p; for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done; pids=("${kept[@]}")
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 600); do [ -d "/proc/$1" ] || return 0; sleep 0.05; done
  echo "podstore $1 did not stop within 30 s" >&2; kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  status=$?
  if [ $status != 0 ]; then
    echo "repl-bench failed ($status); logs:" >&2
    # (the nodes' logs; the CPU samples are numbers only)
    for l in "$work"/*.log; do [ "$l" = "$work/cpu.log" ] || tail -n 20 "$l" >&2; done
  fi
  # The nodes' logs stay for a look after the run.
  rm -rf /tmp/podstore-replbench-logs; mkdir -p /tmp/podstore-replbench-logs
  cp "$work"/*.log /tmp/podstore-replbench-logs/ 2>/dev/null || true
  for pid in "${pids[@]}"; do stop "$pid"; done
  for m in "$work"/mnt-*; do umount "$m" 2>/dev/null || true; done
  for d in "${devs[@]}"; do losetup -d "$d" 2>/dev/null || true; done
  [ -z "$zid" ] || echo "$zid" > /sys/class/zram-control/hot_remove || true
  ip netns del "$nsa" 2>/dev/null || true
  ip netns del "$nsb" 2>/dev/null || true
  rm -rf "$work" "$shm"
}
trap cleanup EXIT

ip netns add "$nsa"; ip netns add "$nsb"
ip -n "$nsa" link add eth0 type veth peer name eth0 netns "$nsb"
ip -n "$nsa" addr add 10.78.0.1/24 dev eth0; ip -n "$nsb" addr add 10.78.0.2/24 dev eth0
for n in "$nsa" "$nsb"; do ip -n "$n" link set eth0 up; ip -n "$n" link set lo up; done

# The two appliances must not share a device: here every file lives on one virtual disk,
# whose direct reads (about 1.3 GB/s) and writes compete, so catch-up would measure that disk
# serving both ends. pod-b (the receiver, whose disk is the limit measured) gets a loop device
# over a file on the real disk. pod-a (the sender) gets a RAM disk of its own: a zram device
# (hot_add, removed at the end; lz4, the objects are random so stored as they are), whose reads
# are done by the reading thread itself, on the sender's core, as a second machine's disk
# would cost that machine. A loop device over a tmpfs file is the fallback (no zram, or
# PODSTORE_BENCH_SENDER_DISK=tmpfs): its reads are a memcpy in the loop device's kernel
# workers, which the scheduler runs wherever it likes, and a profile found them on the
# receiving core (~17% of it). The sender disk's read rate is measured and printed too.
shm=$(mktemp -d /dev/shm/podstore-replbench.XXXXXX)
disk() { # name dir: a loop device of our own with XFS over a file in dir, mounted at $work/mnt-<name>
  # (not called in a $(...) subshell: the device must be recorded here for the clean-up)
  truncate -s 24G "$2/$1.img"
  local d; d=$(losetup -f --show --direct-io=on "$2/$1.img"); devs+=("$d")
  mkfs.xfs -q -f "$d"; mkdir -p "$work/mnt-$1"; mount "$d" "$work/mnt-$1"
}
zram_disk() { # a zram device of our own with XFS, mounted at $work/mnt-a; fails if any step does
  [ -w /sys/class/zram-control/hot_add ] || return 1
  zid=$(cat /sys/class/zram-control/hot_add 2>/dev/null) || { zid=""; return 1; }
  [ -b "/dev/zram$zid" ] || return 1
  if grep -qw lz4 "/sys/block/zram$zid/comp_algorithm"; then echo lz4 > "/sys/block/zram$zid/comp_algorithm" || return 1; fi
  echo 24G > "/sys/block/zram$zid/disksize" && mkfs.xfs -q -f "/dev/zram$zid" &&
    mkdir -p "$work/mnt-a" && mount "/dev/zram$zid" "$work/mnt-a"
}
sender_disk=zram
if [ "${PODSTORE_BENCH_SENDER_DISK:-zram}" != zram ] || ! zram_disk; then
  [ "${PODSTORE_BENCH_SENDER_DISK:-zram}" != zram ] || echo "repl-bench: no zram device of our own; the sender's disk is a loop device over tmpfs" >&2
  sender_disk=tmpfs; disk a "$shm"
fi
disk b "$work"
ma="$work/mnt-a"; mb="$work/mnt-b"
# The PUT comparison has pod-a receive copies: on the tmpfs-backed disk every write is a
# kernel memcpy into fresh shared memory (this virtual machine's first touch of a page is
# slow), which measured that, not replication (0.12-0.16 after the catch-up rounds). Its
# disk there is a second loop device on the real disk, like pod-b's.
disk a2 "$work"; ma2="$work/mnt-a2"

# The machine's limits. The network's is iperf3 with as many parallel streams as the
# replication opens connections to its peer (connections_per_peer, 4 by default): one stream
# measured 2,500-2,800 MiB/s here where four carried 5,800-7,300, so a single-stream figure
# would understate what the path can carry (it is printed too, for comparison).
# iperf3 writes (and reads) 128 KiB at a time by default. Replication moves 1 MiB objects,
# and on this machine iperf3 itself carries far less in 1 MiB writes: 2,800-3,300 MiB/s with
# four streams where 128 KiB carried 5,700-8,000 (the sender's core then spends about half
# its time in the softirq that runs the receiving stack; a veth delivers in the sending CPU's
# softirq). That figure is printed beside the limit too; the limit stays iperf3's default.
STREAMS=${PODSTORE_BENCH_CONNS:-4}
iperf() { # streams [write size] -> "MiB/s start_ms-end_ms"
  ip netns exec "$nsb" $pin_b iperf3 -s -1 -D -p 5201 >/dev/null
  sleep 0.5
  ip netns exec "$nsa" $pin_a iperf3 -c 10.78.0.2 -p 5201 -t 3 -P "$1" ${2:+-l "$2"} -J | python3 -c 'import json,sys; e=json.load(sys.stdin); t=e["start"]["timestamp"]["timesecs"]*1000; print(round(e["end"]["sum_received"]["bits_per_second"]/8/2**20), f"{t}-{t+e['"'"'end'"'"']['"'"'sum_received'"'"']['"'"'seconds'"'"']*1000:.0f}")'
}
limits() { # -> "iperf3_streams_MiB iperf3_one_stream_MiB fio_write_MiB iperf3_streams_window fio_window iperf3_streams_1MiB_writes_MiB"
  local n nw n1 nm f t0
  read n nw < <(iperf "$STREAMS"); n1=$(iperf 1 | cut -d' ' -f1); nm=$(iperf "$STREAMS" 1M | cut -d' ' -f1)
  t0=$(date +%s%3N)
  f=$($pin_b fio --name=w --filename="$mb/fio.test" --rw=write --bs=1M --size=2G --direct=1 --ioengine=io_uring --iodepth=8 --end_fsync=1 --output-format=json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw"]/1024))')
  echo "$n $n1 $f $nw $t0-$(date +%s%3N) $nm"
  rm -f "$mb/fio.test"
}
# What the whole machine's cores do while each is measured (the drain, fio, iperf3): every
# CPU's /proc/stat line sampled every 50 ms (one python process, no fork per sample), and
# the busy share of each CPU within a window interpolated from the samples around it. On this
# machine both appliances, both TCP stacks and both disks' kernel work share the cores, so
# the CPU each measurement spends per GiB tells what rate the cores can carry at all.
cat > "$work/cpu_sample.py" <<'PY'
import sys, time
out = open(sys.argv[1], "w", buffering=1)
while True:
    with open("/proc/stat") as f:
        cpus = [l.split() for l in f if l.startswith("cpu") and l[3].isdigit()]
    # per CPU: busy and total ticks (idle and iowait are not busy; steal is counted as busy
    # time the guest could not use: it is in the total, not in busy)
    out.write(f"{time.time() * 1000:.0f} " + " ".join(
        f"{sum(int(x) for x in c[1:4]) + sum(int(x) for x in c[6:8])}:{sum(int(x) for x in c[1:9])}" for c in cpus) + "\n")
    time.sleep(0.05)
PY
cat > "$work/cpu_busy.py" <<'PY'
# cpu_busy.py LOG START_MS-END_MS [each] -> cores busy on average within the window (sum over
# CPUs), or with "each" every CPU's busy share, cpu0/cpu1/...
import sys
rows = []
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 2:
        continue
    rows.append((float(p[0]), [tuple(map(int, x.split(":"))) for x in p[1:]]))
a, b = map(float, sys.argv[2].split("-"))
n = len(rows[0][1]) if rows else 0
busy, total = [0.0] * n, [0.0] * n
for (t0, c0), (t1, c1) in zip(rows, rows[1:]):
    lap = min(t1, b) - max(t0, a)
    if lap <= 0 or t1 <= t0:
        continue
    f = lap / (t1 - t0)
    for i, (x, y) in enumerate(zip(c0, c1)):
        busy[i] += f * (y[0] - x[0])
        total[i] += f * (y[1] - x[1])
if sys.argv[3:] == ["each"]:
    print("/".join(f"{u / t:.2f}" if t > 0 else "nan" for u, t in zip(busy, total)))
else:
    print(f"{sum(busy) / sum(total) * n:.2f}" if sum(total) > 0 else "nan")
PY
python3 "$work/cpu_sample.py" "$work/cpu.log" & pids+=($!)
busy() { python3 "$work/cpu_busy.py" "$work/cpu.log" "$@"; }
fio_read_mib=$(fio --name=w --filename="$ma/fio.test" --rw=write --bs=1M --size=1G --direct=1 --ioengine=io_uring --iodepth=8 --output-format=json >/dev/null &&
  fio --name=r --filename="$ma/fio.test" --rw=read --bs=1M --size=1G --direct=1 --ioengine=io_uring --iodepth=8 --output-format=json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["bw"]/1024))')
rm -f "$ma/fio.test"

secret="$work/secret"; printf 'bench-shared-secret-0123456789' > "$secret"; chmod 600 "$secret"
conf() { # me ip peer peer_ip mount [file name] -> config file
  mkdir -p "$5/podstore"
  cat > "$work/${6:-$1}.toml" <<TOML
node_id = "$1"
[listen]
data = "$2:7070"
admin = "$2:7072"
[limits]
copy_timeout_ms = 2000
[replication]
listen = "$2:7071"
datacenter = "dc-$1"
secret_file = "$secret"
anti_entropy_interval_s = 0
$([ -n "${PODSTORE_BENCH_WINDOW:-}" ] && echo "catch_up_in_flight = $PODSTORE_BENCH_WINDOW")
$([ -n "${PODSTORE_BENCH_CONNS:-}" ] && echo "connections_per_peer = $PODSTORE_BENCH_CONNS")
[[replication.peers]]
name = "$3"
datacenter = "dc-$3"
address = "$4:7071"
[[disks]]
id = 0
path = "$5/podstore"
tier = "capacity"
require_mount_point = false
TOML
  echo "$work/${6:-$1}.toml"
}
ca=$(conf pod-a 10.78.0.1 pod-b 10.78.0.2 "$ma"); cb=$(conf pod-b 10.78.0.2 pod-a 10.78.0.1 "$mb")
ca2=$(conf pod-a 10.78.0.1 pod-b 10.78.0.2 "$ma2" pod-a-put)
start() { # ns config log -> pid
  # stdout away from the command substitution that called us, or it would wait for podstore.
  # Namespace addresses of our own, no access keys: --insecure (not what this measures).
  ip netns exec "$1" $5 "$PODSTORE" serve --config "$2" --insecure >/dev/null 2>>"$work/$3.log" & local pid=$!
  for _ in $(seq 200); do ip netns exec "$1" curl -sf "http://${4}:7070/_/ready" >/dev/null 2>&1 && break; sleep 0.05; done
  echo "$pid"
}
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }  # clock ticks
hz=$(getconf CLK_TCK)
# (curl and sed only, twice a second: the drain is timed by the node's own clock, first and
# last confirmed catch-up copy in /admin/peers, so polling need not be fine, and every poll
# costs the cores being measured)
backlog() { ip netns exec "$nsa" curl -s http://10.78.0.1:7072/admin/peers | sed -n 's/.*"backlog_objects": *\([0-9]*\).*/\1/p'; }

# Each round: the limits just before, a backlog written on pod-a while pod-b is away, the
# drain when pod-b returns, the limits just after. A round's limit is the smaller of iperf3's
# and fio's rates, each the mean of its two measurements around the drain (this shared
# machine's disk and network rates drift by half from minute to minute); the table gives the
# median round and every round, and the ratio had the limit been single-stream iperf3's.
rounds=()
for r in $(seq "$ROUNDS"); do
  echo "round $r of $ROUNDS: limits, $BACKLOG MiB written on pod-a while pod-b is away, drain, limits" >&2
  read net1 one1 fio1 netw1 fiow1 big1 < <(limits)
  pa=$(start "$nsa" "$ca" a 10.78.0.1 "$pin_a"); pids+=("$pa")
  ip netns exec "$nsa" "$LOAD" --addr 10.78.0.1:7070 --prefix "/bench/backlog-$r" --count "$BACKLOG" --size 1048576 --conns 8 --header 'X-Copies: any' >/dev/null
  [ "$(backlog)" = "$BACKLOG" ] || { echo "expected a backlog of $BACKLOG, got $(backlog)"; exit 1; }
  sleep 3  # older than the copy timeout: catch-up may take them
  a0=$(cpu "$pa")
  # pod-b announces itself as soon as it listens, before this script's poll can see it ready:
  # the wait is timed from its start (its own start-up included), never from the poll.
  t_start=$(date +%s.%N)
  pb=$(start "$nsb" "$cb" b 10.78.0.2 "$pin_b"); pids+=("$pb")
  b0=$(cpu "$pb")
  perf_pid=""
  if [ -n "${PODSTORE_BENCH_PERF:-}" ] && [ "$r" = 1 ]; then  # a system-wide profile of the drain
    perf record -a -g -o "$PODSTORE_BENCH_PERF" >/dev/null 2>&1 & perf_pid=$!
  fi
  while [ "$(backlog)" != 0 ]; do sleep 0.5; done
  [ -n "$perf_pid" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
  a1=$(cpu "$pa"); b1=$(cpu "$pb")
  # The drain on pod-a's clock (restarted this round): from its first confirmed copy to its
  # last, the objects after the first (each confirmation follows its object's transfer).
  stats=$(ip netns exec "$nsa" curl -s http://10.78.0.1:7072/admin/peers)
  stop "$pb"
  stop "$pa"
  # The next round's backlog on an empty sender disk (its RAM given back: rounds of 2 GiB add up).
  rm -rf "$ma/podstore"; mkdir -p "$ma/podstore"; fstrim "$ma" 2>/dev/null || true
  read net2 one2 fio2 netw2 fiow2 big2 < <(limits)
  win=$(echo "$stats" | python3 -c "import json,sys; c=json.load(sys.stdin)['peers'][0]['catch_up']; print(f\"{c['first_copy_unix_ms']}-{c['last_copy_unix_ms']}\")")
  # cores busy: during the drain, during each fio run and each multi-stream iperf3 run
  read cd cf1 cf2 cn1 cn2 ce < <(echo "$(busy "$win") $(busy "$fiow1") $(busy "$fiow2") $(busy "$netw1") $(busy "$netw2") $(busy "$win" each)")
  rounds+=("$(echo "$stats" | python3 -c "
import json, sys
c = json.load(sys.stdin)['peers'][0]['catch_up']
assert c['copies'] == $BACKLOG, c
d = (c['last_copy_unix_ms'] - c['first_copy_unix_ms']) / 1000
mib = $BACKLOG
a = ($a1 - $a0) / $hz / (mib / 1024); b = ($b1 - $b0) / $hz / (mib / 1024)
net = ($net1 + $net2) / 2; fio = ($fio1 + $fio2) / 2; limit = min(net, fio); drain = (mib - 1) / d
one = min(($one1 + $one2) / 2, fio)
big = min(($big1 + $big2) / 2, fio)
# The machine's CPU seconds per GiB: cores busy x seconds / GiB moved.
gib = lambda mibs: mibs / 1024
m_drain = $cd / gib(drain); m_fio = ($cf1 / gib($fio1) + $cf2 / gib($fio2)) / 2
m_net = ($cn1 / gib($net1) + $cn2 / gib($net2)) / 2
print(f\"{drain / limit:.2f} {drain:.0f} {limit:.0f} {$net1}/{$net2} {$fio1}/{$fio2} {c['first_copy_unix_ms'] / 1000 - $t_start:.2f} {a + b:.2f} {a:.2f} {b:.2f} {drain / one:.2f} {$one1}/{$one2} {$cd:.2f} {m_drain:.2f} {$cf1:.2f}/{$cf2:.2f} {m_fio:.2f} {$cn1:.2f}/{$cn2:.2f} {m_net:.2f} $ce {drain / big:.2f} {$big1}/{$big2}\")")")
  echo "round $r: ratio drain limit iperf3x$STREAMS fio wait cpu/GiB sender receiver ratio-vs-1-stream iperf3x1 cores-busy-drain machine-cpu/GiB-drain cores-busy-fio machine-cpu/GiB-fio cores-busy-iperf3 machine-cpu/GiB-iperf3 each-cpu-busy-drain ratio-vs-iperf3-1MiB-writes iperf3-1MiB-writes = ${rounds[-1]}" >&2
done
# The median round (by ratio).
read ratio_c drain_mib limit net_both fio_both wait_s cpu_per_gib cpu_a cpu_b ratio_one one_both cores_drain m_drain cores_fio m_fio cores_net m_net each_drain ratio_big big_both < <(printf '%s\n' "${rounds[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")

pa=$(start "$nsa" "$ca2" a-put 10.78.0.1 "$pin_a"); pids+=("$pa")
pb=$(start "$nsb" "$cb" b 10.78.0.2 "$pin_b"); pids+=("$pb")
echo "PUT throughput: X-Copies all on two appliances, then one appliance alone" >&2
# Both measured at pod-b: with X-Copies all it also waits for pod-a's copy (on a disk of its
# own over a file on the same real disk).
put_all=$(ip netns exec "$nsb" "$LOAD" --addr 10.78.0.2:7070 --prefix /bench/all --count "$PUTS" --size 1048576 --conns 16 --header 'X-Copies: all' | sed -n 's/.*mib_per_s=\([0-9.]*\).*/\1/p')
stop "$pb"
stop "$pa"
# (on pod-b's disk, the real one: the copies in the run above were written there too)
sed '/^\[replication\]/,/^address/d' "$cb" > "$work/single.toml"
pb=$(start "$nsb" "$work/single.toml" single 10.78.0.2 "$pin_b"); pids+=("$pb")
put_one=$(ip netns exec "$nsb" "$LOAD" --addr 10.78.0.2:7070 --prefix /bench/one --count "$PUTS" --size 1048576 --conns 16 | sed -n 's/.*mib_per_s=\([0-9.]*\).*/\1/p')

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "# replication between two namespaces ($(nproc) cores, $(uname -r), XFS; receiving disk a loop device --direct-io=on, sending disk $sender_disk)"
echo "mode: $([ $quick = 1 ] && echo quick || echo full)"
echo
echo "| measure | podstore | limit | ratio | target |"
echo "|---|---|---|---|---|"
echo "| catch-up of a $BACKLOG MiB backlog of 1 MiB objects (median of $ROUNDS rounds) | $drain_mib MiB/s | $limit MiB/s (iperf3 with $STREAMS streams $net_both, fio seq write on the receiving disk $fio_both before/after; sender's disk ($sender_disk) reads $fio_read_mib) | $ratio_c | at least 0.8: $(python3 -c "print('meets' if $ratio_c >= 0.8 else 'below')") |"
echo "| the same round against single-stream iperf3 ($one_both before/after) | - | - | $ratio_one | - |"
echo "| the same round against iperf3 with $STREAMS streams writing 1 MiB at a time, as replication sends ($big_both before/after) | - | - | $ratio_big | - |"
echo "| CPU time per GiB replicated (both appliances: sender $cpu_a s, receiver $cpu_b s) | $cpu_per_gib s | - | - | - |"
echo "| from the peer's start to its first copy (its start-up included) | ${wait_s} s | - | - | - |"
need=$(python3 -c "print(f'{0.8 * $limit / 1024 * $m_drain:.2f}')")
echo "| the whole machine's CPU per GiB (every process and kernel thread on all $(nproc) cores): the drain (cores busy $cores_drain: each CPU $each_drain$([ -n "$pin_a" ] && echo ", the sender on cpu0 and the receiver on cpu1")) / fio on the receiving disk ($cores_fio) / iperf3 ($cores_net) | $m_drain s | fio $m_fio s, iperf3 $m_net s | - | - |"
echo "| cores the drain would keep busy at 0.8 of the limit, at its CPU per GiB | $need | $(nproc) cores | - | - |"
r=$(ratio "$put_all" "$put_one"); echo "| PUT 1 MiB, 16 connections, X-Copies: all on 2 appliances vs 1 appliance | $put_all MiB/s | $put_one MiB/s | $r | - |"
echo
echo "rounds (ratio, drain MiB/s, limit MiB/s, iperf3 with $STREAMS streams before/after, fio before/after, wait s, CPU s/GiB both, sender, receiver, ratio against single-stream iperf3, its before/after, cores busy during the drain, the machine's CPU s/GiB in the drain, cores busy during fio before/after, the machine's CPU s/GiB in fio, cores busy during iperf3 before/after, the machine's CPU s/GiB in iperf3, each CPU's busy share during the drain, ratio against iperf3 in 1 MiB writes, its before/after):"
printf '  %s\n' "${rounds[@]}"
