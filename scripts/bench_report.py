#!/usr/bin/env python3
"""Turns criterion's output into the table of docs/benchmarks.md and the chart beside it.

Usage: python3 scripts/bench_report.py [target/criterion] [docs/benchmarks.svg]

Reads every `new/estimates.json` (the median, in ns) under the criterion directory, plus the
byte counts `benches/memory.rs` writes to `mem_per_entry/bytes.json`, prints a Markdown table
of medians and the ratios the design's targets are stated in, and writes an SVG chart of how
each ratio stands against its target. Standard library only.
"""

import html
import json
import math
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
svg_path = sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks.svg"


def load():
    medians = {}
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        name = meta["function_id"] or ""
        if meta.get("value_str"):
            name += "/" + meta["value_str"]
        medians[(meta["group_id"], name)] = est["median"]["point_estimate"]
    return medians


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


m = load()
bytes_path = os.path.join(root, "mem_per_entry", "bytes.json")
mem = json.load(open(bytes_path)) if os.path.exists(bytes_path) else {}
ratio_path = os.path.join(root, "zipf", "hit_ratio.json")
hit_ratio = json.load(open(ratio_path)) if os.path.exists(ratio_path) else {}


def get(group, name):
    return m.get((group, name))


print("| group | benchmark | median | per unit |")
print("|---|---|---|---|")
for (group, name), ns in sorted(m.items()):
    unit = ""
    if "/" in name and group in ("coalesce", "notify"):
        n = int(name.rsplit("/", 1)[1])
        unit = f"{fmt(ns / n)} per {'caller' if group == 'coalesce' else 'observer'}"
    if group == "zipf":
        unit = f"{1e6 / (ns / 1e9) / 1e6:.2f} M ops/s"
        if name in hit_ratio:
            unit += f", hit ratio {hit_ratio[name] * 100:.2f} %"
    print(f"| {group} | {name} | {fmt(ns)} | {unit} |")
for name, b in mem.items():
    print(f"| mem_per_entry | {name} | {b:.0f} bytes/entry | |")

# (label, measured, target, "le" when the measured value must be at most the target)
checks = []


def check(label, measured, target, direction, shown):
    if measured is not None:
        checks.append((label, measured, target, direction, shown))


for group in ("hit_1t", "hit_1t_str3"):
    ours = get(group, "pystackquery_fetch_query")
    floor = get(group, "mutex_hashmap_get_arc_clone_now")
    moka = get(group, "moka_future_get")
    if ours and floor:
        check(f"{group} vs Mutex<HashMap> + Arc + now()", ours / floor, 1.25, "le",
              f"{ours / floor:.2f}x (<= 1.25x)")
    if ours and moka:
        check(f"{group} faster than moka get", moka / ours, 3.0, "ge", f"{moka / ours:.2f}x (>= 3x)")
for w in (1, 1000):
    o = get("coalesce", f"pystackquery_fetch_query/{w}")
    t = get("coalesce", f"tokio_oncecell_get_or_init/{w}")
    k = get("coalesce", f"moka_get_with/{w}")
    if w == 1000 and o and t:
        check(f"coalesce W={w} vs OnceCell", o / t, 2.0, "le", f"{o / t:.2f}x (<= 2x)")
    if w == 1 and o and k:
        check(f"coalesce W={w} vs moka get_with", k / o, 1.0, "ge", f"{k / o:.2f}x (>= 1x)")
for n in (10, 100, 1000):
    o = get("notify", f"pystackquery_observers/{n}")
    e = get("notify", f"event_listener/{n}")
    if o and e:
        check(f"notify N={n} vs event-listener", o / e, 1.5, "le", f"{o / e:.2f}x (<= 1.5x)")
s_, f = get("swr_stale_hit", "pystackquery_stale_hit"), get("swr_stale_hit", "pystackquery_fresh_hit")
if s_ and f:
    check("swr stale hit vs fresh hit", s_ / f, 1.2, "le", f"{s_ / f:.2f}x (<= 1.2x)")
inv = get("invalidate_prefix", "pystackquery_invalidate_queries")
if inv:
    check("invalidate_prefix, 1M keys", inv / 1e3, 20.0, "le", f"{inv / 1e3:.2f} µs (<= 20 µs)")
l2, dec = get("l2_promote", "pystackquery_cold_fetch_from_l2"), get("l2_promote", "serde_json_decode_and_insert")
if l2 and dec:
    check("l2_promote vs decode + insert", l2 / dec, 1.5, "le", f"{l2 / dec:.2f}x (<= 1.5x)")
zo, zm = get("zipf", "pystackquery_fetch_query"), get("zipf", "moka_get_with")
if zo and zm:
    check("zipf throughput vs moka get_with", zm / zo, 1.0, "ge", f"{zm / zo:.2f}x (>= 1x)")
if hit_ratio.get("pystackquery_fetch_query") is not None:
    best = max(hit_ratio.values())
    gap = (best - hit_ratio["pystackquery_fetch_query"]) * 100
    # Expressed as a margin: 2 points allowed; a gap of 0 is shown at the chart's edge.
    check("zipf hit ratio gap to best peer", max(gap, 0.1), 2.0, "le", f"{gap:.2f} points (<= 2)")
if "pystackquery" in mem:
    b = mem["pystackquery"]
    check("mem_per_entry", b, 200.0, "le", f"{b:.0f} B (<= 200 B)")
    if "moka_future" in mem:
        check("mem_per_entry vs moka", b / mem["moka_future"], 1.0, "le",
              f"{b / mem['moka_future']:.2f}x (<= 1x)")

print()
print("| target | measured | met |")
print("|---|---|---|")
for label, measured, target, direction, shown in checks:
    met = measured <= target if direction == "le" else measured >= target
    print(f"| {label} | {shown} | {'yes' if met else 'no'} |")

# The chart: for each target, the margin (>1: met, <1: missed) on a log axis.
row_h, left, width, top = 26, 290, 520, 40
height = top + row_h * len(checks) + 50
lo, hi = math.log10(1 / 20), math.log10(20)


def x(margin):
    v = min(max(math.log10(margin), lo), hi)
    return left + (v - lo) / (hi - lo) * width


out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 190}" height="{height}" '
    'font-family="sans-serif" font-size="12">',
    f'<text x="10" y="22" font-size="15" font-weight="bold">pystackquery against its '
    "performance targets (margin, log scale: right of the line = met)</text>",
]
for i, (label, measured, target, direction, shown) in enumerate(checks):
    margin = target / measured if direction == "le" else measured / target
    y = top + i * row_h
    color = "#2e7d32" if margin >= 1 else "#c62828"
    x0, x1 = x(1), x(margin)
    out.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{html.escape(label)}</text>')
    out.append(
        f'<rect x="{min(x0, x1):.1f}" y="{y + 5}" width="{abs(x1 - x0):.1f}" height="15" '
        f'fill="{color}"/>'
    )
    out.append(f'<text x="{left + width + 8}" y="{y + 16}">{html.escape(shown)}</text>')
base = top + row_h * len(checks)
out.append(f'<line x1="{x(1):.1f}" y1="{top}" x2="{x(1):.1f}" y2="{base}" stroke="black"/>')
for tick in (1 / 20, 1 / 10, 1 / 4, 1 / 2, 1, 2, 4, 10, 20):
    label = f"{tick:g}x" if tick >= 1 else f"1/{round(1 / tick)}"
    out.append(f'<text x="{x(tick):.1f}" y="{base + 18}" text-anchor="middle">{label}</text>')
out.append(
    f'<text x="{left}" y="{base + 38}">margin = target / measured for "at most" targets, '
    "measured / target for \"at least\" targets</text>"
)
out.append("</svg>")
with open(svg_path, "w") as f:
    f.write("\n".join(out) + "\n")
print(f"\nwrote {svg_path}")
