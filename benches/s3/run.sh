#!/usr/bin/env bash
# The S3 front end beside the native API of the same node, in one run, with the same load
# generator (podstore-load) and the same objects: durable PUT and checked GET of 4 KiB and
# 1 MiB objects (every S3 request signed with AWS Signature Version 4 by an access key, as SDKs
# sign over TLS: x-amz-content-sha256 UNSIGNED-PAYLOAD; every native request with a bearer
# token of the same key), and the listing rate of a bucket of many objects in pages of 1000
# (ListObjectsV2 against the native listing). Prints a table of S3/native ratios beside the
# issue's targets (GET at least 0.9, PUT 1 MiB at least 0.7: S3 computes each body's MD5, the
# ETag S3 clients check; listing at least 100,000 keys/s). Then one large object (1 GiB; 256 MiB
# with --quick) three ways against one native PUT of it: podstore-load as an S3 multipart
# upload with 8 parts of 8 MiB in flight (target at least 0.8 of the native PUT), the AWS CLI's
# `aws s3 cp` (multipart at its defaults: 8 MiB parts, 10 at a time) and one signed S3 PUT.
#
#   benches/s3/run.sh [--quick]
#
# As root it measures on an XFS filesystem on a loop device of its own (losetup -f --show
# --direct-io=on, detached at the end); otherwise in a temp directory, and says so.
set -euo pipefail
quick=0
[ "${1:-}" = "--quick" ] && quick=1
top=$(cd "$(dirname "$0")/../.." && pwd)
# The results also as JSON and an SVG chart of the ratios (benches/report.py), in
# $PODSTORE_BENCH_RESULTS (default target/bench-results): the script runs itself through it.
if [ -z "${PODSTORE_BENCH_REPORTING:-}" ]; then
  PODSTORE_BENCH_REPORTING=1 bash "$0" "$@" | python3 "$top/benches/report.py" s3 "${PODSTORE_BENCH_RESULTS:-$top/target/bench-results}"
  exit "${PIPESTATUS[0]}"
fi
cd "$top"
if [ $quick = 1 ]; then N4K=10000; N1M=300; NLIST=100000; BIG_MIB=256
else N4K=40000; N1M=1500; NLIST=1000000; BIG_MIB=1024; fi
ROUNDS=3

cargo build --release --locked -q -p podstore-net -p podstore-benches
PODSTORE=$top/target/release/podstore
LOAD=$top/target/release/podstore-load

work=$(mktemp -d /tmp/podstore-s3bench.XXXXXX)
dev=""; ps_pid=""
cleanup() {
  status=$?
  [ $status != 0 ] && { echo "s3-bench failed ($status); podstore's log:" >&2; tail -n 30 "$work/podstore.log" >&2 || true; }
  [ -n "$ps_pid" ] && kill "$ps_pid" 2>/dev/null && wait "$ps_pid" 2>/dev/null || true
  if [ -n "$dev" ]; then umount "$work/mnt" 2>/dev/null || true; losetup -d "$dev" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt"
where="a temp directory on $(df --output=source,fstype "$work" | tail -1 | xargs) (not root: no loop device)"
if [ "$(id -u)" = 0 ]; then
  truncate -s 32G "$work/disk.img"
  dev=$(losetup -f --show --direct-io=on "$work/disk.img")
  mkfs.xfs -q -f "$dev"
  mount "$dev" "$work/mnt"
  where="XFS on loop device $dev (--direct-io=on)"
fi
mkdir -p "$work/mnt/podstore"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PS=$(port); PA=$(port); P3=$(port)
SECRET=czMtYmVuY2gtc2VjcmV0LW9mLXRoZS1iZW5jaG1hcmstLQ
printf '%s\n' "$SECRET" > "$work/key"; chmod 600 "$work/key"
cat > "$work/podstore.toml" <<TOML
node_id = "bench"
[listen]
data = "127.0.0.1:$PS"
admin = "127.0.0.1:$PA"
s3 = "127.0.0.1:$P3"
[auth]
[[auth.keys]]
id = "bench"
secret_file = "$work/key"
[[disks]]
id = 0
path = "$work/mnt/podstore"
tier = "capacity"
require_mount_point = false
[ram_cache]
size_bytes = 0
TOML
"$PODSTORE" serve --config "$work/podstore.toml" > "$work/podstore.log" 2>&1 &
ps_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PA/ready" >/dev/null && break; sleep 0.1; done

native=(--addr "127.0.0.1:$PS" --header "Authorization: Bearer bench.$SECRET")
s3=(--addr "127.0.0.1:$P3" --s3-key "bench:$SECRET")
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
declare -A R
median() { python3 -c "import sys, statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
# The node's CPU time so far, in clock ticks (user + system).
node_ticks() { awk '{print $14 + $15}' "/proc/$ps_pid/stat"; }
# Each figure is the median of $ROUNDS rounds, native and S3 taking turns to go first (the
# machine's own drift, a loop device on a shared host, would otherwise favour one of them).
# PUT rounds each write objects of their own; GET rounds all read the first round's (from the
# disk: the node runs without its RAM cache, so that both APIs read alike in every round).
# Each round also prints the node's CPU time per request.
measure() { # label object-prefix count size conns mode
  local label=$1 name=$2 n=$3 size=$4 conns=$5 mode=$6 extra=() r api out t0
  [ "$mode" = get ] && extra=(--get)
  local -a nr=() sr=() nm=() sm=()
  for r in $(seq "$ROUNDS"); do
    local order=(native s3); [ $((r % 2)) = 0 ] && order=(s3 native)
    for api in "${order[@]}"; do
      local prefix="/bench/$name-$api"; [ "$mode" = put ] && [ "$r" -gt 1 ] && prefix="$prefix-r$r"
      local args=("${native[@]}"); [ $api = s3 ] && args=("${s3[@]}")
      t0=$(node_ticks)
      out=$("$LOAD" "${args[@]}" --prefix "$prefix" --count "$n" --size "$size" --conns "$conns" "${extra[@]}")
      out="$out node_cpu_us_per_req=$(( ($(node_ticks) - t0) * 1000000 / $(getconf CLK_TCK) / n ))"
      if [ $api = native ]; then
        nr+=("$(echo "$out" | field req_per_s)"); nm+=("$(echo "$out" | field mib_per_s)")
      else
        sr+=("$(echo "$out" | field req_per_s)"); sm+=("$(echo "$out" | field mib_per_s)")
      fi
      printf '  %-7s round %s: %s\n' "$api" "$r" "$out"
    done
  done
  R[$label-n]=$(median "${nr[@]}"); R[$label-s]=$(median "${sr[@]}")
  R[$label-nm]=$(median "${nm[@]}"); R[$label-sm]=$(median "${sm[@]}")
}
# Body bytes the node hashed with MD5 so far: "lanes single" (beside other bodies, or alone).
md5_bytes() {
  curl -sf "http://127.0.0.1:$PA/metrics" | awk '/^podstore_md5_hashed_bytes_total\{kernel="lanes"\}/ {l=$2}
    /^podstore_md5_hashed_bytes_total\{kernel="single"\}/ {s=$2} END {printf "%.0f %.0f\n", l, s}'
}
md5_note() { # bytes before, bytes after
  python3 -c "import sys; l0,s0,l1,s1=map(int,sys.argv[1:]); l,s=l1-l0,s1-s0; t=max(l+s,1)
print(f'  S3 bodies MD5-hashed beside others (SIMD lanes): {l/2**20:.0f} MiB, alone: {s/2**20:.0f} MiB ({100*l/t:.0f}% in lanes)')" $1 $2
}
echo "s3-bench on $where; podstore $(git -C "$top" rev-parse --short HEAD), $(nproc) cores"
echo "loads: podstore-load, 64 connections for 4 KiB, 16 for 1 MiB; S3 signed (SigV4, UNSIGNED-PAYLOAD), native with a bearer token; each figure the median of $ROUNDS rounds, the two APIs taking turns to go first; no RAM cache (every GET reads the disk)"
m0=$(md5_bytes)
echo "PUT 4 KiB x $N4K";  measure put4k o4k "$N4K" 4096 64 put
m1=$(md5_bytes); md5_note "$m0" "$m1"
echo "GET 4 KiB x $N4K";  measure get4k o4k "$N4K" 4096 64 get
m0=$(md5_bytes)
echo "PUT 1 MiB x $N1M";  measure put1m o1m "$N1M" 1048576 16 put
m1=$(md5_bytes); md5_note "$m0" "$m1"
echo "GET 1 MiB x $N1M";  measure get1m o1m "$N1M" 1048576 16 get
echo "listing: $NLIST objects of 64 bytes in bucket 'list'"
"$LOAD" "${native[@]}" --prefix /list/k --count "$NLIST" --size 64 --conns 64 | sed 's/^/  fill: /'
ln=$("$LOAD" "${native[@]}" --list list); ls3=$("$LOAD" "${s3[@]}" --list list)
echo "  native: $ln"; echo "  s3:     $ls3"
LN=$(echo "$ln" | field keys_per_s); LS=$(echo "$ls3" | field keys_per_s)
echo
echo "| figure | native | S3 | ratio S3 / native | target |"
echo "|---|---|---|---|---|"
echo "| GET 4 KiB, req/s | ${R[get4k-n]} | ${R[get4k-s]} | $(ratio "${R[get4k-s]}" "${R[get4k-n]}") | >= 0.9 |"
echo "| GET 1 MiB, MiB/s | ${R[get1m-nm]} | ${R[get1m-sm]} | $(ratio "${R[get1m-sm]}" "${R[get1m-nm]}") | >= 0.9 |"
echo "| PUT 4 KiB, req/s | ${R[put4k-n]} | ${R[put4k-s]} | $(ratio "${R[put4k-s]}" "${R[put4k-n]}") | - |"
echo "| PUT 1 MiB, MiB/s | ${R[put1m-nm]} | ${R[put1m-sm]} | $(ratio "${R[put1m-sm]}" "${R[put1m-nm]}") | >= 0.7 |"
echo "| listing, keys/s (pages of 1000; S3 target >= 100000) | $LN | $LS | $(ratio "$LS" "$LN") | - |"

# One large object: a native PUT, S3 multipart uploads (podstore-load, the AWS CLI), one S3
# PUT; each the median of $ROUNDS rounds taking turns, each round an object of its own.
BIG=$((BIG_MIB << 20))
big_file="$work/mnt/big.bin"
python3 -c "import sys; b=bytes(range(256))*4096; f=open(sys.argv[1],'wb'); [f.write(b) for _ in range($BIG_MIB)]" "$big_file"
awsconf="$work/aws.conf"; printf '[default]\ns3 =\n    signature_version = s3v4\n' > "$awsconf"
aws_cp() { # object name: seconds
  local t0 t1
  t0=$(date +%s.%N)
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY="$SECRET" AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE="$awsconf" \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    aws --endpoint-url "http://127.0.0.1:$P3" s3 cp --quiet "$big_file" "s3://bench/$1" >&2
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
declare -a bn=() bm=() ba=() bs=() cn=() cm=() ca=()
have_aws=0; command -v aws >/dev/null && have_aws=1
echo "one object of $BIG_MIB MiB"
for r in $(seq "$ROUNDS"); do
  ways=(native multipart aws single); [ $((r % 2)) = 0 ] && ways=(single aws multipart native)
  for way in "${ways[@]}"; do
    t0=$(node_ticks)
    case $way in
      native) out=$("$LOAD" "${native[@]}" --prefix "/bench/big-native-r$r" --count 1 --size "$BIG" --conns 1)
              v=$(echo "$out" | field mib_per_s); bn+=("$v");;
      multipart) out=$("$LOAD" "${s3[@]}" --prefix "/bench/big-mp-r$r" --count 1 --size "$BIG" --conns 8 --multipart 8388608)
              v=$(echo "$out" | field mib_per_s); bm+=("$v");;
      aws) [ $have_aws = 1 ] || continue
           secs=$(aws_cp "big-aws-r$r"); v=$(python3 -c "print(f'{$BIG_MIB / $secs:.1f}')"); ba+=("$v"); out="aws s3 cp: seconds=$secs mib_per_s=$v";;
      single) out=$("$LOAD" "${s3[@]}" --prefix "/bench/big-s3-r$r" --count 1 --size "$BIG" --conns 1)
              v=$(echo "$out" | field mib_per_s); bs+=("$v");;
    esac
    cpu=$(python3 -c "print(f'{($(node_ticks) - $t0) / $(getconf CLK_TCK) / ($BIG_MIB / 1024):.2f}')")
    case $way in native) cn+=("$cpu");; multipart) cm+=("$cpu");; aws) ca+=("$cpu");; esac
    printf '  %-9s round %s: %s node_cpu_s_per_gib=%s\n' "$way" "$r" "$out" "$cpu"
  done
done
BN=$(median "${bn[@]}"); BM=$(median "${bm[@]}"); BS=$(median "${bs[@]}")
echo
echo "| one $BIG_MIB MiB object | MiB/s | ratio to the native PUT | node CPU s/GiB | target |"
echo "|---|---|---|---|---|"
echo "| native PUT (one request) | $BN | 1.00 | $(median "${cn[@]}") | - |"
echo "| S3 multipart, podstore-load (8 MiB parts, 8 in flight) | $BM | $(ratio "$BM" "$BN") | $(median "${cm[@]}") | >= 0.8 |"
if [ $have_aws = 1 ]; then
  BA=$(median "${ba[@]}")
  echo "| S3 multipart, aws s3 cp (8 MiB parts, 10 at a time) | $BA | $(ratio "$BA" "$BN") | $(median "${ca[@]}") | - |"
fi
echo "| S3 PUT (one request) | $BS | $(ratio "$BS" "$BN") | - | - |"
