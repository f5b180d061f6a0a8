"""Load benchmark of the service: 20 models x 20 features and 30 goals on hourly windows for 30 days.

Measures on a throwaway PostgreSQL: the catch-up of every window, the steady hourly cycle, and
`/metrics` latency under 20 concurrent scrapers from a second process on loopback.

    .venv/bin/python benchmarks/bench_service.py [--days 30] [--models 20] [--goals 30]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from pg import Cluster, free_port  # noqa: E402

START = datetime(2026, 9, 1, tzinfo=timezone.utc)


def load(engine, name: str, df: pd.DataFrame) -> None:
    """Create the table from the frame's types and fill it with COPY (inserts would dominate the run)."""
    import io

    df.head(0).to_sql(name, engine, index=False, if_exists="replace")
    buf = io.StringIO()
    df.to_csv(buf, index=False, header=False)
    buf.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.copy_expert(f"COPY {name} FROM STDIN WITH (FORMAT csv)", buf)
        raw.commit()
    finally:
        raw.close()


def make_world(url: str, folder: Path, days: int, n_models: int, n_features: int, n_goals: int, rows_per_hour: int) -> Path:
    rng = np.random.default_rng(1)
    engine = sa.create_engine(url)
    hours = days * 24
    n = hours * rows_per_hour
    models_yaml = []
    for m in range(n_models):
        ts = pd.Timestamp(START.replace(tzinfo=None)) + pd.to_timedelta(np.repeat(np.arange(hours), rows_per_hour) * 3600
                                                                         + rng.uniform(0, 3600, n), unit="s")
        df = pd.DataFrame({"id": np.arange(n), "ts": ts, "score": rng.uniform(size=n)})
        df["pred"] = (df.score > 0.5).astype(int)
        for f in range(n_features - 2):
            df[f"f{f}"] = rng.normal(size=n)
        df["c0"] = rng.choice(list("abcde"), n)
        df["c1"] = rng.choice(list("xyz"), n)
        load(engine, f"preds_{m}", df)
        load(engine, f"labels_{m}", pd.DataFrame({"id": df.id, "label": (rng.uniform(size=n) < df.score).astype(int)}))
        with engine.begin() as c:
            c.execute(sa.text(f"CREATE INDEX ON preds_{m} (ts)"))
            c.execute(sa.text(f"CREATE INDEX ON labels_{m} (id)"))
        numeric = ", ".join(f"f{f}" for f in range(n_features - 2))
        models_yaml.append(textwrap.dedent(f"""\
          - name: model_{m}
            task: binary_classification
            window: 1h
            start: {START.date()}
            source: {{table: preds_{m}, id: id, timestamp: ts, score: score, prediction: pred,
                      features: {{numeric: [{numeric}], categorical: [c0, c1]}}}}
            labels: {{table: labels_{m}, id: id, label: label, max_delay: 1h}}
            reference: {{start: {START.date()}, end: {(START + timedelta(days=2)).date()}}}
        """))
    ev = pd.DataFrame({"ts": pd.Timestamp(START.replace(tzinfo=None)) + pd.to_timedelta(rng.uniform(0, hours * 3600, hours * 200), unit="s"),
                       "bad": (rng.uniform(size=hours * 200) < 0.01).astype(int)})
    load(engine, "events", ev)
    with engine.begin() as c:
        c.execute(sa.text("CREATE INDEX ON events (ts)"))
    (folder / "goal.sql").write_text("SELECT 1.0 * SUM(bad) / NULLIF(COUNT(*), 0) AS value, SUM(bad) AS numerator, COUNT(*) AS denominator "
                                     "FROM events WHERE ts >= :window_start AND ts < :window_end")
    goals_yaml = [f"  - {{name: goal_{g}, sql: goal.sql, direction: at_most, target: 0.02, window: 1h, start: {START.date()}, review: 1w}}\n"
                  for g in range(n_goals)]
    cfg = folder / "monitor.yaml"
    cfg.write_text(f"database_url: {url}\nmodels:\n" + "".join("  " + line + "\n" for y in models_yaml for line in y.splitlines())
                   + "goals:\n" + "".join(goals_yaml))
    engine.dispose()
    return cfg


def scraper(url: str, seconds: float, out):
    lat = []
    t_end = time.time() + seconds
    while time.time() < t_end:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
        lat.append(time.perf_counter() - t0)
    out.put(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--goals", type=int, default=30)
    ap.add_argument("--rows-per-hour", type=int, default=100)
    ap.add_argument("--scrapers", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "service.json"))
    args = ap.parse_args()
    monitor = str(Path(sys.executable).parent / "monitor")
    cluster = Cluster().init().start()
    folder = Path(cluster.root) / "world"
    folder.mkdir()
    try:
        url = cluster.create_db("bench")
        t0 = time.perf_counter()
        cfg = make_world(url, folder, args.days, args.models, args.features, args.goals, args.rows_per_hour)
        print(f"world made in {time.perf_counter() - t0:.0f} s", flush=True)
        end = START + timedelta(days=args.days)
        t0 = time.perf_counter()
        subprocess.run([monitor, "run-once", "--config", str(cfg), "--now", end.isoformat()], check=True, stdout=subprocess.DEVNULL)
        catch_up = time.perf_counter() - t0
        print(f"catch-up: {catch_up:.1f} s", flush=True)
        t0 = time.perf_counter()
        subprocess.run([monitor, "run-once", "--config", str(cfg), "--now", (end + timedelta(hours=1)).isoformat()],
                       check=True, stdout=subprocess.DEVNULL)
        steady = time.perf_counter() - t0
        print(f"steady hourly cycle: {steady:.1f} s", flush=True)
        port = free_port()
        proc = subprocess.Popen([monitor, "metrics", "--config", str(cfg)], stdout=subprocess.PIPE)
        size = len(proc.communicate()[0])
        serve = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
            import time
            from wsgiref.simple_server import make_server
            from monitor.config import load_config
            from monitor.serve import Service, _ThreadingWSGIServer, _QuietHandler
            svc = Service(load_config({str(cfg)!r}))
            make_server('127.0.0.1', {port}, svc.wsgi(), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler).serve_forever()
            """)])
        time.sleep(3)
        q = mp.Queue()
        procs = [mp.Process(target=scraper, args=(f"http://127.0.0.1:{port}/metrics", 20, q)) for _ in range(args.scrapers)]
        for p in procs:
            p.start()
        lat = [x for _ in procs for x in q.get()]
        for p in procs:
            p.join()
        serve.send_signal(signal.SIGTERM)
        serve.wait()
        lat.sort()
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
        print(f"/metrics: {len(lat)} scrapes of {size / 1024:.0f} KiB by {args.scrapers} scrapers: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                  "models": args.models, "features": args.features, "goals": args.goals, "days": args.days,
                  "catch_up_s": round(catch_up, 1), "steady_cycle_s": round(steady, 2),
                  "metrics_p50_ms": round(p50 * 1000, 1), "metrics_p99_ms": round(p99 * 1000, 1),
                  "metrics_bytes": size, "scrapes": len(lat), "mean_ms": round(statistics.mean(lat) * 1000, 1)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
