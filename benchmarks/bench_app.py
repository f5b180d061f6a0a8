"""How fast the review app's pages render over a year of results.

A year of daily (and weekly) results for 10 goals with segments, and 5 models x 25 features
(drift per feature and per segment, prediction drift, online signals, null shares, quality), is
written straight into a results store; then each page is rendered with Streamlit's AppTest, cold
(the app's read cache cleared) and warm, and the timings are printed as a table.

    .venv/bin/python benchmarks/bench_app.py [--postgres | --url URL] [--repeat 3] [--budget 2.0]

Exit code 1 when a cold render is over the budget (seconds).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor import review
from monitor.store import (
    Store,
    goal_results,
    goal_segments,
    goal_trajectory,
    model_metrics,
    model_windows,
)

UTC = timezone.utc
START = datetime(2025, 9, 1, tzinfo=UTC)  # a Monday
DAYS = 364
GOALS, MODELS, FEATURES, SEGMENTS = 10, 5, 25, ("web", "ios", "android", "api")
DAY, WEEK = 86400, 7 * 86400


def config_text(url: str, folder: Path) -> str:
    (folder / "g.sql").write_text("SELECT 1 AS value")
    goals = "\n".join(
        f"  - {{name: goal_{i}, title: Goal number {i}, sql: g.sql, direction: {'at_most' if i % 2 else 'at_least'}, "
        f"target: {0.01 if i % 2 else 100}, unit: {'ratio' if i % 2 else 'minutes'}, start: {START.date()}, "
        f"deadline: 2026-12-31, baseline: {{value: {0.02 if i % 2 else 80}, at: {START.date()}}}, owner: team-{i % MODELS}}}"
        for i in range(GOALS))
    feats = ", ".join(f"f{j}" for j in range(FEATURES - 5))
    cats = ", ".join(f"c{j}" for j in range(5))
    models = "\n".join(textwrap.dedent(f"""\
          - name: model_{m}
            task: binary_classification
            start: {START.date()}
            source: {{table: preds_{m}, id: id, timestamp: ts, score: score, features: {{numeric: [{feats}], categorical: [{cats}]}}}}
            labels: {{table: labels_{m}, id: id, label: y, max_delay: 30d}}
            owner: team-{m}-ml""") for m in range(MODELS))
    return f'database_url: "{url}"\ngoals:\n{goals}\nmodels:\n{textwrap.indent(models, "  ")}\n'


def fill(url: str) -> dict[str, int]:
    """Write the year of results in bulk; returns the row counts."""
    rng = np.random.default_rng(1)
    store = Store(url)
    store.migrate()
    now = START + timedelta(days=DAYS + 1)
    counts = dict.fromkeys(("goal_results", "goal_segments", "goal_trajectory", "model_windows", "model_metrics"), 0)
    with store.engine.begin() as conn:
        for i in range(GOALS):
            ratio = i % 2 == 1
            results, segs, traj = [], [], []
            for size, n in ((DAY, DAYS), (WEEK, DAYS // 7)):
                for k in range(n):
                    ws = START + timedelta(seconds=size * k)
                    den = float(rng.integers(5_000, 20_000) * size // DAY)
                    value = float(rng.beta(2, 150)) if ratio else float(rng.normal(85, 3))
                    num = value * den
                    met = value <= 0.01 if ratio else value >= 100
                    results.append({"goal": f"goal_{i}", "size_seconds": size, "window_start": ws,
                                    "window_end": ws + timedelta(seconds=size), "value": value, "numerator": num,
                                    "denominator": den, "ci_low": value * 0.9 if ratio else None,
                                    "ci_high": value * 1.1 if ratio else None, "met": met,
                                    "status": "met" if met else "missed", "needed": None,
                                    "provisional": k >= n - 2, "computed_at": now})
                    for s in SEGMENTS:
                        sd = den / len(SEGMENTS)
                        sv = value * float(rng.uniform(0.5, 1.5))
                        segs.append({"goal": f"goal_{i}", "size_seconds": size, "window_start": ws, "segment": s,
                                     "value": sv, "numerator": sv * sd, "denominator": sd})
                    if size == WEEK:
                        traj.append({"goal": f"goal_{i}", "as_of": ws + timedelta(weeks=1), "current": value,
                                     "planned": value, "slope_per_day": 0.0, "projected": value,
                                     "status": "on_track", "points": 8, "computed_at": now})
            conn.execute(goal_results.insert(), results)
            conn.execute(goal_segments.insert(), segs)
            conn.execute(goal_trajectory.insert(), traj)
            counts["goal_results"] += len(results)
            counts["goal_segments"] += len(segs)
            counts["goal_trajectory"] += len(traj)
        for m in range(MODELS):
            windows, metrics = [], []
            names = [f"f{j}" for j in range(FEATURES - 5)] + [f"c{j}" for j in range(5)]
            for k in range(DAYS):
                ws = START + timedelta(days=k)
                judged = k < DAYS - 30
                drifted = 0
                for f in names:
                    score = float(rng.gamma(1.0, 0.03))
                    drifted += score > 0.1
                    metrics.append({"model": f"model_{m}", "window_start": ws, "kind": "feature_drift", "name": f,
                                    "segment": "", "method": "wasserstein", "value": score, "threshold": 0.1,
                                    "detected": score > 0.1})
                    for s in SEGMENTS[:3]:
                        metrics.append({"model": f"model_{m}", "window_start": ws, "kind": "feature_drift", "name": f,
                                        "segment": s, "method": "wasserstein", "value": score, "threshold": 0.1,
                                        "detected": score > 0.1})
                    metrics.append({"model": f"model_{m}", "window_start": ws, "kind": "null_share", "name": f,
                                    "segment": "", "method": None, "value": float(rng.uniform(0, 0.02)),
                                    "threshold": None, "detected": None})
                metrics.append({"model": f"model_{m}", "window_start": ws, "kind": "prediction_drift", "name": "score",
                                "segment": "", "method": "wasserstein", "value": float(rng.gamma(1.0, 0.03)),
                                "threshold": 0.1, "detected": False})
                for name in ("predictions", "positive_rate", "score_mean", "score_p95", "null_share"):
                    metrics.append({"model": f"model_{m}", "window_start": ws, "kind": "online", "name": name,
                                    "segment": "", "method": None, "value": float(rng.uniform(0, 1)), "threshold": None,
                                    "detected": None})
                if judged:
                    for name in ("roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "brier"):
                        metrics.append({"model": f"model_{m}", "window_start": ws, "kind": "quality", "name": name,
                                        "segment": "", "method": None, "value": float(rng.uniform(0.7, 1)),
                                        "threshold": None, "detected": None})
                windows.append({"model": f"model_{m}", "window_start": ws, "window_end": ws + timedelta(days=1),
                                "rows": 1_000_000, "drift_share": drifted / len(names), "dataset_drift": drifted / len(names) > 0.5,
                                "quality_status": "ok" if judged else "pending", "label_coverage": 0.98 if judged else 0.3,
                                "computed_at": now})
            conn.execute(model_windows.insert(), windows)
            for chunk in range(0, len(metrics), 20_000):
                conn.execute(model_metrics.insert(), metrics[chunk:chunk + 20_000])
            counts["model_windows"] += len(windows)
            counts["model_metrics"] += len(metrics)
    for w in range(DAYS // 7):
        ws = START + timedelta(weeks=w)
        for i in range(3):
            review.add_item(store, week_start=ws, goal=f"goal_{i}", kind="action" if i == 2 else "note",
                            text=f"item {w}-{i}", author="bench", now=now, owner="x", due=date(2026, 1, 1))
    store.engine.dispose()
    return counts


def close_weeks(config: Path, weeks: int) -> None:
    """Close the first `weeks` weeks with snapshots of their cards, as the app does."""
    from app_streamlit import data
    from monitor.config import load_config

    cfg = load_config(config)
    reader = data.Reader(cfg.store_url)
    for w in range(weeks):
        ws = START + timedelta(weeks=w)
        cards = data.week_cards(cfg, reader, ws)
        snap = data.snapshot(cards, review.week_items(reader.store, ws), review.carried_actions(reader.store, ws),
                             data.drift_alerts(cfg, reader, ws, cards))
        review.close_week(reader.store, ws, snap, "bench", START + timedelta(weeks=w + 1, hours=10))


def render(at, page: str | None):
    t0 = time.perf_counter()
    if page:
        at.switch_page(page)
    at.run(timeout=120)
    dt = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="results store to fill (default: a fresh SQLite file); it must be empty")
    ap.add_argument("--postgres", action="store_true", help="fill a throwaway PostgreSQL cluster (tests/pg.py) instead")
    ap.add_argument("--repeat", type=int, default=3, help="renders per page and cache state (default 3)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds a cold render may take (default 2.0)")
    args = ap.parse_args(argv)
    cluster = None
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg import Cluster

        cluster = Cluster().init().start()
        args.url = cluster.create_db("bench_app")
    try:
        return run(args)
    finally:
        if cluster:
            cluster.destroy()


def run(args) -> int:
    from streamlit.testing.v1 import AppTest

    from app_streamlit import ui

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.url or f"sqlite:///{folder / 'results.db'}"
        t0 = time.perf_counter()
        counts = fill(url)
        print(f"filled {url.split('@')[-1]} in {time.perf_counter() - t0:.1f} s: "
              + ", ".join(f"{v:,} {k}" for k, v in counts.items()), flush=True)
        (folder / "monitor.yaml").write_text(config_text(url, folder))
        os.environ["MONITOR_CONFIG"] = str(folder / "monitor.yaml")
        close_weeks(folder / "monitor.yaml", DAYS // 7 - 4)
        home = ROOT / "app_streamlit" / "Home.py"
        last = (START + timedelta(weeks=DAYS // 7 - 1)).date().isoformat()
        old = (START + timedelta(weeks=10)).date().isoformat()
        pages = [("This week (latest week)", None, {"week": last}), ("This week (a closed week)", None, {"week": old}),
                 ("Goal", "goal.py", {"week": last, "goal": "goal_1"}), ("Models", "models.py", {"week": last}),
                 ("Review", "review.py", {"week": last})]
        warm_up = AppTest.from_file(str(home), default_timeout=120)
        render(warm_up, None)  # imports (pandas, altair, the app) happen once per process
        rows = []
        for name, page, query in pages:
            cold, warm = [], []
            for _ in range(args.repeat):
                at = AppTest.from_file(str(home), default_timeout=120)
                at.query_params.update(query)
                render(at, None)
                ui._read.clear()
                cold.append(render(at, page) if page else render(at, None))
                warm.append(render(at, None))
            rows.append((name, statistics.median(cold), max(cold), statistics.median(warm)))
    print()
    print(f"{'page':<28} {'cold median':>12} {'cold max':>10} {'warm median':>12}")
    for name, c, cmax, w in rows:
        print(f"{name:<28} {c:>10.2f} s {cmax:>8.2f} s {w:>10.2f} s")
    over = [name for name, _, cmax, _ in rows if cmax > args.budget]
    print(f"\n{'every page under' if not over else 'OVER'} {args.budget:.1f} s cold"
          + (f": {', '.join(over)}" if over else "") + f" ({GOALS} goals, {MODELS} models x {FEATURES} features, {DAYS} days)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
