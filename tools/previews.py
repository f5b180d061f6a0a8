"""PNG previews of the dashboards, drawn from the demo's results with matplotlib (Grafana cannot run here).

The previews run the dashboards' own queries. The monitor is replayed one cycle a day over the
demo world (`run_cycle` with the clock pinned), the exporter's series are recorded after every
cycle, loaded into a real Prometheus as TSDB blocks (`promtool tsdb create-blocks-from
openmetrics`), and each panel's PromQL is asked over the whole span with the query-range API;
results-store panels run their SQL against the replayed results. Each panel is then drawn where
its gridPos puts it:

    python tools/previews.py --out docs/                   # the demo world, made on the fly
    python tools/previews.py --config monitor.yaml --out docs/ --days 28

A development tool, not part of the installed package: `make previews` runs it (and the browser
test, for the app's screenshots) to refresh docs/*.png.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor import conventions as n
from monitor import dashboards
from monitor.config import Config, load_config
from monitor.formatting import grafana_value

SAMPLE_EVERY = timedelta(hours=6)  # the recorded exposition is repeated at this step between cycles
STEP = 3 * 3600  # seconds between points of a range query
COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "blue": "#5794f2", "text": "#8e8e8e",
          "yellow": "#fade2a", "purple": "#b877d9"}
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0",
           "#508642", "#cca300", "#447ebc", "#c15c17"]


# --- replay -----------------------------------------------------------------------------------

def replay(cfg: Config, start: datetime, end: datetime, results_url: str, progress: bool = True) -> list[tuple]:
    """Run one cycle a day from `start` to `end` into a fresh results store.

    After each cycle: (time, the exporter's families, what Prometheus would record of the scrape)."""
    from monitor.exporter import registry
    from monitor.jobs import run_cycle
    from monitor.store import Store

    cfg = cfg.model_copy(update={"results_url": results_url})
    store = Store(results_url)
    snapshots = []
    day, t = timedelta(days=1), start
    while t <= end:
        now = t + cfg.grace
        report = run_cycle(cfg, now, store=store)
        if progress:
            print(f"  cycle {now:%Y-%m-%d %H:%M}: {report.ran} windows" +
                  (f", {len(report.failed)} failed" if report.failed else ""), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        families = list(registry(cfg, store).collect())
        scrape = {"scrape_duration_seconds": time.perf_counter() - t0,
                  "scrape_samples_scraped": float(sum(len(f.samples) for f in families))}
        snapshots.append((now.timestamp(), families, scrape))
        t += day
    return snapshots


def openmetrics(snapshots: list[tuple], until: float, job: str = n.SCRAPE_JOB) -> str:
    """The recorded families as one OpenMetrics text with timestamps, each snapshot repeated until the next.

    Labels are what Prometheus would store scraping the monitor with honor_labels: the monitor's own
    `job` label wins, every other series gets the scrape's job and instance; `up` is 1."""
    instance = n.SCRAPE_TARGET
    types: dict[str, str] = {}
    points: dict[tuple[str, tuple], list[tuple[float, float]]] = defaultdict(list)
    bounds = [s[0] for s in snapshots[1:]] + [until]
    for (at, families, scrape), stop in zip(snapshots, bounds):
        stamps = []
        t = at
        while t < stop:
            stamps.append(t)
            t += SAMPLE_EVERY.total_seconds()
        for fam in families:
            types[fam.name] = fam.type
            for s in fam.samples:
                labels = {"job": job, "instance": instance, **s.labels}
                key = (s.name, tuple(sorted(labels.items())))
                points[key] += [(ts, s.value) for ts in stamps]
        for name, value in {"up": 1.0, **scrape}.items():
            types[name] = "gauge"
            points[(name, (("instance", instance), ("job", job)))] += [(ts, value) for ts in stamps]
    by_family: dict[str, list[str]] = defaultdict(list)
    for (name, labels), pts in sorted(points.items()):
        family = next((f for f in (name, name.removesuffix("_total"), name.removesuffix("_info")) if f in types), name)
        lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        by_family[family] += [f"{name}{{{lab}}} {_num(v)} {ts:.3f}" for ts, v in pts]
    out = []
    for family in sorted(by_family):
        out.append(f"# TYPE {family} {types.get(family, 'gauge')}")
        out += by_family[family]
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return "NaN" if _nan(v) else repr(float(v))


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# --- a Prometheus over the recorded blocks ----------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not found:
        raise SystemExit(f"error: {name} is not installed: install the Debian package prometheus (`make deb`)")
    return found


class Backfilled:
    """A Prometheus on loopback serving TSDB blocks made from an OpenMetrics text."""

    def __init__(self, folder: Path, text: str):
        self.folder = folder
        (folder / "series.om").write_text(text)
        data = folder / "data"
        subprocess.run([_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", "-q",
                        str(folder / "series.om"), str(data)], check=True, capture_output=True, text=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (folder / "prometheus.yml").write_text("global: {scrape_interval: 1h}\n")
        self.log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [_binary("prometheus"), f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=100y",
             f"--query.lookback-delta={int(SAMPLE_EVERY.total_seconds() + 3600)}s", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(folder / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("prometheus did not become ready")

    def range(self, expr: str, start: float, end: float, step: int = STEP) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{q}", timeout=60) as r:
            doc = json.load(r)
        return [{"metric": s["metric"], "points": [(float(t), float(v)) for t, v in s["values"]]}
                for s in doc["data"]["result"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# --- panel data -------------------------------------------------------------------------------

def legend(fmt: str, metric: dict) -> str:
    if not fmt or fmt == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in ("job", "instance")) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def expand(text: str, values: dict[str, str]) -> str:
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f"${{{name}:sqlstring}}", "'" + value.replace("'", "''") + "'")
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return text


def panel_series(panel: dict, prom: Backfilled, store_engine, values: dict[str, str], start: float, end: float) -> list[dict]:
    """[{name, points: [(t, v)]}] for a Prometheus panel; [{name, rows}] tables for SQL panels."""
    out = []
    for t in panel.get("targets", []):
        if "expr" in t and t.get("format") == "table":
            out.append({"name": "table", "table": prom_table(panel, prom.range(expand(t["expr"], values), start, end))})
        elif "expr" in t:
            for s in prom.range(expand(t["expr"], values), start, end):
                out.append({"name": legend(t.get("legendFormat", ""), s["metric"]), "points": s["points"]})
        elif "rawSql" in t:
            out += sql_series(t, store_engine, values, start, end)
    return out


def prom_table(panel: dict, series: list[dict]):
    """A Prometheus table target at the end of the range: each series' labels and last value, turned
    into a matrix as the panel's `groupingToMatrix` transformation does."""
    import pandas as pd

    df = pd.DataFrame([{**{k: v for k, v in s["metric"].items() if k not in ("job", "instance", "__name__")},
                        "Value": s["points"][-1][1]} for s in series if s["points"]])
    for tr in panel.get("transformations", []):
        if tr["id"] == "groupingToMatrix" and not df.empty:
            o = tr["options"]
            df = (df.pivot_table(index=o["rowField"], columns=o["columnField"], values=o["valueField"], aggfunc="last")
                  .reset_index().rename_axis(columns=None))
    return df


def sql_series(t: dict, engine, values: dict[str, str], start: float, end: float) -> list[dict]:
    import pandas as pd

    lo = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S")
    hi = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M:%S")
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{lo}' AND '{hi}'", expand(t["rawSql"], values))
    with engine.connect() as conn:
        df = pd.read_sql_query(sql, conn.connection.driver_connection if engine.dialect.name == "sqlite" else conn)
    if t.get("format") == "table" or "time" not in df.columns:
        return [{"name": "table", "table": df}]
    when = pd.to_datetime(df["time"], utc=True).map(lambda x: x.timestamp())
    return [{"name": c, "points": [(a, float(b)) for a, b in zip(when, df[c]) if not _nan(b)]}
            for c in df.columns if c != "time"]


# --- drawing ----------------------------------------------------------------------------------

def threshold_color(v: float, fc: dict) -> str:
    steps = (fc.get("thresholds") or {}).get("steps") or []
    color = None
    for s in steps:
        if s["value"] is None or (not _nan(v) and v >= s["value"]):
            color = s["color"]
    return COLORS.get(color, color) if color else COLORS["green"]


def mapped(v: float, mappings: list[dict]) -> tuple[str, str] | None:
    for m in mappings or []:
        if m.get("type") == "value" and not _nan(v):
            key = str(int(v)) if float(v).is_integer() else str(v)
            hit = m["options"].get(key)
            if hit:
                return hit.get("text", key), COLORS.get(hit.get("color"), hit.get("color") or COLORS["text"])
    return None


def overrides_for(panel: dict, name: str) -> dict:
    props = {}
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = o["matcher"]
        hit = (matcher["id"] == "byName" and matcher["options"] == name) or \
              (matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name))
        if hit:
            props.update({p["id"]: p.get("value") for p in o["properties"]})
    return props


def draw_panel(ax, panel: dict, series: list[dict], start: float, end: float) -> None:
    import matplotlib.dates as mdates

    fc = panel.get("fieldConfig", {}).get("defaults", {})
    unit = fc.get("unit", "short")
    kind = panel["type"]
    if not series or ("table" in series[0] and series[0]["table"].empty):
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color=COLORS["text"], transform=ax.transAxes)
        ax.set_axis_off()
        return
    if kind == "stat":
        _stat(ax, panel, series, fc, unit)
    elif kind == "bargauge":
        _bars(ax, series, fc, unit)
    elif kind == "table":
        _table(ax, series[0]["table"])
    elif kind == "state-timeline":
        _timeline(ax, panel, series, fc, start, end)
    else:
        _lines(ax, panel, series, fc, unit)
    if kind in ("timeseries", "state-timeline"):
        ax.set_xlim(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
        ax.tick_params(labelsize=7, colors="#c7d0d9")


def _last(s: dict) -> float:
    pts = [v for _, v in s.get("points", []) if not _nan(v)]
    return pts[-1] if pts else float("nan")


def _stat(ax, panel, series, fc, unit):
    ax.set_axis_off()
    n = len(series)
    for i, s in enumerate(series):
        v = _last(s)
        hit = mapped(v, fc.get("mappings"))
        text, color = hit if hit else (grafana_value(v, unit, fc.get("decimals")), threshold_color(v, fc))
        x0, w = i / n, 1 / n
        ax.add_patch(__import__("matplotlib.patches", fromlist=["x"]).FancyBboxPatch(
            (x0 + 0.01, 0.05), w - 0.02, 0.8, boxstyle="round,pad=0.0,rounding_size=0.02",
            transform=ax.transAxes, color=color, alpha=0.85))
        label = s["name"] if n > 1 or panel["options"].get("textMode") == "value_and_name" else ""
        ax.text(x0 + w / 2, 0.5 if label else 0.45, text, ha="center", va="center", fontsize=16 if n < 3 else 11,
                weight="bold", color="white", transform=ax.transAxes)
        if label:
            ax.text(x0 + w / 2, 0.18, label, ha="center", va="center", fontsize=7, color="white", transform=ax.transAxes)
        pts = [(t, v) for t, v in s.get("points", []) if not _nan(v)]
        if panel["options"].get("graphMode") == "area" and len(pts) > 1 and n == 1:
            ys = [v for _, v in pts]
            lo, hi = min(ys), max(ys)
            span = (hi - lo) or 1
            xs = [x0 + 0.02 + (w - 0.04) * k / (len(pts) - 1) for k in range(len(pts))]
            ax.fill_between(xs, 0.06, [0.06 + 0.25 * (y - lo) / span for y in ys], color="white", alpha=0.25,
                            transform=ax.transAxes)


def _bars(ax, series, fc, unit):
    names = [s["name"] for s in series]
    if len(series) == 1 and "table" in series[0]:
        df = series[0]["table"]
        names, values = [str(x) for x in df.iloc[:, 0]], [float(x) for x in df.iloc[:, -1]]
    else:
        values = [_last(s) for s in series]
    y = range(len(values))
    ax.barh(list(y), [0 if _nan(v) else v for v in values], color=[threshold_color(v, fc) for v in values])
    ax.set_yticks(list(y), names, fontsize=7, color="#c7d0d9")
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(0, i, " " + grafana_value(v, unit, fc.get("decimals")), va="center", fontsize=7, color="white")
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _table(ax, df):
    ax.set_axis_off()
    df = df.head(12)
    cells = [[grafana_value(v, "short") if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    t = ax.table(cellText=cells, colLabels=list(df.columns), loc="upper center", cellLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(6)
    for cell in t.get_celld().values():
        cell.set_edgecolor("#2c3235")
        cell.set_facecolor("#181b1f")
        cell.get_text().set_color("#c7d0d9")


def _timeline(ax, panel, series, fc, start, end):
    for i, s in enumerate(series):
        mappings = overrides_for(panel, s["name"]).get("mappings") or fc.get("mappings")
        pts = [(t, v) for t, v in s["points"]]
        for k, (t, v) in enumerate(pts):
            t2 = pts[k + 1][0] if k + 1 < len(pts) else t + STEP
            hit = mapped(v, mappings)
            color = hit[1] if hit else threshold_color(v, fc)
            ax.barh(i, (t2 - t) / 86400, left=datetime.fromtimestamp(t, UTC), color=color, height=0.8)
        if pts:
            hit = mapped(pts[-1][1], mappings)
            if hit:
                ax.text(datetime.fromtimestamp(pts[-1][0], UTC), i, f" {hit[0]}", va="center", ha="right",
                        fontsize=7, color="white")
    ax.set_yticks(range(len(series)), [s["name"] for s in series], fontsize=7, color="#c7d0d9")
    ax.invert_yaxis()


def _lines(ax, panel, series, fc, unit):
    import matplotlib.ticker as mticker

    by_name = {s["name"]: s for s in series}
    for i, s in enumerate(series):
        props = overrides_for(panel, s["name"])
        color = (props.get("color") or {}).get("fixedColor")
        color = COLORS.get(color, color) or PALETTE[i % len(PALETTE)]
        xs = [datetime.fromtimestamp(t, UTC) for t, _ in s["points"]]
        ys = [v for _, v in s["points"]]
        if props.get("custom.lineWidth") == 0:
            other = by_name.get(props.get("custom.fillBelowTo"))
            if other:
                lows = dict(other["points"])
                both = [(x, y, lows[t]) for x, y, (t, _) in zip(xs, ys, s["points"]) if t in lows]
                ax.fill_between([b[0] for b in both], [b[2] for b in both], [b[1] for b in both],
                                step="post", color=PALETTE[0], alpha=0.2, linewidth=0, label="95 % interval")
            continue
        style = "--" if "custom.lineStyle" in props else "-"
        ax.step(xs, ys, where="post", color=color, linestyle=style, linewidth=1.4, label=s["name"])
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: grafana_value(v, unit, fc.get("decimals"))))
    if len(series) <= 12:
        ax.legend(fontsize=6, loc="upper left", frameon=False, labelcolor="#c7d0d9", ncol=2)
    ax.grid(color="#2c3235", linewidth=0.5)


def render_dashboard(model: dict, prom: Backfilled, store_engine, values: dict[str, str], start: float, end: float,
                     path: Path) -> int:
    """Draw the dashboard's top-level panels at their grid positions into a PNG; the number of panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = model["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in top)
    unit_w, unit_h = 0.75, 0.34
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + 0.8), facecolor="#111217")
    fig.suptitle(f"{model['title']}  ·  {', '.join(f'{k}={v}' for k, v in values.items() if k == 'model')}".rstrip(" ·"),
                 x=0.01, ha="left", color="#d8d9da", fontsize=13)
    drawn = 0
    H = rows * unit_h + 0.8
    for p in top:
        g = p["gridPos"]
        left, width = g["x"] / 24, g["w"] / 24
        bottom = 1 - (g["y"] + g["h"]) * unit_h / H - 0.6 / H
        height = g["h"] * unit_h / H
        if p["type"] == "row":
            fig.text(left + 0.005, bottom + height / 2, ("▸ " if p.get("collapsed") else "▾ ") + p["title"],
                     color="#d8d9da", fontsize=10, weight="bold", va="center")
            continue
        inset = {"timeseries": 0.035, "bargauge": min(0.3 * width, 0.1), "state-timeline": min(0.3 * width, 0.1)}.get(p["type"], 0)
        fig.text(left + 0.005, bottom + height - 0.05 / H, p["title"], fontsize=9, color="#d8d9da", va="top")
        ax = fig.add_axes((left + 0.004 + inset, bottom + 0.25 / H, width - 0.008 - inset, height - 0.55 / H),
                          facecolor="#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        draw_panel(ax, p, panel_series(p, prom, store_engine, values, start, end), start, end)
        drawn += 1
    fig.savefig(path, dpi=80, facecolor=fig.get_facecolor())
    plt.close(fig)
    return drawn


# --- command ----------------------------------------------------------------------------------

def demo_world_config(folder: Path, days: int, scale: float) -> Config:
    from monitor import demo_world

    url = f"sqlite:///{folder / 'demo.db'}"
    demo_world.generate(url, seed=7, days=days, scale=scale)
    demo_world.copy_sql(folder)
    (folder / "monitor.yaml").write_text(demo_world.demo_config(url))
    return load_config(folder / "monitor.yaml")


def previews(out: Path, config: str | None = None, days: int = 56, scale: float = 1.0, now: datetime | None = None,
             model: str | None = None, progress: bool = True) -> list[Path]:
    """Replay the monitor, then draw every dashboard into out/dashboard-<name>.png; the files written."""
    from monitor import demo_world
    from monitor.db import make_engine

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="monitor-previews-") as tmp:
        tmp = Path(tmp)
        if config:
            cfg = load_config(config)
            end = now or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        else:
            if progress:
                print(f"making the demo world ({days} days) ...", file=sys.stderr, flush=True)
            cfg = demo_world_config(tmp, days, scale)
            end = now or demo_world.DEMO_START + timedelta(days=days)
        first = min([g.start for g in cfg.goals] + [m.start for m in cfg.models])
        start = max(first, end - timedelta(days=days))
        results = f"sqlite:///{tmp / 'results.db'}"
        if progress:
            print(f"replaying one cycle a day from {start:%Y-%m-%d} to {end:%Y-%m-%d} ...", file=sys.stderr, flush=True)
        snapshots = replay(cfg, start + timedelta(days=1), end, results, progress)
        t0, t1 = snapshots[0][0], snapshots[-1][0] + SAMPLE_EVERY.total_seconds()
        prom = Backfilled(tmp, openmetrics(snapshots, until=t1))
        engine = make_engine(results)
        written = []
        try:
            for stem, model_json in dashboards.dashboards(cfg).items():
                values = {"scrape_job": n.SCRAPE_JOB}
                if any(v["name"] == "model" for v in model_json["templating"]["list"]):
                    values["model"] = model or (cfg.models[0].name if cfg.models else "")
                path = out / f"dashboard-{stem}.png"
                drawn = render_dashboard(model_json, prom, engine, values, t0, t1 - SAMPLE_EVERY.total_seconds(), path)
                if progress:
                    print(f"wrote {path} ({drawn} panels)", file=sys.stderr)
                written.append(path)
        finally:
            prom.stop()
            engine.dispose()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/previews.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="watch the sources of this config (default: make the demo world)")
    ap.add_argument("--out", default="docs", help="folder for dashboard-*.png (default: docs)")
    ap.add_argument("--days", type=int, default=56, help="days to replay (default 56)")
    ap.add_argument("--scale", type=float, default=1.0, help="row-count scale of the demo world (default 1.0)")
    ap.add_argument("--now", help="end of the replay (ISO 8601; default: the demo world's end, or today)")
    ap.add_argument("--model", help="model shown on the model-health preview (default: the first)")
    args = ap.parse_args(argv)
    from monitor.durations import parse_timestamp

    previews(Path(args.out), args.config, days=args.days, scale=args.scale,
             now=parse_timestamp(args.now) if args.now else None, model=args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
