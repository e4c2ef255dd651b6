#!/usr/bin/env python3
"""Reads wrk's output (run with --latency) and prints "requests_per_s p99_ms mib_per_s p50_ms",
and with --totals also "requests bytes" (all the run's requests and the bytes read).
Fails, printing the output, if wrk saw non-2xx/3xx answers; with --errors it prints their
count instead (non-2xx/3xx answers and socket errors, timeouts included) as a fifth field.
Used by benches/article/run.sh,
benches/http/run.sh, benches/maint/run.sh and benches/tier/run.sh."""
import re
import sys

t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))


def ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        sys.exit("can't read the latency %r in wrk's output:\n%s" % (s, t))
    v, u = m.groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]


# The "99%" line of the latency distribution (not a "+/- Stdev" column that ends in 99%).
p99 = ms(re.search(r"^\s+99%\s+(\S+)\s*$", t, re.M).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)\s*$", t, re.M).group(1))
# MiB/s from the run's totals ("N requests in T, X read"): Transfer/sec has three digits only.
UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}
tot = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)(\w+) read", t)
if tot:
    secs = ms(tot.group(2) + tot.group(3)) / 1e3
    mib = float(tot.group(4)) * UNITS[tot.group(5)] / 2**20 / secs
else:
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", t)
    mib = float(tr.group(1)) * UNITS[tr.group(2)] / 2**20
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if "--errors" in sys.argv[2:]:
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    n = (int(errs.group(1)) if errs else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    print(f"{rps:.0f} {p99:.2f} {mib:.1f} {p50:.2f} {n}")
    sys.exit(0)
if errs:
    sys.exit("wrk saw %s errors:\n%s" % (errs.group(1), t))
out = f"{rps:.0f} {p99:.2f} {mib:.1f} {p50:.2f}"
if "--totals" in sys.argv[2:]:
    out += f" {tot.group(1)} {float(tot.group(4)) * UNITS[tot.group(5)]:.0f}"
print(out)
