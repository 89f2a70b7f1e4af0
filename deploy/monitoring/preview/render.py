#!/usr/bin/env python3
"""Render kvproxy-dashboard.json to a PNG from a live Prometheus, without Grafana.

Each panel's queries run against Prometheus' HTTP API over the chosen window
and are drawn at the panel's gridPos, so the picture shows the dashboard's real
queries over real kvproxy metrics. It is a preview, not Grafana: layout, units,
thresholds and legends follow the JSON; Grafana's styling is approximated.

    python3 render.py --prometheus http://127.0.0.1:9090 --minutes 6 --out dashboard.png

Needs Debian's python3-matplotlib (run it with /usr/bin/python3 where another
Python comes first on PATH). Dashboard variables are replaced by ".*",
$__rate_interval by --rate-interval. dashboard.png beside this file was made
with two `kvproxy dev` instances scraped every 5 s by Debian's prometheus
package, under 6 minutes of mixed traffic at about 7 req/s (mostly GETs of
db-password and api-key, some PUTs, 404s and 400s without the Metadata header,
a few 401s, 403s and 429s), rendered with --minutes 6 as soon as it ended, so
the window holds the traffic but for its first few seconds.
"""
import argparse
import datetime as dt
import json
import os
import re
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

BG, PANEL, TEXT, GRID, MUTED = "#111217", "#181b1f", "#ccccdc", "#2c3235", "#8e8e8e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d", "#fade2a"]
COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "blue": "#5794f2", "text": "#3d71d9"}


def query(prom, expr, start, end, step, instant=False):
    if instant:
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": end})
    else:
        url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def substitute(expr, rate_interval):
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt) or json.dumps(metric)


def fmt_value(v, unit):
    if v is None:
        return "No data"
    if unit == "s":
        a = abs(v)
        if a >= 3600:
            return f"{v / 3600:.1f} hour"
        if a >= 60:
            return f"{v / 60:.1f} min"
        if a >= 1:
            return f"{v:.2f} s"
        return f"{v * 1000:.1f} ms"
    if unit == "percentunit":
        return f"{v * 100:.2f}%"
    if unit == "reqps":
        return f"{v:.1f} req/s"
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.2f}"


def threshold_color(v, steps):
    color = steps[0]["color"]
    for s in steps[1:]:
        if v is not None and s["value"] is not None and v >= s["value"]:
            color = s["color"]
    return COLORS.get(color, color)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default=os.path.join(os.path.dirname(__file__), "..", "kvproxy-dashboard.json"))
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--end", type=float, default=None, help="Unix time of the window's end (default: now)")
    ap.add_argument("--rate-interval", default="1m")
    ap.add_argument("--out", default="dashboard.png")
    a = ap.parse_args()

    dash = json.load(open(a.dashboard))
    end = round(a.end or time.time(), 3)  # Prometheus works in milliseconds
    start = round(end - a.minutes * 60, 3)
    step = max(5, int(a.minutes * 60 / 150))
    # query_range evaluates at start, start+step, ... <= end: every series of a
    # panel is put on this one grid, so they can be stacked point by point.
    grid = [start + k * step for k in range(round((end - start) * 1000) // (step * 1000) + 1)]
    grid_x = [dt.datetime.fromtimestamp(t) for t in grid]
    window = (dt.datetime.fromtimestamp(start), dt.datetime.fromtimestamp(end))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    unit_w, unit_h = 0.62, 0.42  # inches per grid unit
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + 0.6), facecolor=BG)
    W, H = 24 * unit_w, rows * unit_h + 0.6
    fig.text(0.01, 1 - 0.3 / H, f"{dash['title']}  ·  last {a.minutes:g} minutes  ·  rendered from Prometheus by "
             "deploy/monitoring/preview/render.py", color=TEXT, fontsize=12, va="center")

    def axes_for(gp, pad=0.06):
        x0 = (gp["x"] * unit_w + pad) / W
        y0 = 1 - ((gp["y"] + gp["h"]) * unit_h + 0.6 - pad) / H
        return [x0, y0, (gp["w"] * unit_w - 2 * pad) / W, (gp["h"] * unit_h - 2 * pad) / H]

    for p in dash["panels"]:
        gp = p["gridPos"]
        if p["type"] == "row":
            fig.text(axes_for(gp)[0], axes_for(gp)[1] + axes_for(gp)[3] / 2, p["title"], color=TEXT,
                     fontsize=11, fontweight="bold", va="center")
            continue
        box = axes_for(gp)
        bg = fig.add_axes(box)
        bg.set_axis_off()
        defaults = p["fieldConfig"]["defaults"]
        unit = defaults.get("unit", "none")
        if p["type"] == "stat":
            t = p["targets"][0]
            res = query(a.prometheus, substitute(t["expr"], a.rate_interval), start, end, step, instant=True)
            if p["options"].get("textMode") == "name":
                text = ", ".join(legend(t["legendFormat"], r["metric"]) for r in res) or "No data"
                color = COLORS["text"]
            else:
                v = float(res[0]["value"][1]) if res else None
                text = fmt_value(v, unit)
                color = threshold_color(v, defaults["thresholds"]["steps"])
            bg.add_patch(FancyBboxPatch((0, 0), 1, 1, boxstyle="round,pad=0,rounding_size=0.02",
                                        transform=bg.transAxes, color=color))
            bg.text(0.04, 0.86, p["title"], color="white", fontsize=10, transform=bg.transAxes, va="top")
            bg.text(0.5, 0.38, text, color="white", fontsize=20 if len(text) < 12 else 14, fontweight="bold",
                    transform=bg.transAxes, ha="center", va="center")
            continue

        bg.add_patch(FancyBboxPatch((0, 0), 1, 1, boxstyle="round,pad=0,rounding_size=0.01",
                                    transform=bg.transAxes, color=PANEL))
        bg.text(0.01, 0.97, p["title"], color=TEXT, fontsize=10, transform=bg.transAxes, va="top")
        left = 0.75 / W  # room for the y labels
        inner = [box[0] + left, box[1] + 0.22 * box[3], box[2] - left - 0.02 * box[2], box[3] * 0.62]
        ax = fig.add_axes(inner, facecolor=PANEL)
        series = []
        for t in p["targets"]:
            for r in query(a.prometheus, substitute(t["expr"], a.rate_interval), start, end, step):
                ys = [None] * len(grid)  # None: no point at that step
                for v in r["values"]:
                    k = round((float(v[0]) - start) / step)
                    if 0 <= k < len(grid):
                        ys[k] = float(v[1])
                series.append((legend(t["legendFormat"], r["metric"]), ys))
        overrides = {}
        for o in p["fieldConfig"].get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "color":
                    overrides[o["matcher"]["options"]] = COLORS.get(prop["value"]["fixedColor"], prop["value"]["fixedColor"])
        custom = defaults.get("custom", {})
        stacked = custom.get("stacking", {}).get("mode") == "normal"
        bars = custom.get("drawStyle") == "bars"
        series.sort(key=lambda s: s[0])
        base = [0.0] * len(grid)
        for i, (name, ys) in enumerate(series):
            color = overrides.get(name, PALETTE[i % len(PALETTE)])
            if stacked:  # a missing point adds nothing to the stack
                lo = base
                hi = [b + (y or 0.0) for b, y in zip(base, ys)]
                base = hi
            else:  # a missing point is a gap
                lo = [0.0] * len(grid)
                hi = [float("nan") if y is None else y for y in ys]
            if bars:
                width = (step / 86400) * 0.8
                ax.bar(grid_x, [h - l for h, l in zip(hi, lo)], bottom=lo, width=width, color=color, label=name)
            else:
                ax.plot(grid_x, hi, color=color, linewidth=1.2, label=name)
                ax.fill_between(grid_x, lo, hi, color=color, alpha=0.12)
        if not series:
            ax.text(0.5, 0.5, "No data", color=MUTED, transform=ax.transAxes, ha="center")
        ax.tick_params(colors=MUTED, labelsize=7)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.grid(color=GRID, linewidth=0.6)
        ax.set_xlim(*window)  # the whole window, wherever the data is
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _, u=unit: fmt_value(v, u)))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        if series:
            ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=min(len(series), 4), fontsize=7,
                      frameon=False, labelcolor=TEXT)
    fig.savefig(a.out, dpi=110, facecolor=BG)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
