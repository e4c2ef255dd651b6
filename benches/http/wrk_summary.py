#!/usr/bin/env python3
"""Reads wrk's output (run with --latency) and prints "requests_per_s p99_ms mib_per_s p50_ms".
Fails, printing the output, if wrk saw non-2xx/3xx answers. Used by benches/http/run.sh and
benches/maint/run.sh."""
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
tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", t)
mib = float(tr.group(1)) * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}[tr.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errs:
    sys.exit("wrk saw %s errors:\n%s" % (errs.group(1), t))
print(f"{rps:.0f} {p99:.2f} {mib:.1f} {p50:.2f}")
