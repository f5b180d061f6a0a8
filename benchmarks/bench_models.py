"""Benchmark: one drift + quality cycle of a model window on PostgreSQL, three ways.

- **floor**: one scan of the window reading every monitored column once (``SELECT sum(col), ...``);
- **monitor**: ``monitor.modeljobs.compute`` on the window (the reference summary is built first,
  once, and timed on its own line: a fixed reference is computed once and stored);
- **naive**: every row of the reference and the window into pandas (``COPY ... TO STDOUT``, the
  fastest way in), then Evidently's ``DataDriftPreset`` and ``ClassificationPreset``.

Each runs in its own process, so its wall time and peak memory (``VmHWM``) are its own. The
data: a reference day and a window day of N rows each, 20 numeric and 5 categorical features (a
few drifted on the second day, one numeric with 5 % NULLs), a score, a 0/1 decision and a label
for every row, generated inside PostgreSQL.

    python benchmarks/bench_models.py --rows 1000000       # a throwaway cluster (tests/pg.py)
    python benchmarks/bench_models.py --database-url postgresql://user@host/db --rows 1000000 --rows 10000000

Prints a Markdown table and writes it as JSON with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUMERIC = [f"f{i}" for i in range(1, 21)]
CATEGORICAL = [f"c{i}" for i in range(1, 6)]
REF_START, CUR_START, CUR_END = "2026-01-01", "2026-01-02", "2026-01-03"


def _normal(shift: str = "0", scale: str = "1") -> str:
    return f"(({shift}) + ({scale}) * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))"


def _features() -> list[str]:
    d = "day"
    cols = [
        f"{_normal(f'0.5 * {d}')} AS f1",  # shifted by half a standard deviation
        f"{_normal('0', f'1 + 0.5 * {d}')} AS f2",  # 1.5 times wider
        f"exp(0.5 * {_normal()}) AS f3",  # lognormal, stable
        "random() * 100 AS f4",  # uniform, stable
        "floor(random() * 10) AS f5",  # ten values, stable
        f"CASE WHEN random() < 0.05 THEN NULL ELSE {_normal('10', '2')} END AS f6",  # 5 % NULLs, stable
        f"{_normal(f'0.02 * {d}')} AS f7",  # a trivial shift: must not count as drift
    ]
    cols += [f"{_normal(str(i), str(1 + i % 3))} AS f{i}" for i in range(8, 21)]
    cols += [
        f"'v' || floor(power(random(), 1 + {d}) * 5)::int AS c1",  # shares move on day two
        "'v' || floor(random() * 3)::int AS c2",
        "'v' || floor(random() * 10)::int AS c3",
        "'v' || floor(power(random(), 2) * 20)::int AS c4",
        "CASE WHEN random() < 0.3 THEN 'android' ELSE 'ios' END AS c5",
    ]
    return cols


def load(url: str, n: int, table: str) -> None:
    """Create `table` (2n rows: reference day, window day) and `table`_labels, inside PostgreSQL."""
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text(f"DROP TABLE IF EXISTS {table}, {table}_labels"))
        c.execute(sa.text(f"""
            CREATE UNLOGGED TABLE {table} AS
            SELECT id, ts, {', '.join(NUMERIC)}, {', '.join(CATEGORICAL)}, score,
                   (score >= 0.5)::int AS pred, (random() < score)::int AS y
            FROM (SELECT *, 1 / (1 + exp(-(0.8 * f1 - 0.5 * f2 + 0.3 * (f7) + 0.01 * (f4 - 50)))) AS score
                  FROM (SELECT g AS id, day,
                               timestamp '{REF_START}' + day * interval '1 day'
                                 + ((g - 1) % {n}) * (interval '1 day' / {n}) AS ts,
                               {', '.join(_features())}
                        FROM (SELECT g, CASE WHEN g <= {n} THEN 0 ELSE 1 END AS day
                              FROM generate_series(1, {2 * n}) g) s) f) x"""))
        c.execute(sa.text(f"CREATE UNLOGGED TABLE {table}_labels AS SELECT id, y FROM {table}"))
        c.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN y"))
        c.execute(sa.text(f"ALTER TABLE {table}_labels ADD PRIMARY KEY (id)"))
        c.execute(sa.text(f"CREATE INDEX ON {table} (ts)"))
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text(f"VACUUM ANALYZE {table}"))
        c.execute(sa.text(f"VACUUM ANALYZE {table}_labels"))
    eng.dispose()


def model(table: str):
    from monitor.config import Model

    return Model.model_validate({
        "name": "bench", "task": "binary_classification", "window": "1d", "start": CUR_START,
        "source": {"table": table, "id": "id", "timestamp": "ts", "score": "score", "prediction": "pred",
                    "features": {"numeric": NUMERIC, "categorical": CATEGORICAL}},
        "labels": {"table": f"{table}_labels", "id": "id", "label": "y", "max_delay": "0d"},
        "reference": {"start": REF_START, "end": CUR_START}})


def _window():
    from monitor.durations import parse_timestamp
    from monitor.windows import Window

    return Window(parse_timestamp(CUR_START), parse_timestamp(CUR_END))


def _rss_mb() -> float:
    """This process's peak resident memory, MB: `VmHWM`, of its own address space. Linux carries
    `ru_maxrss` across `exec`, so a child of a parent that held 1 GB would report at least that."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- contenders (child processes)


def run_floor(url: str, table: str, store_url: str) -> dict:
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    cols = [f"SUM({c})" for c in [*NUMERIC, "score", "pred"]] + [f"COUNT({c})" for c in CATEGORICAL]
    with eng.connect() as c:
        c.execute(sa.text("SELECT 1"))
        base = _rss_mb()
        t0 = time.perf_counter()
        c.execute(sa.text(f"SELECT {', '.join(cols)} FROM {table} WHERE ts >= :a AND ts < :b"),
                  {"a": CUR_START, "b": CUR_END}).one()
        wall = time.perf_counter() - t0
    return {"wall": wall, "base_mb": base, "peak_mb": _rss_mb()}


def _store(store_url: str):
    from monitor.store import Store

    s = Store(store_url)
    s.migrate()
    return s


def _monitor_setup(url: str, table: str, store_url: str):
    """The results store, a connected engine (so connecting is not timed), the model, and the clock."""
    import sqlalchemy as sa

    from monitor.db import make_engine

    store, eng = _store(store_url), make_engine(url)
    with eng.connect() as c:
        c.execute(sa.text("SELECT 1"))
    return store, eng, model(table), datetime(2026, 1, 3, tzinfo=UTC)


def run_reference(url: str, table: str, store_url: str) -> dict:
    from monitor import modeljobs

    store, eng, m, now = _monitor_setup(url, table, store_url)
    base = _rss_mb()
    t0 = time.perf_counter()
    with eng.connect() as conn:
        modeljobs.source._setup(conn)
        _spec, _summary, rows = modeljobs.references._reference(conn, store, m, _window(), now)
        conn.rollback()
    return {"wall": time.perf_counter() - t0, "base_mb": base, "peak_mb": _rss_mb(), "rows": rows}


def run_monitor(url: str, table: str, store_url: str) -> dict:
    from monitor import modeljobs

    store, eng, m, now = _monitor_setup(url, table, store_url)
    base = _rss_mb()
    t0 = time.perf_counter()
    result, rows = modeljobs.compute(eng, store, m, _window(), now)
    store.save_model_window(result, now)  # with what it summed once per reference, as the model job does
    wall = time.perf_counter() - t0
    q = {x["name"]: x["value"] for x in result.metrics if x["kind"] == "quality"}
    drifted = sorted(x["name"] for x in result.metrics if x["kind"] == "feature_drift" and x["detected"] and not x["segment"])
    return {"wall": wall, "base_mb": base, "peak_mb": _rss_mb(), "rows": rows, "drift_share": result.drift_share,
            "drifted": drifted, "roc_auc": q.get("roc_auc")}


def _copy_frame(conn, sql: str):
    import io

    import pandas as pd

    buf = io.StringIO()
    with conn.connection.driver_connection.cursor() as cur:
        cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH CSV HEADER", buf)
    buf.seek(0)
    return pd.read_csv(buf)


def run_naive(url: str, table: str, store_url: str) -> dict:
    import sqlalchemy as sa
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset

    eng = sa.create_engine(url)
    with eng.connect() as c:
        c.execute(sa.text("SELECT 1"))
    base = _rss_mb()
    t0 = time.perf_counter()
    cols = ", ".join(f"p.{c}" for c in [*NUMERIC, *CATEGORICAL, "score", "pred"])
    q = (f"SELECT {cols}, l.y FROM {table} p JOIN {table}_labels l ON l.id = p.id "
         f"WHERE p.ts >= '{{a}}' AND p.ts < '{{b}}'")
    with eng.connect() as conn:
        ref = _copy_frame(conn, q.format(a=REF_START, b=CUR_START))
        cur = _copy_frame(conn, q.format(a=CUR_START, b=CUR_END))
    t_load = time.perf_counter() - t0
    dd = DataDefinition(numerical_columns=[*NUMERIC, "score"], categorical_columns=CATEGORICAL,
                        classification=[BinaryClassification(target="y", prediction_labels="pred",
                                                             prediction_probas="score")])
    snap = Report([DataDriftPreset(columns=[*NUMERIC, *CATEGORICAL, "score"]), ClassificationPreset()]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd))
    wall = time.perf_counter() - t0
    share = None
    for m in snap.dict()["metrics"]:
        if m["metric_name"].startswith("DriftedColumnsCount"):
            share = m["value"]["share"]
    return {"wall": wall, "load": t_load, "base_mb": base, "peak_mb": _rss_mb(), "drift_share_evidently": share}


def run_estimate(url: str, table: str, store_url: str) -> dict:
    """Quality estimated from the scores alone (as for a window whose labels are not mature): the
    calibration on the reference's labelled rows (once, then stored), then the window's estimate."""
    from monitor import estimate as E
    from monitor import modeljobs

    store, eng, m, now = _monitor_setup(url, table, store_url)
    base = _rss_mb()
    with eng.connect() as conn:
        modeljobs.source._setup(conn)
        t0 = time.perf_counter()
        cal = E.calibration(conn, store, m, now)
        t1 = time.perf_counter()
        est, method = E.estimates(conn, store, m, _window(), now)
        t2 = time.perf_counter()
        conn.rollback()
    return {"wall": t2 - t1, "calibration_wall": t1 - t0, "base_mb": base, "peak_mb": _rss_mb(), "method": method,
            "hl_p": cal["hl_p"], "estimated": {k: list(v) for k, v in est.items()}}


CHILDREN = {"floor": run_floor, "reference": run_reference, "monitor": run_monitor, "estimate": run_estimate,
            "naive": run_naive}


def child(name: str, url: str, table: str, store_url: str) -> dict:
    """Run one contender in a fresh interpreter and return what it measured."""
    out = subprocess.run([sys.executable, __file__, "--child", name, "--database-url", url, "--table", table,
                          "--store-url", store_url], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt_rows(n: int) -> str:
    return f"{n // 1_000_000} M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n:,}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                    help="PostgreSQL URL; default: a throwaway cluster from tests/pg.py")
    ap.add_argument("--rows", type=int, action="append", help="rows per day (repeatable); default 1000000")
    ap.add_argument("--naive-max", type=int, default=1_000_000, help="skip the naive way above this many rows")
    ap.add_argument("--reuse", action="store_true", help="reuse tables already loaded")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the floor, and of the monitor after its first window (the best is kept)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--store-url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.database_url, args.table, args.store_url)))
        return 0
    cluster = None
    if not args.database_url:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg import Cluster

        cluster = Cluster().init().start()
        args.database_url = cluster.create_db("bench")
        print(f"throwaway PostgreSQL at {args.database_url}", file=sys.stderr)
    elif not args.database_url.startswith("postgresql"):
        ap.error("--database-url (or BENCH_DATABASE_URL) must be a PostgreSQL URL")
    try:
        results = _run(args)
    finally:
        if cluster is not None:
            cluster.destroy()
    print(table_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _run(args) -> list[dict]:
    results = []
    for n in args.rows or [1_000_000]:
        table = f"bench_preds_{n}"
        if not args.reuse:
            t0 = time.perf_counter()
            load(args.database_url, n, table)
            print(f"loaded {2 * n:,} rows into {table} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            store_url = f"sqlite:///{tmp}/results.db"
            child("floor", args.database_url, table, store_url)  # warm the cache once
            floor = min((child("floor", args.database_url, table, store_url) for _ in range(args.repeat)), key=lambda r: r["wall"])
            ref = child("reference", args.database_url, table, store_url)
            # the first window also sums and stores what is summed once per reference: the later ones are steady
            runs = [child("monitor", args.database_url, table, store_url) for _ in range(args.repeat + 1)]
            mon = {**min(runs[1:], key=lambda r: r["wall"]), "first_wall": runs[0]["wall"]}
            child("estimate", args.database_url, table, store_url)  # the calibration, once (then stored)
            est = min((child("estimate", args.database_url, table, store_url) for _ in range(args.repeat)), key=lambda r: r["wall"])
            naive = child("naive", args.database_url, table, store_url) if n <= args.naive_max else None
        results.append({"rows": n, "floor": floor, "reference": ref, "monitor": mon, "estimate": est, "naive": naive})
        print(f"{_fmt_rows(n)}: floor {floor['wall']:.2f} s, monitor {mon['wall']:.2f} s "
              f"(reference once {ref['wall']:.1f} s), naive {naive['wall']:.1f} s" if naive else
              f"{_fmt_rows(n)}: floor {floor['wall']:.2f} s, monitor {mon['wall']:.2f} s (reference once {ref['wall']:.1f} s)",
              file=sys.stderr)
        print(f"  estimate {est['wall']:.2f} s ({est['method']}): roc_auc ~{est['estimated']['roc_auc'][0]:.4f} "
              f"[{est['estimated']['roc_auc'][1]:.4f}, {est['estimated']['roc_auc'][2]:.4f}], realized {mon['roc_auc']:.4f}",
              file=sys.stderr)
        print(f"  monitor drift share {mon['drift_share']:.3f}, drifted {', '.join(mon['drifted'])}; "
              f"roc_auc {mon['roc_auc']:.6f}" + (f"; Evidently drift share {naive['drift_share_evidently']:.3f}"
                                                 if naive else ""), file=sys.stderr)
    return results


def table_markdown(results: list[dict]) -> str:
    lines = ["| rows per window | way | wall time | peak memory (process) | vs floor | naive / this |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        n, floor, mon, naive, ref = r["rows"], r["floor"], r["monitor"], r["naive"], r["reference"]
        rows = [("floor: one `SELECT sum(col), ...` scan", floor), ("monitor: drift + online + quality", mon),
                ("monitor: reference summary (once)", ref)]
        if r.get("estimate"):
            rows.append(("monitor: estimated quality, no labels (calibration stored)", r["estimate"]))
        if naive:
            rows.append(("naive: pandas + Evidently DataDrift + Classification", naive))
        for name, x in rows:
            vs_floor = f"{x['wall'] / floor['wall']:.1f}x"
            speed = f"{naive['wall'] / x['wall']:.0f}x" if naive and x is not naive else ("" if naive else "n/a")
            lines.append(f"| {_fmt_rows(n)} | {name} | {x['wall']:.2f} s | {x['peak_mb']:.0f} MB | {vs_floor} | {speed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
