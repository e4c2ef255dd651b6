#!/usr/bin/env python3
"""A benchmark's results as JSON and an SVG chart of its main figure, beside its table.

Usage: BENCHMARK | report.py NAME DIR [COLUMN]

Passes its input through to stdout unchanged, and when the input ends writes DIR/NAME.json
(every line before the table, then every row of the first Markdown table as an object keyed
by the column names, each cell's first number parsed out too; every later table likewise
under "tables") and DIR/NAME.svg (a bar per
row that has a ratio, with the row's target as a mark; or, given COLUMN, a bar per row of
that column's numbers). Exits non-zero if no table came (a
benchmark that failed before its results).
"""
import datetime
import html
import json
import os
import re
import sys

NUMBER = re.compile(r'-?\d+(?:\.\d+)?')


def first_number(cell):
    m = NUMBER.search(cell.replace(',', ''))
    return float(m.group()) if m else None


def parse(lines):
    """(text before the first table, column names, rows as lists of cells)."""
    return parse_from(lines, 0)


def parse_from(lines, start):
    """As `parse`, for the first table at or after line `start`."""
    for i in range(start, len(lines) - 1):
        if lines[i].startswith('|') and re.match(r'^\|(\s*-+\s*\|)+\s*$', lines[i + 1]):
            cols = [c.strip() for c in lines[i].strip().strip('|').split('|')]
            rows = []
            for l in lines[i + 2:]:
                if not l.startswith('|'):
                    break
                rows.append([c.strip() for c in l.strip().strip('|').split('|')])
            return lines[start:i], cols, rows
    return lines[start:], [], []


def records_of(cols, rows):
    """Rows as objects keyed by column name, with each cell's first number parsed out too."""
    records = []
    for r in rows:
        rec = {}
        for i, c in enumerate(cols):
            key = c or f'column {i + 1}'
            cell = r[i] if i < len(r) else ''
            rec[key] = cell
            n = first_number(cell)
            if n is not None:
                rec[key + ' (number)'] = n
        records.append(rec)
    return records


def later_tables(lines, cols, rows):
    """Every table after the first, as {"columns", "rows"}."""
    out = []
    at = next(i for i in range(len(lines)) if lines[i].startswith('|')) + 2 + len(rows)
    while True:
        _, c, r = parse_from(lines, at)
        if not r:
            return out
        out.append({'columns': c, 'rows': records_of(c, r)})
        at = next(i for i in range(at, len(lines)) if lines[i].startswith('|')) + 2 + len(r)


def chart(name, bars, what='podstore / limit or peer (bars), target (marks)'):
    """bars: (label, value, (target, at_most) or None). Horizontal bars, the targets as marks
    (a bar that misses its target is red)."""
    width, left, bar_h, gap, top = 760, 330, 18, 8, 40
    scale_max = max([b[1] for b in bars] + [b[2][0] if b[2] else 0 for b in bars] + [1.0]) * 1.1
    plot_w = width - left - 30
    height = top + len(bars) * (bar_h + gap) + 40
    x = lambda v: left + plot_w * v / scale_max
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="22" font-size="15">{html.escape(name)}: {html.escape(what)}</text>']
    for i, (label, ratio, target) in enumerate(bars):
        y = top + i * (bar_h + gap)
        short = label if len(label) <= 46 else label[:43] + '...'
        meets = target is None or (ratio <= target[0] if target[1] else ratio >= target[0])
        color = '#2a7' if meets else '#c44'
        out.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{html.escape(short)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{x(ratio) - left:.1f}" height="{bar_h}" fill="{color}"/>')
        out.append(f'<text x="{x(ratio) + 4:.1f}" y="{y + 13}">{ratio:.2f}</text>')
        if target is not None:
            out.append(f'<line x1="{x(target[0]):.1f}" x2="{x(target[0]):.1f}" y1="{y - 2}" y2="{y + bar_h + 2}" '
                       f'stroke="#000" stroke-width="2"/>')
    axis_y = top + len(bars) * (bar_h + gap) + 5
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#888"/>')
    # Ticks 1, 2 or 5 times a power of ten apart, at most ten of them.
    step = next(m * 10**e for e in range(12) for m in (1, 2, 5) if scale_max / (m * 10**e) <= 10)
    t = 0
    while t <= scale_max:
        out.append(f'<text x="{x(t):.1f}" y="{axis_y + 15}" text-anchor="middle">{t:g}</text>')
        t += step
    out.append('</svg>')
    return '\n'.join(out) + '\n'


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    name, out_dir = sys.argv[1], sys.argv[2]
    figure = sys.argv[3] if len(sys.argv) == 4 else None
    lines = []
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line.rstrip('\n'))
    before, cols, rows = parse(lines)
    if not rows:
        print(f'report: no results table from {name}', file=sys.stderr)
        return 1
    records = records_of(cols, rows)
    os.makedirs(out_dir, exist_ok=True)
    doc = {
        'benchmark': name,
        'written': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'context': [l for l in before if l.strip()],
        'columns': cols,
        'rows': records,
        'tables': later_tables(lines, cols, rows),
    }
    with open(os.path.join(out_dir, f'{name}.json'), 'w') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')
    ratio_col = figure or next((c for c in cols if c.startswith('ratio')), None)
    bars = []
    for r in records:
        if ratio_col and f'{ratio_col} (number)' in r:
            label = r[cols[0]] or cols[0]
            if NUMBER.fullmatch(label) and len(cols) > 1:
                label = f'{cols[0]} {label}, {r[cols[1]]}'

            target = None
            t = r.get('target', '')
            if t.startswith('at least') or t.startswith('at most'):
                target = (first_number(t), t.startswith('at most'))
            bars.append((label, r[f'{ratio_col} (number)'], target))
    with open(os.path.join(out_dir, f'{name}.svg'), 'w') as f:
        what = f'{figure} (bars)' if figure else 'podstore / limit or peer (bars), target (marks)'
        f.write(chart(name, bars, what) if bars else
                '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="30"><text x="10" y="20">'
                'no ratios in this run</text></svg>\n')
    print(f'report: {out_dir}/{name}.json, {out_dir}/{name}.svg ({len(records)} rows, {len(bars)} bars)',
          file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
