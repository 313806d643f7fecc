"""The status page of gept-dashboard: server-side HTML and inline SVG from the status dict
(dashboard.Status.collect). No framework, no asset from elsewhere: one inline <style> allowed
by its hash in the Content-Security-Policy, one same-origin script (REFRESH_JS) that swaps in
a fresh <main> every refresh period (the page never blanks), and a meta refresh inside
<noscript> for browsers without scripts. Every link is relative, so the page works at / and
behind the web proxy's path prefix alike.

Each coverage cell is an SVG <rect> carrying data-series, data-start (ISO UTC), data-state
(stored, empty, missing, backfill, pending, untracked) and, when stored, data-items.
"""

from __future__ import annotations

import base64
import hashlib
import html
from datetime import UTC, datetime
from typing import Any

STYLE = """
:root { --gept-css: 1; color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f7f9; }
header, main { max-width: 64rem; margin: 0 auto; padding: .8rem 1rem; }
header { padding-bottom: 0; }
h1 { font-size: 1.3rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
h3 { font-size: .95rem; margin: .8rem 0 .2rem; }
a { color: #0b5cad; }
small, .muted { color: #59636e; }
section { background: #fff; border: 1px solid #e2e5e9; border-radius: .5rem; padding: .2rem .9rem .8rem;
  margin: .8rem 0; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(9.5rem, 1fr)); gap: .5rem;
  list-style: none; padding: 0; margin: .6rem 0; }
.tiles li { border-radius: .5rem; padding: .45rem .7rem; border: 1px solid transparent; }
.tiles b { display: block; font-size: .78rem; font-weight: 600; text-transform: uppercase;
  letter-spacing: .03em; opacity: .8; }
.tiles span { font-size: 1.05rem; font-weight: 650; }
.green { background: #dcf3e1; color: #14532d; } .amber { background: #fdf0c8; color: #6b3e0a; }
.red { background: #fbd5d5; color: #7f1d1d; } .grey { background: #eceff2; color: #3d444d; }
.banner { padding: .5rem .8rem; border-radius: .4rem; font-weight: 600; margin: .6rem 0 .2rem; }
.stale-note { display: none; }
body.stale .stale-note { display: block; }
svg { display: block; width: 100%; height: auto; max-width: 42rem; }
svg text { font: 10px system-ui, sans-serif; fill: #59636e; }
.s-stored { fill: #3f9c57; } .s-stored.late { fill: #8fd19e; } .s-empty { fill: #9fb3c8; }
.s-missing { fill: #d93b3b; } .s-backfill { fill: #f08c1a; } .s-pending { fill: #e6e9ed; }
.s-untracked { fill: #f6f7f9; stroke: #e2e5e9; stroke-width: .5; }
.legend { display: flex; flex-wrap: wrap; gap: .3rem .9rem; font-size: .85rem; margin: .3rem 0; }
.legend i { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; margin-right: .3rem;
  vertical-align: -.1rem; }
.k-stored { background: #3f9c57; } .k-late { background: #8fd19e; } .k-empty { background: #9fb3c8; }
.k-missing { background: #d93b3b; } .k-backfill { background: #f08c1a; } .k-pending { background: #e6e9ed; }
.k-untracked { background: #f6f7f9; border: 1px solid #d0d5db; }
.zoom a, .zoom strong { margin-right: .6rem; }
.line { fill: none; stroke: #0b5cad; stroke-width: 1.2; }
.median { stroke: #8b949e; stroke-dasharray: 3 3; stroke-width: .8; }
.drop { fill: #d93b3b; }
.bar { fill: #6a8fd0; } .bar.low { fill: #d93b3b; }
.fs-back { fill: #e6e9ed; } .fs-used { fill: #3f9c57; } .fs-used.amber { fill: #e0a31a; }
.fs-used.red { fill: #d93b3b; } .fs-mark { stroke: #7f1d1d; stroke-width: 1.5; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid #eceff2; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #3d444d; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.age { font-weight: 600; text-align: center; }
ul.plain { list-style: none; padding: 0; margin: .2rem 0; }
ul.plain li { padding: .25rem 0; border-bottom: 1px solid #eceff2; }
@media (max-width: 40rem) {
  body { font-size: 14px; } header, main { padding: .5rem .6rem; }
  section { padding: .1rem .6rem .6rem; } th, td { padding: .25rem .3rem; }
  .wide { display: none; }
}
"""

REFRESH_JS = """\
// gept-dashboard: every data-refresh seconds, fetch this page again and swap in its <main>.
// The old content stays on screen until the new one is ready, so nothing flickers; if the
// fetch fails the page stays and says it is stale. No other script runs on the page.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh"), 10) || 30;
  function tick() {
    fetch(window.location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        var current = document.querySelector("main");
        if (fresh && current) { current.replaceWith(document.adoptNode(fresh)); }
        document.body.classList.remove("stale");
      })
      .catch(function () { document.body.classList.add("stale"); })
      .then(function () { window.setTimeout(tick, seconds * 1000); });
  }
  window.setTimeout(tick, seconds * 1000);
})();
"""

ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#3f9c57"/>'
    '<rect x="3" y="7" width="10" height="2" fill="#fff"/></svg>'
)

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    "default-src 'none'; "
    "script-src 'self'; "
    f"style-src 'sha256-{_STYLE_HASH}'; "
    "img-src 'self'; "
    "connect-src 'self'; "
    "base-uri 'none'; "
    "form-action 'none'; "
    "frame-ancestors 'none'"
)

e = html.escape
LABELS = {
    "stored": "stored",
    "empty": "stored empty",
    "missing": "missing (owed)",
    "backfill": "being back-filled",
    "pending": "not due yet",
    "untracked": "before collection began",
}
SERIES_NAMES = {"5m": "5-minute windows", "1h": "Hourly windows"}
GRID_W = 360  # SVG units for the cells of one row
LABEL_W = 56


def ago(seconds: float | None) -> str:
    """'42 s', '17 min', '5 h 10 min', '3 days' (words for the page and the JSON summaries)."""
    if seconds is None:
        return "never"
    s = int(max(0, seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{s // 86400} days"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _short_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    return f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def _utc(epoch: float, fmt: str) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(fmt)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


# -- coverage ------------------------------------------------------------------------------------
def coverage_svg(series: dict[str, Any]) -> str:
    window = series["window_seconds"]
    span = series["row_seconds"]
    per_row = span // window
    cell_w = GRID_W / per_row
    cells = series["cells"]
    if not cells:
        return ""
    start = cells[0]["start"]
    rows = (cells[-1]["start"] - start) // span + 1
    row_h, gap = 12, 3
    height = rows * (row_h + gap)
    fmt = "%a %H:%M" if span < 86400 else "%a %d"
    out = [
        f'<svg viewBox="0 0 {LABEL_W + GRID_W} {height}" role="img" '
        f'aria-label="{e(SERIES_NAMES.get(series["series"], series["series"]))} coverage" '
        f'data-series="{e(series["series"])}" data-window="{window}">'
    ]
    for r in range(rows):
        y = r * (row_h + gap)
        out.append(f'<text x="0" y="{y + 9}">{_utc(start + r * span, fmt)}</text>')
    for c in cells:
        offset = (c["start"] - start) // window
        r, col = divmod(offset, per_row)
        x = LABEL_W + col * cell_w
        y = r * (row_h + gap)
        iso = _utc(c["start"], "%Y-%m-%dT%H:%M:%SZ")
        cls = f"s-{c['state']}" + (" late" if c["late"] else "")
        items = "" if c["items"] is None else f' data-items="{c["items"]}"'
        late = ' data-late="1"' if c["late"] else ""
        label = LABELS[c["state"]] + (", back-filled" if c["late"] else "")
        count = "" if c["items"] is None else f", {c['items']} items"
        out.append(
            f'<rect x="{x:.2f}" y="{y}" width="{max(cell_w - (0.6 if cell_w > 3 else 0), 0.5):.2f}" '
            f'height="{row_h}" class="{cls}" data-series="{e(series["series"])}" data-start="{iso}" '
            f'data-state="{c["state"]}"{items}{late}><title>{_utc(c["start"], "%a %H:%M UTC")}: '
            f"{label}{count}</title></rect>"
        )
    out.append("</svg>")
    return "".join(out)


def coverage_section(cov: dict[str, Any] | None) -> str:
    if not cov or "error" in cov:
        why = e(cov["error"]) if cov else "database unavailable"
        return f"<section id=coverage><h2>Coverage</h2><p class=red>Not available: {why}</p></section>"
    rng = cov["range"]
    zoom = " ".join(
        f"<strong>{label}</strong>" if key == rng else f'<a href="?range={key}">{label}</a>'
        for key, label in (("24h", "24 h"), ("7d", "7 days"))
    )
    parts = [f'<section id=coverage><h2>Coverage of the API windows</h2><p class="zoom">View: {zoom}</p>']
    for s in cov["series"]:
        level = "red" if s["counts"].get("missing") else "amber" if s["owed"] else "green"
        counts = s["counts"]
        late = sum(1 for c in s["cells"] if c["late"])
        legend = "".join(
            f'<span><i class="k-{k}"></i>{LABELS[k]} {counts.get(k, 0)}</span>'
            for k in ("stored", "empty", "missing", "backfill", "pending", "untracked")
            if counts.get(k) or k in ("stored", "missing")
        )
        if late:
            legend += f'<span><i class="k-late"></i>stored late (back-filled) {late}</span>'
        parts.append(
            f"<h3>{e(SERIES_NAMES.get(s['series'], s['series']))}</h3>"
            f'<p class="banner {level}" data-owed="{s["owed"]}" data-series="{e(s["series"])}">'
            f"{e(s['summary'])}</p>"
            f"{coverage_svg(s)}<div class=legend>{legend}</div>"
        )
    parts.append(
        "<p><small>One cell per API window, rows in UTC. Owed: a window that closed more than a "
        "window ago and is not in the ledger. The collectors heal owed windows within their "
        "look-back; older ones stay missing.</small></p></section>"
    )
    return "".join(parts)


# -- flow ----------------------------------------------------------------------------------------
def items_svg(ipw: dict[str, Any], now: float) -> str:
    pts = ipw["points"]
    if not pts:
        return "<p class=muted>No 5-minute window stored in the last 24 h.</p>"
    h, top = 60, 4
    peak = max(max(c for _, c in pts), 1) * 1.08
    start = now - 86400

    def xy(t: int, c: int) -> tuple[float, float]:
        return GRID_W * (t - start) / 86400, h - (h - top) * c / peak

    lines, run, prev = [], [], None
    for t, c in pts:
        if prev is not None and t - prev > 300:
            lines.append(run)
            run = []
        run.append(xy(t, c))
        prev = t
    lines.append(run)
    out = [f'<svg viewBox="0 0 {GRID_W} {h + 12}" role="img" aria-label="items per 5-minute window">']
    if ipw["median"]:
        y = xy(0, ipw["median"])[1]
        out.append(f'<line class="median" x1="0" x2="{GRID_W}" y1="{y:.1f}" y2="{y:.1f}"/>')
    for run in lines:
        if len(run) == 1:
            out.append(f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="1.2" class="drop"/>')
        else:
            out.append(
                '<polyline class="line" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in run) + '"/>'
            )
    for t in ipw.get("drop_epochs", []):
        c = next(c for tt, c in pts if tt == t)
        x, y = xy(t, c)
        out.append(
            f'<circle class="drop" cx="{x:.1f}" cy="{y:.1f}" r="2.2" '
            f'data-start="{_utc(t, "%Y-%m-%dT%H:%M:%SZ")}">'
            f"<title>{_utc(t, '%H:%M UTC')}: {c} items</title></circle>"
        )
    out.append(
        f'<text x="0" y="{h + 11}">24 h ago</text>'
        f'<text x="{GRID_W}" y="{h + 11}" text-anchor="end">now</text>'
    )
    out.append("</svg>")
    return "".join(out)


def rows_svg(rpm: dict[str, Any]) -> str:
    pts = rpm["points"]
    if not pts:
        return "<p class=muted>No rows in prices_latest_1m in the last 30 minutes.</p>"
    h = 50
    peak = max(max(c for _, c in pts), 1)
    bw = GRID_W / 31
    first = pts[-1][0] - 30 * 60
    median = rpm["median"] or 0
    out = [
        f'<svg viewBox="0 0 {GRID_W} {h + 12}" role="img" aria-label="rows per minute of prices_latest_1m">'
    ]
    for t, c in pts:
        i = (t - first) // 60
        bh = max(1.0, h * c / peak)
        low = " low" if median and c < 0.8 * median else ""
        out.append(
            f'<rect class="bar{low}" x="{i * bw:.1f}" y="{h - bh:.1f}" width="{bw * 0.8:.1f}" '
            f'height="{bh:.1f}" '
            f'data-minute="{_utc(t, "%Y-%m-%dT%H:%M:%SZ")}" data-rows="{c}"><title>{_utc(t, "%H:%M UTC")}: '
            f"{c} rows</title></rect>"
        )
    out.append(
        f'<text x="0" y="{h + 11}">30 min ago</text>'
        f'<text x="{GRID_W}" y="{h + 11}" text-anchor="end">last minute</text>'
    )
    out.append("</svg>")
    return "".join(out)


def flow_section(status: dict[str, Any], now: float) -> str:
    ipw = status.get("items_per_window")
    rpm = status.get("latest_rows_per_minute")
    if not ipw or "error" in ipw:
        why = e(ipw["error"]) if ipw else "database unavailable"
        return f"<section id=flow><h2>Flow</h2><p class=red>Not available: {why}</p></section>"
    drops = len(ipw["drops"])
    drop_text = (
        f'<span class="red">{drops} window(s) below 80 % of the median</span>' if drops else "no sudden drop"
    )
    rpm_text = (
        f"last minute {_num(rpm['points'][-1][1])} rows, median {_num(rpm['median'])}"
        if rpm["points"]
        else "no rows in the last 30 minutes"
    )
    return (
        "<section id=flow><h2>Flow</h2>"
        f"<h3>Items per 5-minute window, 24 h</h3><p>last {_num(ipw['last'])}, median {_num(ipw['median'])}; "
        f"{drop_text}</p>{items_svg(ipw, now)}"
        f"<h3>Rows per minute, prices_latest_1m, 30 min</h3><p>{rpm_text}</p>{rows_svg(rpm)}"
        "</section>"
    )


# -- storage -------------------------------------------------------------------------------------
def filesystem_svg(fs: dict[str, Any]) -> str:
    if "error" in fs or "used_percent" not in fs:
        return (
            f"<p class=muted>Data filesystem ({e(fs.get('path', '?'))}): {e(fs.get('error', 'unknown'))}</p>"
        )
    pct = fs["used_percent"]
    level = "red" if pct >= fs["critical_percent"] else "amber" if pct >= fs["alert_percent"] else ""
    w = GRID_W
    ax = w * fs["alert_percent"] / 100
    cx = w * fs["critical_percent"] / 100
    anchor = "start" if ax < 40 else "end" if ax > w - 40 else "middle"
    return (
        f"<p>Data filesystem ({e(fs['measured_at'])}): <b>{pct:.0f} % used</b>, "
        f"{_size(fs['available_bytes'])} free of {_size(fs['total_bytes'])}; alert at "
        f"{fs['alert_percent']:.0f} %, critical at {fs['critical_percent']:.0f} %</p>"
        f'<svg viewBox="0 0 {w} 30" role="img" aria-label="data filesystem use" data-used-percent="{pct}" '
        f'data-alert-percent="{fs["alert_percent"]}">'
        f'<rect class="fs-back" x="0" y="2" width="{w}" height="14" rx="3"/>'
        f'<rect class="fs-used {level}" x="0" y="2" width="{w * min(pct, 100) / 100:.1f}" '
        'height="14" rx="3"/>'
        f'<line class="fs-mark" x1="{ax:.1f}" x2="{ax:.1f}" y1="0" y2="18"/>'
        f'<line class="fs-mark" x1="{cx:.1f}" x2="{cx:.1f}" y1="0" y2="18"/>'
        f'<text x="{min(max(ax, 2), w - 2):.1f}" y="28" text-anchor="{anchor}">'
        f"alert {fs['alert_percent']:.0f}%</text>"
        "</svg>"
    )


def storage_section(storage: dict[str, Any] | None) -> str:
    if not storage:
        return ""
    fs = filesystem_svg(storage.get("filesystem", {"error": "not measured"}))
    if "error" in storage:
        return f"<section id=storage><h2>Storage</h2><p class=red>{e(storage['error'])}</p>{fs}</section>"
    edition = storage["edition"]
    note = (
        f"TimescaleDB {e(storage['timescaledb'])}, {'full' if edition == 'full' else 'Apache'} edition"
        + ("" if edition == "full" else " (no compression; retention by gept-timescaledb-retention.timer)")
        if storage["timescaledb"]
        else "TimescaleDB not installed: plain tables"
    )
    # The Apache edition has no retention policies: its retention is a timer the database
    # does not know about, so "none" would mislead; the oldest chunk shows what it keeps.
    no_policy = "by timer, if set" if edition == "apache" else "none"
    rows = []
    for h in storage["hypertables"]:
        if h["hypertable"]:
            chunks = f"{h['chunks']} ({h['compressed_chunks']} compressed)"
            ratio = f"{h['compression_ratio']}:1" if h.get("compression_ratio") else "-"
            oldest = h["oldest_chunk_start"][:10] if h.get("oldest_chunk_start") else "-"
        else:
            chunks, ratio, oldest = "plain table", "-", "-"
        rows.append(
            f'<tr data-table="{e(h["table"])}"><td>{e(h["table"])}</td><td class=num>{_size(h["bytes"])}</td>'
            f"<td class=num>{chunks}</td><td class=num>{ratio}</td>"
            f"<td>{e(h['retention'] or no_policy)}</td><td class=wide>{oldest}</td></tr>"
        )
    return (
        f"<section id=storage><h2>Storage</h2><p class=muted>{note}</p><div class=scroll><table>"
        "<tr><th>table</th><th class=num>size</th><th class=num>chunks</th><th class=num>ratio</th>"
        f"<th>retention</th><th class=wide>oldest data</th></tr>{''.join(rows)}</table></div>{fs}</section>"
    )


# -- safety --------------------------------------------------------------------------------------
def safety_section(safety: dict[str, Any]) -> str:
    items = []
    if safety["backups"]:
        for b in sorted(safety["backups"], key=lambda b: b["kind"]):
            ok = b["last_run_ok"]
            level = (
                "red"
                if ok is False
                or b["age_seconds"] is None
                or b["age_seconds"] > safety["backup_max_age_seconds"]
                else "green"
            )
            items.append(
                f'<li data-backup="{e(b["kind"])}"><span class="banner {level}">backup {e(b["kind"])}</span> '
                f"last success {ago(b['age_seconds'])} ago, {_size(b['size_bytes'])}; "
                f"last run {'ok' if ok else 'FAILED' if ok is False else 'unknown'}</li>"
            )
    else:
        items.append(
            f"<li><span class='banner grey'>backups</span> none recorded in {e(safety['textfile_dir'])}</li>"
        )
    d = safety["drill"]
    if d:
        fresh = d["last_success_age_seconds"] is not None and (
            d["last_success_age_seconds"] <= safety["drill_max_age_seconds"]
        )
        level = "green" if d["ok"] and fresh else "red"
        took = f", took {ago(d['duration_seconds'])}" if d.get("duration_seconds") is not None else ""
        items.append(
            f'<li data-drill="{"passed" if d["ok"] else "failed"}">'
            f'<span class="banner {level}">restore drill</span> '
            f"{'passed' if d['ok'] else 'FAILED'}, ran {ago(d['last_run_age_seconds'])} ago{took}; "
            f"last pass {ago(d['last_success_age_seconds'])} ago</li>"
        )
    else:
        items.append("<li><span class='banner grey'>restore drill</span> none recorded</li>")
    jobs = safety["jobs"]
    if jobs.get("error"):
        items.append(f"<li><span class='banner grey'>TimescaleDB jobs</span> {e(jobs['error'])}</li>")
    elif not jobs.get("available"):
        items.append("<li><span class='banner grey'>TimescaleDB jobs</span> TimescaleDB not installed</li>")
    elif jobs["failed"]:
        for j in jobs["failed"]:
            items.append(
                f'<li data-job="{j["job_id"]}"><span class="banner red">job {j["job_id"]} failed</span> '
                f"{e(j['proc_name'] or '')} {e(j['hypertable'] or '')}, last run "
                f"{ago(j['last_run_age_seconds'])} ago, {j['total_failures']} failure(s) in all</li>"
            )
    else:
        items.append("<li><span class='banner green'>TimescaleDB jobs</span> none failed</li>")
    a = safety["alerts"]
    if not a["ok"]:
        items.append(
            f"<li data-alerts=unavailable><span class='banner grey'>alerts</span> Alertmanager not "
            f"reachable ({e(a.get('error', ''))})</li>"
        )
    elif not a["firing"]:
        items.append("<li data-alerts=0><span class='banner green'>alerts</span> none firing</li>")
    else:
        for al in a["firing"]:
            level = "red" if al["severity"] == "critical" else "amber"
            items.append(
                f'<li data-alert="{e(al["alertname"])}">'
                f'<span class="banner {level}">{e(al["alertname"])}</span> '
                f"{e(al['severity'])}: {e(al['summary'])}</li>"
            )
    if a["ok"] and a.get("heartbeat"):
        names = ", ".join(sorted({h["alertname"] for h in a["heartbeat"]}))
        items.append(
            f"<li data-heartbeat><span class='banner green'>alerting pipeline</span> heartbeat "
            f"{e(names)} firing, as it should</li>"
        )
    return f"<section id=safety><h2>Safety</h2><ul class=plain>{''.join(items)}</ul></section>"


# -- tiles ---------------------------------------------------------------------------------------
def tiles(status: dict[str, Any]) -> str:
    out = []

    def tile(key: str, title: str, level: str, text: str) -> None:
        out.append(
            f'<li class="{level}" data-tile="{key}" data-level="{level}">'
            f"<b>{title}</b><span>{e(text)}</span></li>"
        )

    health = status["health"]
    five = next((t for t in status["tables"] if t["table"] == "price_data_5min"), None)
    tile(
        "data",
        "5-minute data",
        "green" if health["ok"] else "red",
        f"{_short_age(five['age_seconds'])} old" if five and five["age_seconds"] is not None else "none",
    )
    cov = status.get("coverage")
    if cov and "series" in cov:
        owed = sum(s["owed"] for s in cov["series"])
        missing = sum(s["counts"].get("missing", 0) for s in cov["series"])
        tile("owed", "windows owed", "red" if missing else "amber" if owed else "green", f"{owed}")
    else:
        tile("owed", "windows owed", "grey", "unknown")
    fs = (status.get("storage") or {}).get("filesystem", {})
    if "used_percent" in fs:
        pct = fs["used_percent"]
        level = "red" if pct >= fs["critical_percent"] else "amber" if pct >= fs["alert_percent"] else "green"
        tile("disk", "data disk", level, f"{pct:.0f} % used")
    else:
        tile("disk", "data disk", "grey", "unknown")
    safety = status["safety"]
    if safety["backups"]:
        newest = min(
            (b["age_seconds"] for b in safety["backups"] if b["age_seconds"] is not None), default=None
        )
        failed = any(b["last_run_ok"] is False for b in safety["backups"])
        stale = newest is None or newest > safety["backup_max_age_seconds"]
        tile("backup", "last backup", "red" if failed or stale else "green", f"{_short_age(newest)} ago")
    else:
        tile("backup", "last backup", "grey", "none recorded")
    d = safety["drill"]
    if d:
        fresh = d["last_success_age_seconds"] is not None and (
            d["last_success_age_seconds"] <= safety["drill_max_age_seconds"]
        )
        tile(
            "drill",
            "restore drill",
            "green" if d["ok"] and fresh else "red",
            f"{'passed' if d['ok'] else 'failed'} {_short_age(d['last_run_age_seconds'])} ago",
        )
    else:
        tile("drill", "restore drill", "grey", "none recorded")
    a = safety["alerts"]
    if a["ok"]:
        crit = any(x["severity"] == "critical" for x in a["firing"])
        level = "red" if crit else "amber" if a["firing"] else "green"
        tile("alerts", "alerts firing", level, str(len(a["firing"])))
    else:
        tile("alerts", "alerts firing", "grey", "unknown")
    failed = len(safety["jobs"].get("failed", []))
    if safety["jobs"].get("available"):
        tile("jobs", "failed jobs", "red" if failed else "green", str(failed))
    return f"<ul class=tiles>{''.join(out)}</ul>"


# -- the tables and collectors (as before) ------------------------------------------------------
def _rows(t: dict[str, Any]) -> str:
    if t["rows"] is None:
        return "unknown"
    return ("" if t["rows_exact"] else "~") + f"{t['rows']:,}"


def tables_section(status: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{e(t['table'])}</td><td class=num>"
        f"{_rows(t)}</td>"
        f"<td class=num>{_size(t['bytes'])}</td><td class=wide>{e(t['newest'] or '-')}</td>"
        f"<td class='age {t['colour']}'>{_short_age(t['age_seconds'])}</td></tr>"
        for t in status["tables"]
    )
    if not status["database"]["ok"]:
        rows = (
            f"<tr><td colspan=5 class='red'>database unavailable: {e(status['database']['error'])}</td></tr>"
        )
    crow = []
    for c in status["collectors"]:
        state = "green" if c["up"] and c["age_seconds"] is not None else "red" if not c["up"] else "amber"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(c["errors"].items()) if v) or "none"
        missing = "-" if c["missing_windows"] is None else str(c["missing_windows"])
        crow.append(
            f"<tr><td>gept-collector-{e(c['collector'])}</td><td class='age {state}'>"
            f"{'up' if c['up'] else 'down'}</td><td class=wide>{e(c['last_success'] or '-')}</td>"
            f"<td class=num>{_short_age(c['age_seconds'])}</td><td>{e(errors)}</td>"
            f"<td class='num {'amber' if c['missing_windows'] else ''}'>{missing}</td></tr>"
        )
    return (
        "<section id=tables><h2>Tables</h2><div class=scroll><table><tr><th>table</th><th class=num>rows</th>"
        f"<th class=num>size</th><th class=wide>newest</th><th>age</th></tr>{rows}</table></div></section>"
        "<section id=collectors><h2>Collectors</h2><div class=scroll><table><tr><th>unit</th><th>state</th>"
        "<th class=wide>last success</th><th class=num>ago</th><th>errors</th><th class=num>owed</th></tr>"
        f"{''.join(crow)}</table></div></section>"
    )


def render(status: dict[str, Any], refresh: int) -> str:
    now = datetime.fromisoformat(status["generated_at"]).timestamp()
    health = status["health"]
    rng = status.get("range", "24h")
    json_link = "api/status" + ("" if rng == "24h" else f"?range={rng}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>
<title>GePT status</title>
<link rel="icon" href="static/icon.svg" type="image/svg+xml">
<style>{STYLE}</style>
<script src="static/refresh.js" defer></script>
</head><body data-refresh="{refresh}">
<header><h1>GePT market-data host</h1></header>
<main data-generated="{e(status["generated_at"])}">
<div class="banner {"green" if health["ok"] else "red"}" id="health">{e(health["reason"])}</div>
<p class="banner amber stale-note">This page could not refresh: what you see may be old.</p>
{tiles(status)}
<p><small>Generated {e(status["generated_at"])} &middot; refreshes every {refresh}s &middot;
<a href="{json_link}">JSON</a> &middot; <a href="metrics">metrics</a> &middot;
<a href="health">health</a></small></p>
{coverage_section(status.get("coverage"))}
{flow_section(status, now)}
{storage_section(status.get("storage"))}
{safety_section(status["safety"])}
{tables_section(status)}
</main>
</body></html>
"""
