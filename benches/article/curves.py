#!/usr/bin/env python3
"""Draws the article benchmark's curves from its JSON (benches/report.py's, whose second table
holds every level): throughput and p99 latency against the number of clients, one line per
run, clients on a log scale. Usage: curves.py article.json out.svg"""
import html
import json
import math
import sys

COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
          '#bcbd22', '#17becf']


def panel(x0, y0, w, h, runs, field, title, unit, log_y):
    """One chart: `runs` {label: [(clients, value)]}, at (x0, y0) of size w x h."""
    out = [f'<text x="{x0}" y="{y0 - 8}" font-size="14">{html.escape(title)}</text>']
    xs = sorted({c for pts in runs.values() for c, _ in pts})
    vals = [v for pts in runs.values() for _, v in pts if v > 0]
    if not xs or not vals:
        return out
    lx0, lx1 = math.log2(xs[0]), math.log2(xs[-1]) or 1
    lo, hi = (min(vals), max(vals)) if log_y else (0, max(vals))
    if log_y:
        lo, hi = math.log10(lo), math.log10(hi)
    hi = hi if hi > lo else lo + 1
    px = lambda c: x0 + w * ((math.log2(c) - lx0) / ((lx1 - lx0) or 1))
    py = lambda v: y0 + h - h * (((math.log10(v) if log_y else v) - lo) / (hi - lo))
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>')
    for c in xs:
        out.append(f'<text x="{px(c):.1f}" y="{y0 + h + 15}" text-anchor="middle">{c}</text>')
    for k in range(5):
        t = lo + (hi - lo) * k / 4
        v = 10 ** t if log_y else t
        y = y0 + h - h * k / 4
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">clients</text>')
    out.append(f'<text x="{x0 - 48}" y="{y0 + h / 2}" transform="rotate(-90 {x0 - 48} {y0 + h / 2})" '
               f'text-anchor="middle">{html.escape(unit)}</text>')
    for i, (label, pts) in enumerate(runs.items()):
        pts = [(c, v) for c, v in pts if v > 0]
        if not pts:
            continue
        color = COLORS[i % len(COLORS)]
        path = ' '.join(f'{px(c):.1f},{py(v):.1f}' for c, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for c, v in pts:
            out.append(f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="2.5" fill="{color}"/>')
    return out


def main():
    doc = json.load(open(sys.argv[1]))
    levels = doc['tables'][0]['rows']
    tput, p99 = {}, {}
    for r in levels:
        c = int(r['clients (number)'])
        tput.setdefault(r['run'], []).append((c, r.get('MiB/s (number)', 0)))
        p99.setdefault(r['run'], []).append((c, r.get('p99 ms (number)', 0)))
    width, height = 1100, 420 + 18 * len(tput)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           '<text x="10" y="20" font-size="15">The article\'s benchmark: 2-30 MB objects, '
           'throughput and p99 latency against clients</text>']
    out += panel(80, 60, 430, 280, tput, 'MiB/s', 'throughput', 'MiB/s', False)
    out += panel(630, 60, 430, 280, p99, 'p99', 'p99 latency (log scale)', 'ms', True)
    for i, label in enumerate(tput):
        y = 400 + 18 * i
        color = COLORS[i % len(COLORS)]
        out.append(f'<line x1="80" x2="110" y1="{y - 4}" y2="{y - 4}" stroke="{color}" stroke-width="3"/>')
        out.append(f'<text x="118" y="{y}">{html.escape(label)}</text>')
    out.append('</svg>')
    open(sys.argv[2], 'w').write('\n'.join(out) + '\n')
    print(f'curves: {sys.argv[2]} ({len(tput)} runs)', file=sys.stderr)


if __name__ == '__main__':
    main()
