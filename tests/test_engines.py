"""The same world on PostgreSQL, DuckDB over Parquet and Spark (Spark Connect over Parquet).

One world of predictions and labels (the drift corpus of test_modeljobs.py, with segments, and
the class scores and regression targets of two more models of the same rows) is loaded into a
real PostgreSQL and written as Parquet files, which an in-memory DuckDB and a real Spark
standalone cluster (a master, two workers and a Spark Connect server on loopback) read through
the `parquet:` config. `run_cycle` computes every window of three models (binary, regression,
multiclass) and a goal on each engine, into a SQLite results store per engine. Counts, category
counts and statuses must agree exactly, distances and quality to 1e-9. Each engine's hashed
Wasserstein sample is checked against numpy on exactly the rows that engine's hash picks.
"""
from __future__ import annotations

import math
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import accuracy_score, average_precision_score, log_loss, mean_absolute_error, roc_auc_score
from test_modeljobs import CATEGORICAL, NUMERIC, PLANTED, REF_DAYS, _mv_sampled, _w_on, by_key, corpus, day, model, rows_in, utc

from monitor import engines, modeljobs
from monitor import estimate as E
from monitor.config import ConfigError, parse_config
from monitor.db import make_engine
from monitor.engines.base import disc_rank
from monitor.jobs import run_cycle
from monitor.store import Store
from monitor.windows import Window

DAYS = 6
NOW = utc(DAYS + 2)
DUPLICATED = 7
CLASSES = ["a", "b", "c", "d"]  # of the multiclass model
LABELS = ["y", "cls", "target"]  # the labels table's columns besides the id
GOAL_SQL = ("SELECT SUM(pred) AS numerator, COUNT(*) AS denominator, SUM(pred) / COUNT(*) AS value "
            "FROM preds WHERE at >= :window_start AND at < :window_end")


def world(per_day: int = 1500, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions with tz-aware UTC timestamps, labels of 85% of them)."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(DAYS):
        n = per_day + int(rng.integers(-100, 100))
        f = corpus(rng, n, d > REF_DAYS)
        f["at"] = pd.to_datetime([utc(d) + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, 86399, n))], utc=True)
        f["pid"] = np.arange(n) + d * 1_000_000
        p = rng.dirichlet([2, 1, 1, 0.5], n)  # the multiclass model's class scores, calibrated
        for i, c in enumerate(CLASSES):
            f[f"p_{c}"] = p[:, i]
        f["klass"] = np.array(CLASSES)[p.argmax(axis=1)]
        f["cls"] = np.array(CLASSES)[(rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1).clip(0, 3)]
        f["target"] = np.round(5 * f["score"] + rng.normal(0, 1, n), 2)  # the regression's truth of `score`
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    labels = df[["pid", "y", "cls", "target"]].sample(frac=0.85, random_state=seed)
    # the last day has predictions labelled twice: its quality is withheld on every engine
    twice = labels[labels.pid // 1_000_000 == DAYS - 1].head(DUPLICATED)
    return df, pd.concat([labels, twice]).reset_index(drop=True)


@pytest.fixture(scope="module")
def lake(tmp_path_factory, request):
    """The world as Parquet (predictions: a folder of one file per day) and in PostgreSQL."""
    root = tmp_path_factory.mktemp("lake")
    df, labels = world()
    (root / "preds").mkdir()
    us = {"coerce_timestamps": "us"}  # as Spark writes them (it reads no nanosecond timestamps)
    for d, part in df.groupby(df["at"].dt.floor("D")):
        part.drop(columns=LABELS).to_parquet(root / "preds" / f"part-{d:%Y%m%d}.parquet", index=False, **us)
    labels.to_parquet(root / "labels.parquet", index=False)
    return root, df, labels


def _load_pg(url: str, df: pd.DataFrame, labels: pd.DataFrame) -> None:
    eng = sa.create_engine(url)
    df.drop(columns=LABELS).to_sql("preds", eng, index=False, if_exists="replace", chunksize=5000)
    labels.to_sql("labels", eng, index=False, if_exists="replace", chunksize=5000)
    eng.dispose()


def _model(**over) -> dict:
    """The model of test_modeljobs.py, as config."""
    d = {"name": "m", "task": "binary_classification", "window": "1d", "start": utc(REF_DAYS).isoformat(),
         "source": {"table": "preds", "id": "pid", "timestamp": "at", "score": "score", "prediction": "pred",
                    "features": {"numeric": NUMERIC, "categorical": CATEGORICAL}},
         "labels": {"table": "labels", "id": "pid", "label": "y", "max_delay": "1d"},
         "reference": {"start": utc(0).isoformat(), "end": utc(REF_DAYS).isoformat()}, "recompute": 1}
    return {**d, **over}


def _config(tmp_path, database_url: str, parquet: dict | None):
    # a goal's SQL is in the engine's own dialect: DuckDB reserves `at`
    (tmp_path / "rate.sql").write_text(GOAL_SQL.replace(" at ", ' "at" ') if database_url.startswith("duckdb") else GOAL_SQL)
    m = _model(segments=["client"])
    reg = _model(name="reg", task="regression")
    reg["source"] = {**reg["source"], "prediction": None}
    reg["labels"] = {**reg["labels"], "label": "target"}
    mc = _model(name="mc", task="multiclass_classification")
    mc["source"] = {**mc["source"], "score": None, "prediction": "klass", "class_scores": {c: f"p_{c}" for c in CLASSES}}
    mc["labels"] = {**mc["labels"], "label": "cls"}
    data = {"database_url": database_url, "results_url": f"sqlite:///{tmp_path / 'results.db'}",
            "models": [m, reg, mc], "goals": [{"name": "pred_rate", "sql": "rate.sql", "direction": "at_most", "target": 0.6,
                                      "start": utc(0).isoformat(), "review": None}]}
    if parquet:
        data["parquet"] = parquet
    return parse_config(data, tmp_path / "monitor.yaml")


def _results(cfg) -> dict:
    store = Store(cfg.store_url)
    with store.engine.connect() as c:
        windows = {(r.model, r.window_start, r.rows, r.quality_status, r.label_coverage, r.drift_share, r.dataset_drift)
                   for r in c.execute(sa.text("SELECT * FROM monitor_model_windows"))}
        metrics = {(r.model, str(r.window_start)[:19], r.kind, r.name, r.segment, r.method): (r.value, r.detected)
                   for r in c.execute(sa.text("SELECT * FROM monitor_model_metrics"))}
        goals = [(g["window_start"], g["value"], g["numerator"], g["denominator"], g["status"])
                 for g in store.goal_series("pred_rate")]
    return {"windows": windows, "metrics": metrics, "goals": goals}


EXACT_KINDS = {"online"}  # counts; the rest are ratios of exact counts, or distances and quality


def _same(a: dict, b: dict, engine: str) -> None:
    assert a["windows"] == b["windows"], engine
    assert a["goals"] == b["goals"], engine
    assert a["metrics"].keys() == b["metrics"].keys(), engine
    for key, (va, da) in a["metrics"].items():
        vb, db = b["metrics"][key]
        assert da == db, (engine, key)
        if va is None or vb is None:
            assert va is vb, (engine, key)
        elif key[2] in EXACT_KINDS and key[3] == "predictions":
            assert va == vb, (engine, key)
        else:
            assert va == pytest.approx(vb, rel=1e-9, abs=1e-12), (engine, key)


@pytest.fixture(scope="module")
def on_postgresql(lake, pg_cluster, tmp_path_factory):
    root, df, labels = lake
    url = pg_cluster.create_db("engines_parity")
    _load_pg(url, df, labels)
    cfg = _config(tmp_path_factory.mktemp("pg"), url, None)
    report = run_cycle(cfg, NOW)
    assert report.ok, report.failed
    return cfg, _results(cfg)


def _parquet(root) -> dict:
    return {"preds": str(root / "preds"), "labels": str(root / "labels.parquet")}


def test_postgresql_results_are_those_of_the_world(on_postgresql, lake):
    """The reference run is right in itself: planted drift flagged, counts those of the rows."""
    _, df, labels = lake
    cfg, res = on_postgresql
    for d in range(REF_DAYS, DAYS):
        w = day(d)
        cur = df[(df["at"] >= pd.Timestamp(w.start)) & (df["at"] < pd.Timestamp(w.end))]
        key = str(w.start.replace(tzinfo=None))
        assert res["metrics"][("m", key, "online", "predictions", "", None)][0] == len(cur)
        flagged = {k[3] for k, (v, det) in res["metrics"].items()
                   if k[:3] == ("m", key, "feature_drift") and not k[4] and det}
        assert flagged == (PLANTED if d > REF_DAYS else set()), d
        twice = DUPLICATED if d == DAYS - 1 else 0
        for name in ("m", "reg", "mc"):
            assert res["metrics"][(name, key, "data_check", "label_duplicates", "", None)] == (twice, twice > 0)
        assert {w[3] for w in res["windows"] if str(w[1])[:19] == key} == {"invalid" if twice else "ok"}
        if twice:
            continue
        got = {k[:4]: v for k, (v, _) in res["metrics"].items() if k[1] == key and k[2] == "quality"}
        lab = cur.drop(columns=LABELS).merge(labels, on="pid")
        assert got[("reg", key, "quality", "mae")] == pytest.approx(mean_absolute_error(lab.target, lab.score), rel=1e-12)
        assert got[("mc", key, "quality", "accuracy")] == pytest.approx(accuracy_score(lab.cls, lab.klass), rel=1e-12)
        probs = lab[[f"p_{c}" for c in CLASSES]].to_numpy()
        assert got[("mc", key, "quality", "log_loss")] == pytest.approx(
            log_loss(lab.cls, probs, labels=CLASSES), rel=1e-9)
    assert [g[3] for g in res["goals"]] == [len(df[df["at"].dt.floor("D") == pd.Timestamp(utc(d))]) for d in range(DAYS)] + [0.0, 0.0]


CAPPED = "duckdb:///:memory:?memory_limit=64MB&threads=1&disable_parquet_prefetching=true"


@pytest.mark.parametrize("url", ["duckdb:///:memory:", CAPPED], ids=["default", "capped"])
def test_duckdb_over_parquet_gives_the_results_of_postgresql(lake, on_postgresql, tmp_path, url, monkeypatch):
    """Capped too: DuckDB's settings in the URL, those of its Parquet reader among them, are set on
    every connection, and the window spills rather than changes; its quality, sorted in slices of
    score (as a cap too small for one statement makes it), is the same."""
    root, _, _ = lake
    cfg = _config(tmp_path, url, _parquet(root))
    slices = []
    if url == CAPPED:
        eng = make_engine(url, None, _parquet(root))
        with eng.connect() as c:
            got = c.execute(sa.text("SELECT current_setting('memory_limit'), current_setting('threads'), "
                                    "current_setting('disable_parquet_prefetching')")).one()
            assert engines.of(c).sort_rows(c) == 61 * 2**20 // 40
        assert tuple(got) == ("61.0 MiB", 1, True)
        # as if the cap held 200 labelled rows per statement: the quality queries run in slices of score
        monkeypatch.setattr(type(engines.of(eng)), "sort_row_bytes", 61 * 2**20 // 200)

    def sliced(conn, cursor, sql, *_a):
        if "IS NULL THEN -1 WHEN" in sql and conn.dialect.name == "duckdb":  # a slice's condition
            slices.append("quality" if "OVER w" in sql else "calibration" if "SUM(sc)" in sql else sql)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", sliced)
    try:
        report = run_cycle(cfg, NOW)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", sliced)
    assert report.ok, report.failed
    _same(on_postgresql[1], _results(cfg), "duckdb")
    assert (slices.count("quality") > 10 and slices.count("calibration") > 10) == (url == CAPPED), set(slices)


def test_duckdb_file_with_tables_gives_the_results_of_postgresql(lake, on_postgresql, tmp_path):
    """A DuckDB database file holding the tables themselves (naive UTC timestamps)."""
    _, df, labels = lake
    import duckdb

    path = tmp_path / "lake.duckdb"
    with duckdb.connect(str(path)) as c:
        preds = df.drop(columns=LABELS).assign(at=df["at"].dt.tz_localize(None))  # noqa: F841 (read by DuckDB)
        c.execute("CREATE TABLE preds AS SELECT * FROM preds")
        c.execute("CREATE TABLE labels AS SELECT * FROM labels")
    cfg = _config(tmp_path, f"duckdb:///{path}", None)
    report = run_cycle(cfg, NOW)
    assert report.ok, report.failed
    _same(on_postgresql[1], _results(cfg), "duckdb file")


def test_spark_over_parquet_gives_the_results_of_postgresql(lake, on_postgresql, spark_cluster, tmp_path):
    root, _, _ = lake
    cfg = _config(tmp_path, spark_cluster.url, _parquet(root))
    report = run_cycle(cfg, NOW)
    assert report.ok, report.failed
    _same(on_postgresql[1], _results(cfg), "spark")


def _sample_ids(eng, w: Window, keep: int) -> set:
    with eng.connect() as c:
        e = engines.of(c)
        at = e.quote(c, "at")
        sql = (f"SELECT pid FROM preds WHERE {at} >= :a AND {at} < :b AND "
               f"{e.sample_bucket(e.quote(c, 'pid'), modeljobs.SAMPLE_BUCKETS)} < :k")
        return {int(r[0]) for r in c.execute(sa.text(sql), {"a": e.bind_time(w.start), "b": e.bind_time(w.end), "k": keep})}


def _check_sample(eng, df: pd.DataFrame, tmp_path, monkeypatch) -> None:
    """Above SAMPLE_ROWS values the Wasserstein sums come from the rows the engine's hash picks:
    exactly the estimate on those rows, in numpy; the rest stays that of every row."""
    df = df.assign(at=df["at"].dt.tz_localize(None))
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m, w = model(), day(REF_DAYS + 1)
    monkeypatch.setattr(modeljobs.passes, "SAMPLE_ROWS", 300)

    def once() -> dict:
        result, _ = modeljobs.compute(eng, store, m, w, utc(10))
        store.save_model_window(result, utc(10))  # with its reference, as the model job does
        return by_key(result)

    first, again = once(), once()
    assert first == again
    ref, cur = rows_in(df, Window(utc(0), utc(REF_DAYS))), rows_in(df, w)
    least = min(int(cur[c].notna().sum()) for c in [*NUMERIC, "score"])
    keep = math.ceil(65536 * 300 / least)
    sample = cur[cur.pid.isin(_sample_ids(eng, w, keep))]
    assert 0.5 < len(sample) / (len(cur) * keep / 65536) < 1.5 and len(sample) < len(cur) / 2
    for col in ["n_stable", "n_shift", "n_scale", "n_skew", "n_null_drift"]:
        mine = first[("feature_drift", col, "")]
        assert mine["method"] == "wasserstein"
        assert mine["value"] == pytest.approx(_w_on(ref[col].dropna().to_numpy(), sample[col].dropna().to_numpy()), rel=1e-9), col
        assert first[("null_share", col, "")]["value"] == pytest.approx(cur[col].isna().mean(), abs=1e-12)
    assert first[("prediction_drift", "score", "")]["value"] == pytest.approx(
        _w_on(ref.score.to_numpy(), sample.score.to_numpy()), rel=1e-9)
    assert first[("online", "predictions", "")]["value"] == len(cur)
    # from the quality query's order (every scored row labelled once): numpy's
    assert first[("online", "score_p95", "")]["value"] == pytest.approx(np.percentile(cur.score.dropna(), 95), rel=1e-12)
    mv, threshold = _mv_sampled(df, w, lambda rng, k: _sample_ids(eng, rng, k))
    assert first[("multivariate_drift", "reconstruction_error", "")]["value"] == pytest.approx(mv, rel=1e-9)
    assert first[("multivariate_drift", "reconstruction_error", "")]["threshold"] == pytest.approx(threshold, rel=1e-9)


@pytest.mark.slow
def test_duckdb_sample_is_numpy_on_exactly_its_rows(lake, tmp_path, monkeypatch):
    root, df, _ = lake
    _check_sample(make_engine("duckdb:///:memory:", None, _parquet(root)), df, tmp_path, monkeypatch)


def test_spark_sample_is_numpy_on_exactly_its_rows(lake, spark_cluster, tmp_path, monkeypatch):
    root, df, _ = lake
    _check_sample(make_engine(spark_cluster.url, None, _parquet(root)), df, tmp_path, monkeypatch)


def test_duckdb_reference_quantiles_in_several_statements_are_those_of_one(lake, monkeypatch):
    """Above `quantile_values` the reference's columns are cut in several statements (DuckDB holds
    each value of a statement's columns in memory): the same cut points as one statement, and each
    the order statistic percentile_disc takes, in numpy."""
    root, df, _ = lake
    rows = rows_in(df.assign(at=df["at"].dt.tz_localize(None)), ref := Window(utc(0), utc(REF_DAYS)))
    eng, m = make_engine("duckdb:///:memory:", None, _parquet(root)), model()
    statements = []
    sa.event.listen(eng, "before_cursor_execute", lambda c, cur, sql, *a: statements.append(sql.count("quantile_disc(")))

    def spec() -> dict:
        statements.clear()
        with eng.connect() as c:
            return modeljobs.specs.build_spec(c, m, ref)

    whole = spec()
    assert [n for n in statements if n] == [len(NUMERIC) + 1]
    monkeypatch.setattr(type(engines.for_url("duckdb://")), "quantile_values", 2 * len(rows))
    assert spec() == whole
    assert [n for n in statements if n] == [2] * (len(NUMERIC) // 2) + [1]
    values = np.sort(rows["n_skew"].dropna().to_numpy())
    levels = modeljobs.specs._levels(frozenset({modeljobs.specs.D.DISTANCES}))
    assert whole["num"]["n_skew"]["edges"] == sorted({values[disc_rank(q, len(values)) - 1] for q in levels})


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_reference_quantiles_are_the_order_statistics_percentile_disc_takes_where_q_n_is_whole(engine, request):
    """Cut points are the values at position ceil(q n) on every engine. DuckDB's quantile_disc
    takes the next position where q n is a whole number (n = 780, q = 1/65): a reference of
    such a size was cut elsewhere on DuckDB than on PostgreSQL and Spark, and its distances
    differed between them."""
    levels = modeljobs.specs.ALL_LEVELS
    url = "duckdb:///:memory:" if engine == "duckdb" else request.getfixturevalue("pg_cluster").create_db("engines_disc")
    eng = make_engine(url)
    rng = np.random.default_rng(5)
    for n in (1, 7, 100, 780, 1300, 6500):
        values = np.round(rng.normal(0, 1, n), 6)
        with eng.begin() as c:
            c.execute(sa.text("DROP TABLE IF EXISTS q"))
            c.execute(sa.text("CREATE TABLE q (x DOUBLE PRECISION)"))
            c.execute(sa.text("INSERT INTO q VALUES (:x)"), [{"x": float(v)} for v in values])
            c.execute(sa.text("INSERT INTO q VALUES (NULL)"))  # not counted, as in the reference's counts
            (agg,) = engines.of(c).quantiles([("x", n)], levels)
            got = c.execute(sa.text(f"SELECT {agg} FROM q")).scalar()
        ordered = np.sort(values)
        assert [float(v) for v in got] == [ordered[disc_rank(q, n) - 1] for q in levels], n
    assert disc_rank(1 / 65, 780) == 12  # the first position whose share reaches 1/65
    eng.dispose()


def test_quality_ordered_within_score_buckets_is_that_of_one_order(tmp_path, monkeypatch):
    """Scores tied across bucket edges, NULL scores and a prediction labelled twice: quality from
    rows ordered within score buckets (`split_order`, Spark's) is that of one order, and scikit-learn's."""
    rng = np.random.default_rng(5)
    n = 4000
    preds = pd.DataFrame({"pid": np.arange(n), "at": [utc(REF_DAYS + 1) + timedelta(seconds=i) for i in range(n)],
                          "score": np.where(rng.random(n) < 0.05, np.nan, np.round(rng.random(n), 1))})
    preds["pred"] = (preds.score >= 0.5).astype("Int64").where(preds.score.notna())
    labels = preds[["pid"]].sample(frac=0.9, random_state=1)
    labels["y"] = (rng.random(len(labels)) < preds.score.reindex(labels.index).fillna(0.5)).astype(int)
    labels = pd.concat([labels, labels[preds.score.reindex(labels.index) == 0.5].head(1)])  # labelled twice
    preds.to_parquet(tmp_path / "preds.parquet", index=False)
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    eng = make_engine("duckdb:///:memory:", None, {"preds": str(tmp_path / "preds.parquet"),
                                                   "labels": str(tmp_path / "labels.parquet")})
    m, w, edges = model(), day(REF_DAYS + 1), [0.2, 0.5, 0.7]  # 0.5: a tied score at an edge

    def quality(split: bool) -> dict:
        monkeypatch.setattr(type(engines.for_url("duckdb://")), "split_order", split)
        with eng.connect() as c:
            return modeljobs.quality_binary(c, m, w, p95=int(preds.score.notna().sum()), repeats=True, edges=edges)

    one, split = quality(False), quality(True)
    assert split.keys() == one.keys() and split["_repeats"] == one["_repeats"] == 1
    for k, v in one.items():
        assert split[k] == pytest.approx(v, rel=1e-12), k
    rows = labels.merge(preds, on="pid").dropna(subset=["score"])
    assert split["roc_auc"] == pytest.approx(roc_auc_score(rows.y, rows.score), rel=1e-12)
    assert split["pr_auc"] == pytest.approx(average_precision_score(rows.y, rows.score), rel=1e-12)


def test_quality_sorted_in_slices_of_score_is_that_of_one_statement(tmp_path, monkeypatch):
    """Tied scores, NULL, NaN and infinite ones, a prediction labelled twice: the quality of an
    engine that sorts only so many rows per statement (DuckDB under a memory_limit), one statement
    per slice of score, is that of one statement, and scikit-learn's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(8)
    n = 3000
    score = np.round(rng.random(n), 2)
    score[rng.random(n) < 0.03] = np.nan  # a NaN in the file, not a NULL
    score[:3] = [np.inf, -np.inf, 1.0]
    null = rng.random(n) < 0.03
    pq.write_table(pa.table({"pid": np.arange(n), "at": pa.array([utc(REF_DAYS + 1) + timedelta(seconds=i) for i in range(n)]),
                             "score": pa.array(score, mask=null), "pred": (score >= 0.5).astype(int)}), tmp_path / "preds.parquet")
    y = (rng.random(n) < np.nan_to_num(score, nan=0.5, posinf=1, neginf=0)).astype(int)
    ids = np.r_[np.arange(n), [10]]  # prediction 10 labelled twice
    pq.write_table(pa.table({"pid": ids, "y": np.r_[y, y[10]]}), tmp_path / "labels.parquet")
    eng = make_engine("duckdb:///:memory:", None, {"preds": str(tmp_path / "preds.parquet"),
                                                   "labels": str(tmp_path / "labels.parquet")})
    statements = []
    sa.event.listen(eng, "before_cursor_execute", lambda c, cur, sql, *a: statements.append("OVER w" in sql))
    m, w = model(), day(REF_DAYS + 1)
    finite = int(np.isfinite(score[~null]).sum())

    def quality(most) -> dict:
        monkeypatch.setattr(type(engines.for_url("duckdb://")), "sort_rows", lambda self, conn: most)
        statements.clear()
        with eng.connect() as c:
            return modeljobs.quality_binary(c, m, w, p95=finite, repeats=True)

    one = quality(None)
    assert sum(statements) == 2  # read plainly, then again clean: there are NaNs
    sliced = quality(400)
    assert sum(statements) >= 8  # 3000 scores, at most 400 a slice, then the unscored rows
    assert sliced.keys() == one.keys() and sliced["_repeats"] == one["_repeats"] == 1
    assert sliced["_non_finite"] == one["_non_finite"] == int((~np.isfinite(score) & ~null).sum())
    for k, v in one.items():
        assert sliced[k] == pytest.approx(v, rel=1e-12), k
    rows = pd.DataFrame({"pid": ids, "y": np.r_[y, y[10]]}).merge(
        pd.DataFrame({"pid": np.arange(n), "score": np.where(null, np.nan, score)}), on="pid")
    rows = rows[np.isfinite(rows.score)]
    assert sliced["roc_auc"] == pytest.approx(roc_auc_score(rows.y, rows.score), rel=1e-12)
    assert sliced["pr_auc"] == pytest.approx(average_precision_score(rows.y, rows.score), rel=1e-12)
    assert sliced["_p95"][1] == pytest.approx(np.percentile(rows.score, 95), rel=1e-12)
    sa.event.listen(eng, "before_cursor_execute", lambda c, cur, sql, *a: statements.append("SUM(sc)" in sql))
    statements.clear()
    with eng.connect() as c:  # the estimate's calibration bins too, summed over the same slices
        sliced = E._reference_bins(c, m, w)
        assert sum(statements) >= 7
        monkeypatch.setattr(type(engines.for_url("duckdb://")), "sort_rows", lambda self, conn: None)
        for a, b in zip(E._reference_bins(c, m, w), sliced, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        reg = model(task="regression")
        one = modeljobs.quality_regression(c, reg, w)
        monkeypatch.setattr(type(engines.for_url("duckdb://")), "sort_rows", lambda self, conn: 400)
        assert modeljobs.quality_regression(c, reg, w) == pytest.approx(one, rel=1e-12)  # and a regression's
    assert one["labelled"] == n + 1 and one["mae"] == pytest.approx(np.mean(np.abs(rows.score - rows.y)), rel=1e-12)


def test_learned_floors_order_their_reference_chunks_within_score_buckets_too(lake, tmp_path, monkeypatch):
    """On an engine with `split_order`, the quality of each reference day that a learned floor is
    taken from is ordered within score buckets like the window's: no chunk sorts every row in one task."""
    root, _, _ = lake
    monkeypatch.setattr(type(engines.for_url("duckdb://")), "split_order", True)
    eng = make_engine("duckdb:///:memory:", None, _parquet(root))
    orders = []
    sa.event.listen(eng, "before_cursor_execute",
                    lambda c, cur, sql, *a: orders.append("PARTITION BY r.b" in sql) if "OVER w" in sql else None)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    result, _ = modeljobs.compute(eng, store, model(quality={"roc_auc": {"min": {"sd": 3}}}), day(REF_DAYS + 1), utc(10))
    assert ("quality_threshold", "roc_auc", "min") in by_key(result)
    assert len(orders) == 1 + REF_DAYS and all(orders), orders


GONE_AWAY = """
import socket, sys, threading, time
import sqlalchemy as sa
from monitor.engines.spark import SparkSource

up = ("127.0.0.1", int(sys.argv[1]))
front, held = socket.create_server(("127.0.0.1", 0)), []


def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass


def forward():
    while True:
        try:
            c = front.accept()[0]
        except OSError:
            return
        u = socket.create_connection(up)
        held.extend([c, u])
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


threading.Thread(target=forward, daemon=True).start()
with SparkSource(f"sc://127.0.0.1:{front.getsockname()[1]}").connect() as c:
    print(c.execute(sa.text("SELECT 41 + 1")).scalar())
time.sleep(2)  # the client releases each result on the server in the background: let it finish
front.shutdown(socket.SHUT_RDWR)  # no longer listening (a close alone leaves the accept waiting)
front.close()
for s in held:  # the server is gone: every connection to it drops
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:  # its other end dropped first
        pass
    s.close()
print("gone", flush=True)
"""


def test_a_spark_session_whose_server_went_away_lets_the_process_exit(spark_cluster):
    """At exit the Spark Connect client calls its server, retrying for about ten minutes when the
    server is gone: the session is closed first, so that the process ends at once. The server is
    reached through a forwarder that the child closes, as if the server had stopped."""
    port = spark_cluster.url.rsplit(":", 1)[1]
    out = subprocess.run([sys.executable, "-c", GONE_AWAY, port], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["42", "gone"]


@pytest.mark.slow
def test_make_spark_starts_a_cluster_the_monitor_queries_and_stops_it_on_sigterm_leaving_nothing():
    """`make spark` (tests/spark.py as a script), with one worker beside the session's cluster."""
    import re
    import signal
    import socket

    proc = subprocess.Popen([sys.executable, "spark.py", "--workers", "1"], cwd=Path(__file__).parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = ""
        for line in proc.stdout:  # until the cluster is up (or the script ended)
            said += line
            if "Ctrl-C stops it" in line:
                break
        found = re.search(r"database_url: (sc://127\.0\.0\.1:(\d+))`.*logs in (\S+)\)", said)
        assert found, said + (proc.stderr.read() if proc.poll() is not None else "")
        url, port, root = found.group(1), int(found.group(2)), Path(found.group(3))
        eng = make_engine(url)
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT :a + 1 AS b"), {"a": 41}).scalar() == 42
        eng.dispose()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-2000:]
        assert "Spark stopped." in out and not root.exists()
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the Spark Connect server is gone"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_spark_reads_the_nanosecond_timestamps_pandas_writes_by_default(spark_cluster, lake, tmp_path, monkeypatch):
    """Spark reads no TIMESTAMP(NANOS) Parquet columns: local files' are read as their microseconds,
    in UTC or without a zone as written, and a window selects the rows pandas does. Where the
    monitor cannot see the files, the error names the table and how to write them."""
    from monitor.db import timestamps
    from monitor.engines import spark as S

    _, df, _ = lake
    rows = df.drop(columns=LABELS)
    w = day(REF_DAYS)
    expected = rows_in(rows.assign(at=rows["at"].dt.tz_localize(None)), w)
    for zone, frame in (("utc", rows), ("naive", rows.assign(at=rows["at"].dt.tz_localize(None)))):
        (tmp_path / zone).mkdir()
        frame.to_parquet(tmp_path / zone / "part-0.parquet", index=False)  # pandas' defaults: nanoseconds
        assert pq_type(tmp_path / zone / "part-0.parquet", "at").unit == "ns"
        eng = make_engine(spark_cluster.url, None, {"preds": str(tmp_path / zone)})
        with eng.connect() as c:
            assert timestamps(c, "preds", "at").format == "timestamp"
            got = c.execute(sa.text(f"SELECT COUNT(*), SUM(pred), MIN(at), MAX(at) FROM preds WHERE {modeljobs.source.model_where(c, model())}"),
                            modeljobs.source.model_bounds(c, model(), w)).one()
        eng.dispose()
        assert (got[0], got[1]) == (len(expected), int(expected["pred"].sum())), zone
        assert [pd.Timestamp(t).tz_localize(None) for t in got[2:]] == [expected["at"].min(), expected["at"].max()], zone
    monkeypatch.setattr(S, "_nanosecond_columns", lambda path: {})  # as for files on another machine
    eng = make_engine(spark_cluster.url, None, {"preds": str(tmp_path / "utc")})
    with pytest.raises(sa.exc.DBAPIError, match=r"parquet: preds \(.*utc\): Spark reads no nanosecond timestamps; .*coerce_timestamps='us'"):
        with eng.connect() as c:
            c.execute(sa.text("SELECT COUNT(*) FROM preds"))
    eng.dispose()


def pq_type(path, column: str):
    import pyarrow.parquet as pq

    return pq.read_schema(path).field(column).type


def test_spark_binds_named_parameters_and_reports_errors_in_one_line(spark_cluster, lake):
    """Spark binds the `:name` parameters itself; a failing query is one line, without the JVM's stack."""
    root, df, _ = lake
    eng = make_engine(spark_cluster.url, None, _parquet(root))
    w = day(2)
    with eng.connect() as c:
        e = engines.of(c)
        rows = c.execute(sa.text(GOAL_SQL), {"window_start": e.bind_time(w.start), "window_end": e.bind_time(w.end)}).all()
        cur = df[(df["at"] >= pd.Timestamp(w.start)) & (df["at"] < pd.Timestamp(w.end))]
        assert (rows[0][0], rows[0][1]) == (cur.pred.sum(), len(cur))
        with pytest.raises(sa.exc.DBAPIError) as err:
            c.execute("SELECT nope FROM preds")
    assert "nope" in str(err.value.orig) and "JVM" not in str(err.value.orig)


@pytest.mark.parametrize("url", ["sc://127.0.0.1:15002", "duckdb:///:memory:"])
def test_a_source_that_cannot_hold_results_needs_results_url(tmp_path, url):
    with pytest.raises(ConfigError, match="results_url: required when database_url is .*PostgreSQL or SQLite"):
        parse_config({"database_url": url}, tmp_path / "monitor.yaml")
    with pytest.raises(ConfigError, match="results_url: .* cannot hold"):
        parse_config({"database_url": "sqlite:///a.db", "results_url": url}, tmp_path / "monitor.yaml")


def test_parquet_tables_need_duckdb_or_spark_and_resolve_against_the_config(tmp_path):
    with pytest.raises(ConfigError, match="parquet: .* need a DuckDB"):
        parse_config({"database_url": "sqlite:///a.db", "parquet": {"preds": "logs/*.parquet"}}, tmp_path / "m.yaml")
    cfg = parse_config({"database_url": "duckdb:///lake.duckdb", "results_url": "sqlite:///r.db",
                        "parquet": {"preds": "logs/*.parquet", "far": "s3://bucket/x", "dbfs": "dbfs:/mnt/logs"}},
                       tmp_path / "m.yaml")
    assert cfg.parquet == {"preds": str(tmp_path / "logs/*.parquet"), "far": "s3://bucket/x", "dbfs": "dbfs:/mnt/logs"}
    assert cfg.database_url == f"duckdb:///{tmp_path / 'lake.duckdb'}"


def test_a_table_may_be_named_with_its_catalog_and_schema(tmp_path):
    """Spark catalogs and Databricks' Unity Catalog name tables `catalog.schema.table`."""
    m = _model()
    m["source"] = {**m["source"], "table": "main.ml.preds"}
    cfg = parse_config({"database_url": "sc://h:443", "results_url": "sqlite:///r.db", "models": [m]}, tmp_path / "m.yaml")
    assert engines.for_url(cfg.database_url).quote_table(None, cfg.models[0].source.table) == "`main`.`ml`.`preds`"
    m["source"] = {**m["source"], "table": "a.b.c.d"}
    with pytest.raises(ConfigError, match="catalog.schema.table"):
        parse_config({"database_url": "sc://h:443", "results_url": "sqlite:///r.db", "models": [m]}, tmp_path / "m.yaml")


def test_an_unreachable_spark_is_a_database_error_in_one_line(tmp_path):
    from monitor.check import DatabaseDown, check
    from pg import free_port

    cfg = parse_config({"database_url": f"sc://127.0.0.1:{free_port()}", "results_url": "sqlite:///r.db",
                        "models": [_model()]}, tmp_path / "m.yaml")
    with pytest.raises(DatabaseDown, match="database_url: cannot connect"):
        check(cfg)


def test_every_engine_module_is_found_by_its_url_and_dialect():
    assert [engines.for_url(u).name for u in ("postgresql+psycopg2://h/d", "sqlite:///x", "duckdb:///x", "sc://h:1",
                                              "mysql://h/d")] == ["postgresql", "sqlite", "duckdb", "spark", "sql"]
    assert engines.for_url("sc://h:1").quote(None, "a`b") == "`a``b`"


@pytest.mark.slow
def test_source_sql_outside_the_engine_modules_is_portable():
    """Spellings one engine lacks live in monitor/engines/ only (Spark has no DOUBLE PRECISION,
    hashtext is PostgreSQL's): SQL sent to a source elsewhere runs on every engine."""
    from pathlib import Path

    import monitor

    import ast

    lacking = ("DOUBLE PRECISION", "hashtext", "pg_export_snapshot", "SET LOCAL", "percentile_disc(")
    pkg = Path(monitor.__file__).parent
    found = []
    for f in pkg.rglob("*.py"):  # the modules and the packages (modeljobs/), the engines aside
        if f.name in ("demo_world.py", "store.py") or {"engines", "migrations"} & set(f.relative_to(pkg).parts):
            continue  # these write the monitor's own databases, or are where the spellings live
        tree = ast.parse(f.read_text())
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        for n in ast.walk(tree):  # string literals and f-string parts, docstrings aside
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                found += [(f.name, n.lineno, w) for w in lacking if w in n.value]
    assert found == []


@pytest.mark.parametrize("url, kept", [("duckdb:///:memory:", False), ("duckdb:///:memory:?preserve_insertion_order=true", True)])
def test_duckdb_keeps_insertion_order_only_when_the_url_asks(url, kept):
    """Off by default: no query relies on it, and DuckDB's joins and sorts take less memory without it."""
    with make_engine(url, None).connect() as c:
        assert c.execute(sa.text("SELECT current_setting('preserve_insertion_order')")).scalar() is kept


def test_a_duckdb_statement_is_cut_after_the_statement_timeout_and_the_next_one_runs():
    """DuckDB has no statement timeout: a timer interrupts the statement; one that ends in time is left alone."""
    import time

    from monitor.db import describe_error

    eng = make_engine("duckdb:///:memory:", timedelta(seconds=1))
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM range(1000)")).scalar() == 1000
        time.sleep(1.5)  # the first statement's timer, had it been left running, would fire now
        with pytest.raises(sa.exc.DBAPIError) as err:
            c.execute(sa.text("SELECT COUNT(*) FROM range(100000000000) a, range(10) b"))
        assert describe_error(err.value) == "statement timeout: cut after 1 s"
        c.rollback()
        assert c.execute(sa.text("SELECT COUNT(*) FROM range(2000000)")).scalar() == 2000000
    with make_engine("duckdb:///:memory:", None).connect() as c:  # no timeout: nothing is cut
        assert c.execute(sa.text("SELECT COUNT(*) FROM range(1000)")).scalar() == 1000


@pytest.mark.parametrize("engine", ["sqlite", "duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_column_of_text_where_a_number_is_configured_fails_the_schema_check_on_every_engine(engine, tmp_path, request):
    """The type check goes through the engine: a score or feature stored as text is a failing
    `schema` check naming the column and its type; numeric, boolean and untyped columns pass."""
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'src.db'}"
    elif engine == "duckdb":
        url = f"duckdb:///{tmp_path / 'src.duckdb'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_db("engines_schema")
    eng = make_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE p (pid INTEGER, ts TIMESTAMP, score VARCHAR(10), n1 DOUBLE PRECISION, n2 TEXT, b BOOLEAN)"))
        c.execute(sa.text("INSERT INTO p VALUES (1, '2026-01-05 10:00:00', 'high', 1.5, 'x', TRUE)"))
        c.execute(sa.text("CREATE TABLE l (pid INTEGER, y BOOLEAN)"))
    m = _model(source={"table": "p", "id": "pid", "timestamp": "ts", "score": "score", "prediction": "b",
                       "features": {"numeric": ["n1", "n2"], "categorical": ["n2"]}},
               labels={"table": "l", "id": "pid", "label": "y", "max_delay": "1d"})
    cfg = parse_config({"database_url": "sqlite:///x.db", "models": [m]}, tmp_path / "m.yaml")
    with eng.connect() as c:
        problems = modeljobs.checks._schema_problems(c, cfg.models[0])
    assert [p.split(" of table")[0] for p in problems] == ["source.score: column score", "source.features.numeric: column n2"]
    assert all("not a number" in p for p in problems)
    modeljobs.source._table_columns.clear()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    result, _ = modeljobs.compute(eng, store, cfg.models[0], day(REF_DAYS), NOW)
    assert [(x["name"], x["detected"]) for x in result.metrics if x["kind"] == "data_check"][0] == ("schema", True)
    eng.dispose()
