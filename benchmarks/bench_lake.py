"""Benchmark: one model window over Parquet files, on DuckDB and on a local Spark cluster.

The shape of `bench_models.py` (a reference day and a window day of N rows each, 20 numeric and 5
categorical features, a score, a 0/1 decision, labels in their own files), written as Parquet in
files of at most 1 M rows. Per engine, each in its own process:

- **floor**: one scan of the window reading every monitored column once (``SELECT sum(col), ...``);
- **monitor**: ``monitor.modeljobs.compute`` on the window, after the reference summary was built
  once and stored (timed on its own line), with the monitor's own peak memory (``VmHWM``, its own address space).

Spark: a standalone cluster on loopback from the pyspark wheel (tests/spark.py: a master, two
workers of 1 core and 1 GiB, a Spark Connect server), reached through ``sc://``.

    python benchmarks/bench_lake.py --rows 1000000 --rows 10000000 --engine duckdb --engine spark
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_models import CATEGORICAL, CUR_END, CUR_START, NUMERIC, REF_START, _rss_mb, _store  # noqa: E402

CHUNK = 1_000_000


def write_lake(root: Path, n: int, seed: int = 7) -> None:
    """2n prediction rows (reference day, window day) and their labels, as Parquet files."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    (root / "preds").mkdir(parents=True)
    (root / "labels").mkdir()
    t0 = np.datetime64(REF_START, "us")
    step = np.timedelta64(86_400_000_000 // n, "us")
    part = 0
    for day in (0, 1):
        for lo in range(0, n, CHUNK):
            k = min(CHUNK, n - lo)
            idx = np.arange(lo, lo + k)
            cols = {"id": idx + day * n + 1,
                    "ts": t0 + np.timedelta64(day * 86_400_000_000, "us") + idx * step}
            z = rng.standard_normal((20, k))
            f = {}
            f["f1"] = z[0] + 0.5 * day
            f["f2"] = z[1] * (1 + 0.5 * day)
            f["f3"] = np.exp(0.5 * z[2])
            f["f4"] = rng.random(k) * 100
            f["f5"] = np.floor(rng.random(k) * 10)
            f["f6"] = np.where(rng.random(k) < 0.05, np.nan, 10 + 2 * z[5])
            f["f7"] = z[6] + 0.02 * day
            for i in range(8, 21):
                f[f"f{i}"] = i + (1 + i % 3) * z[i - 1]
            cols.update(f)
            v = np.array([f"v{i}" for i in range(20)])
            cols["c1"] = v[np.floor(rng.random(k) ** (1 + day) * 5).astype(int)]
            cols["c2"] = v[np.floor(rng.random(k) * 3).astype(int)]
            cols["c3"] = v[np.floor(rng.random(k) * 10).astype(int)]
            cols["c4"] = v[np.floor(rng.random(k) ** 2 * 20).astype(int)]
            cols["c5"] = np.where(rng.random(k) < 0.3, "android", "ios")
            score = 1 / (1 + np.exp(-(0.8 * f["f1"] - 0.5 * f["f2"] + 0.3 * f["f7"] + 0.01 * (f["f4"] - 50))))
            cols["score"] = score
            cols["pred"] = (score >= 0.5).astype(np.int32)
            y = (rng.random(k) < score).astype(np.int32)
            table = pa.table({c: (pa.array(v, from_pandas=True) if c == "f6" else pa.array(v)) for c, v in cols.items()})
            pq.write_table(table, root / "preds" / f"part-{part:04d}.parquet")
            pq.write_table(pa.table({"id": cols["id"], "y": y}), root / "labels" / f"part-{part:04d}.parquet")
            part += 1


def model():
    from bench_models import model as m

    return m("preds").model_copy(update={"labels": m("preds").labels.model_copy(update={"table": "labels"})})


def _engine(url: str, lake: str):
    from monitor.db import make_engine

    return make_engine(url, None, {"preds": str(Path(lake) / "preds"), "labels": str(Path(lake) / "labels")})


def _window():
    from monitor.durations import parse_timestamp
    from monitor.windows import Window

    return Window(parse_timestamp(CUR_START), parse_timestamp(CUR_END))


def run_floor(url: str, lake: str, store_url: str) -> dict:
    import sqlalchemy as sa

    from monitor import engines

    eng = _engine(url, lake)
    with eng.connect() as c:
        e = engines.of(c)
        c.execute(sa.text("SELECT 1")).all()
        base = _rss_mb()
        cols = [f"SUM({c})" for c in [*NUMERIC, "score", "pred"]] + [f"COUNT({c})" for c in CATEGORICAL]
        w = _window()
        t0 = time.perf_counter()
        c.execute(sa.text(f"SELECT {', '.join(cols)} FROM preds WHERE ts >= :a AND ts < :b"),
                  {"a": e.bind_time(w.start), "b": e.bind_time(w.end)}).all()
        wall = time.perf_counter() - t0
    return {"wall": wall, "base_mb": base, "peak_mb": _rss_mb()}


def run_reference(url: str, lake: str, store_url: str) -> dict:
    from monitor import modeljobs

    store, eng = _store(store_url), _engine(url, lake)
    base = _rss_mb()
    t0 = time.perf_counter()
    with modeljobs.connect(eng) as conn:
        _spec, _summary, rows = modeljobs.references._reference(conn, store, model(), _window(), datetime(2026, 1, 3, tzinfo=UTC))
        conn.rollback()
    return {"wall": time.perf_counter() - t0, "base_mb": base, "peak_mb": _rss_mb(), "rows": rows}


def run_monitor(url: str, lake: str, store_url: str) -> dict:
    import scipy.special  # noqa: F401 (imported once per monitor process, as by `serve`: not the window's cost)

    from monitor import modeljobs

    store, eng = _store(store_url), _engine(url, lake)
    with eng.connect() as c:  # connected before the clock starts, as in bench_models.py
        import sqlalchemy as sa

        c.execute(sa.text("SELECT 1")).all()
    base = _rss_mb()
    now = datetime(2026, 1, 3, tzinfo=UTC)
    t0 = time.perf_counter()
    result, rows = modeljobs.compute(eng, store, model(), _window(), now)
    store.save_model_window(result, now)  # with what it summed once per reference, as the model job does
    wall = time.perf_counter() - t0
    q = {x["name"]: x["value"] for x in result.metrics if x["kind"] == "quality"}
    drifted = sorted(x["name"] for x in result.metrics if x["kind"] == "feature_drift" and x["detected"] and not x["segment"])
    return {"wall": wall, "base_mb": base, "peak_mb": _rss_mb(), "rows": rows, "drifted": drifted,
            "roc_auc": q.get("roc_auc"), "status": result.quality_status}


CHILDREN = {"floor": run_floor, "reference": run_reference, "monitor": run_monitor}


def child(name: str, url: str, lake: str, store_url: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, "--url", url, "--lake", lake, "--store-url", store_url],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:  # the first line naming an error, where a JVM's stack follows it
        said = next((line for line in out.stderr.splitlines() if "Error" in line or "Exception" in line), "")
        raise SystemExit(f"{name} failed: {said[:1000]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="rows per day (repeatable); default 1000000")
    ap.add_argument("--engine", action="append", choices=["duckdb", "spark"], help="repeatable; default both")
    ap.add_argument("--spark-url", help="a running Spark Connect server (sc://...); default: a local cluster")
    ap.add_argument("--duckdb-url", action="append",
                    help="a DuckDB URL (repeatable: one line each), e.g. with a memory cap: "
                         "duckdb:///:memory:?memory_limit=100MB&disable_parquet_prefetching=true; default duckdb:///:memory:")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of the floor, and of the monitor after its first window (the best is kept)")
    ap.add_argument("--dir", help="where the Parquet files go (default: a temporary folder)")
    ap.add_argument("--keep", help="a folder for the Parquet files that is kept and reused by later runs")
    ap.add_argument("--spark-memory", default="1g", help="memory of each of the local cluster's two workers (default 1g)")
    ap.add_argument("--reference-from", metavar="STORE",
                    help="a results store (SQLite file) holding the reference summary an earlier run built on the "
                         "same files: it is copied, and no reference is built")
    ap.add_argument("--share-reference", action="store_true",
                    help="build the reference once, on the first engine, and give the others its results store "
                         "(their reference line is then not measured)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--lake", help=argparse.SUPPRESS)
    ap.add_argument("--store-url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.url, args.lake, args.store_url)))
        return 0
    engines = args.engine or ["duckdb", "spark"]
    duckdb_urls = args.duckdb_url or ["duckdb:///:memory:"]
    cluster = None
    spark_url = args.spark_url
    if "spark" in engines and not spark_url:
        sys.path.insert(0, str(ROOT / "tests"))
        from spark import SparkCluster

        cluster = SparkCluster(worker_memory=args.spark_memory).start()
        spark_url = cluster.url
    results = []
    try:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            for n in args.rows or [1_000_000]:
                lake = Path(args.keep or tmp) / f"lake-{n}"
                if not (lake / "done").exists():
                    shutil.rmtree(lake, ignore_errors=True)
                    t0 = time.perf_counter()
                    write_lake(lake, n)
                    (lake / "done").touch()
                    print(f"wrote {2 * n:,} rows as Parquet in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                first = None
                for i, (engine, url) in enumerate((e, u) for e in engines for u in (duckdb_urls if e == "duckdb" else [spark_url])):
                    store = Path(tmp) / f"results-{engine}-{i}-{n}.db"
                    store_url = f"sqlite:///{store}"
                    load = os.getloadavg()[0]
                    child("floor", url, str(lake), store_url)  # warm the file cache once
                    floor = min((child("floor", url, str(lake), store_url) for _ in range(args.repeat)), key=lambda r: r["wall"])
                    try:
                        if args.reference_from or (first is not None and args.share_reference):
                            shutil.copy(args.reference_from or first, store)
                            ref = None
                        else:
                            ref = child("reference", url, str(lake), store_url)
                            first = Path(tmp) / f"reference-{n}.db"
                            shutil.copy(store, first)  # the reference only: each engine samples its own moments
                        # the first window also sums and stores what is summed once per reference (its
                        # chunks' moments, the estimate's calibration): the best of the later ones is steady
                        runs = [child("monitor", url, str(lake), store_url) for _ in range(args.repeat + 1)]
                    except SystemExit as failed:  # kept, and the run goes on with the next engine
                        results.append({"rows": n, "engine": engine, "url": url, "floor": floor, "failed": str(failed)[-3000:]})
                        print(f"{engine} {n:,}: floor {floor['wall']:.2f} s; {failed}", file=sys.stderr)
                        continue
                    mon = {**min(runs[1:], key=lambda r: r["wall"]), "first_wall": runs[0]["wall"]}
                    load = max(load, os.getloadavg()[0])
                    results.append({"rows": n, "engine": engine, "url": url, "floor": floor, "reference": ref,
                                    "monitor": mon, "load": load})
                    print(f"{engine} {n:,}: floor {floor['wall']:.2f} s, monitor {mon['wall']:.2f} s "
                          f"({mon['peak_mb']:.0f} MB), reference once {ref['wall'] if ref else float('nan'):.1f} s; "
                          f"drifted {mon['drifted']}, load {load:.1f}", file=sys.stderr)
                    if args.json:  # as it goes: a long run stopped keeps what it measured
                        Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if cluster is not None:
            cluster.destroy()
    print(table_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _label(r: dict) -> str:
    """The engine, and the settings of a DuckDB URL (`?memory_limit=...`) where it has any."""
    settings = r["url"].partition("?")[2] if r["engine"] == "duckdb" else ""
    return f"{r['engine']} `{settings}`" if settings else r["engine"]


def table_markdown(results: list[dict]) -> str:
    lines = ["| rows per window | engine | floor | monitor | vs floor | rows/s (floor / monitor) | monitor peak memory | "
             "first window | reference (once) | load average |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if "failed" in r:
            lines.append(f"| {r['rows']:,} | {_label(r)} | {r['floor']['wall']:.2f} s | failed: "
                         f"{r['failed'].splitlines()[-1][:120]} | | | | | | |")
            continue
        f, m = r["floor"]["wall"], r["monitor"]["wall"]
        ref = f"{r['reference']['wall']:.1f} s" if r.get("reference") else "shared"
        first = f"{r['monitor']['first_wall']:.2f} s" if "first_wall" in r["monitor"] else ""
        lines.append(f"| {r['rows']:,} | {_label(r)} | {f:.2f} s | {m:.2f} s | {m / f:.1f}x | "
                     f"{r['rows'] / f:,.0f} / {r['rows'] / m:,.0f} | {r['monitor']['peak_mb']:.0f} MB | {first} | {ref} | "
                     f"{r.get('load', float('nan')):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
