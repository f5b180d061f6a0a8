"""Data checks of a model window on SQLite and PostgreSQL: each broken input is caught and counted,
quality is withheld (`invalid`) rather than computed from it, and a clean window passes every check.

Non-finite scores and features (NaN, +-infinity) read as NULL: quality then equals scikit-learn's on
the finite rows to 1e-9, drift stays finite, and numpy warns about nothing.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn import metrics as skm
from test_modeljobs import CATEGORICAL, NUMERIC, REF_DAYS, by_key, day, make_world, model, rows_in, utc

from monitor import conventions as names
from monitor import db, modeljobs
from monitor.db import make_engine
from monitor.store import Store

pytestmark = pytest.mark.slow  # model windows computed over generated worlds

W = day(REF_DAYS + 1)
NOW = utc(REF_DAYS + 5)


@pytest.fixture
def world(db_url, tmp_path):
    db.clear_timestamp_cache()
    modeljobs.checks._table_columns.clear()
    df = make_world(db_url)
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    store.migrate()
    return df, make_engine(db_url), store


def checks(result) -> dict[str, tuple]:
    return {m["name"]: (m["value"], m["detected"]) for m in result.metrics if m["kind"] == names.DATA_CHECK_KIND}


def quality(result) -> dict[str, float]:
    return {m["name"]: m["value"] for m in result.metrics if m["kind"] == "quality"}


def window_pids(df: pd.DataFrame, w, every: int = 1, first: int = 0) -> list[int]:
    return [int(p) for p in rows_in(df, w).pid.iloc[first::every]]


def update(eng, sql: str, pids: list[int]) -> None:
    with eng.begin() as c:
        c.execute(sa.text(sql.replace(":pids", ", ".join(map(str, pids)))))


def test_a_clean_window_passes_every_check_and_records_its_newest_row_from_its_pass(world):
    df, eng, store = world
    statements = []
    sa.event.listen(eng, "before_cursor_execute", lambda *a: statements.append(a[2]))
    result, _ = modeljobs.compute(eng, store, model(), W, NOW)
    # the newest row comes with the window's numeric pass, not from a read of its own
    alone = [s for s in statements if "MAX(" in s and "COUNT(" not in s]
    assert not alone, alone
    got = checks(result)
    assert set(got) == set(names.DATA_CHECKS)
    assert not any(detected for _, detected in got.values()), got
    assert got["score_range"] == (0, False) and got["label_duplicates"] == (0, False)
    assert result.quality_status == "ok" and quality(result)
    newest = by_key(result)[("source", "newest_row_timestamp", "")]["value"]
    want = pd.to_datetime(rows_in(df, W)["at"]).max().tz_localize("UTC").timestamp()
    assert newest == pytest.approx(want, abs=1.0)
    empty, _ = modeljobs.compute(eng, store, model(), day(40), utc(50))
    assert by_key(empty)[("source", "newest_row_timestamp", "")]["value"] is None


def test_scores_outside_zero_one_are_counted_and_quality_withheld(world):
    df, eng, store = world
    pids = window_pids(df, W, every=50)
    update(eng, "UPDATE preds SET score = 80 WHERE pid IN (:pids)", pids[::2])
    update(eng, "UPDATE preds SET score = -20 WHERE pid IN (:pids)", pids[1::2])
    result, _ = modeljobs.compute(eng, store, model(), W, NOW)
    assert checks(result)["score_range"] == (len(pids), True)
    assert result.quality_status == "invalid" and not quality(result)


def test_all_null_scores_fail_score_nulls_and_withhold_quality(world):
    df, eng, store = world
    update(eng, "UPDATE preds SET score = NULL WHERE pid IN (:pids)", window_pids(df, W))
    result, _ = modeljobs.compute(eng, store, model(), W, NOW)
    assert checks(result)["score_nulls"] == (len(rows_in(df, W)), True)
    assert result.quality_status == "invalid" and not quality(result)


def test_a_few_null_scores_pass_score_nulls(world):
    df, eng, store = world
    pids = window_pids(df, W, every=40)  # 2.5 %: under the 5 % tolerance
    update(eng, "UPDATE preds SET score = NULL WHERE pid IN (:pids)", pids)
    result, _ = modeljobs.compute(eng, store, model(), W, NOW)
    assert checks(result)["score_nulls"] == (len(pids), False)
    assert result.quality_status == "ok"


def test_labels_outside_zero_one_are_counted_and_quality_withheld(world):
    df, eng, store = world
    pids = window_pids(df, W, every=30)
    update(eng, "UPDATE labels SET y = 3 WHERE pid IN (:pids)", pids)
    lab = pd.read_sql("SELECT pid FROM labels WHERE y = 3", eng)
    result, _ = modeljobs.compute(eng, store, model(), W, NOW)
    assert checks(result)["label_values"] == (len(lab), True)
    assert result.quality_status == "invalid" and not quality(result)


@pytest.mark.parametrize("keyed", [False, True])
def test_duplicate_labels_are_counted_coverage_stays_at_most_one(world, keyed):
    """Labels keyed by a primary key cannot repeat: on PostgreSQL the check passes by the key."""
    df, eng, store = world
    cur = rows_in(df, W)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE labels2 (pid BIGINT" + (" PRIMARY KEY" if keyed else "") + ", y INTEGER)"))
    full = df[["pid", "y"]]
    full.to_sql("labels2", eng, index=False, if_exists="append", chunksize=5000)
    twice = cur.pid.iloc[::3]
    if not keyed:  # a third of the window's predictions labelled twice
        df.loc[df.pid.isin(twice), ["pid", "y"]].to_sql("labels2", eng, index=False, if_exists="append")
    m = model(labels={"table": "labels2", "id": "pid", "label": "y", "max_delay": "1d"})
    result, _ = modeljobs.compute(eng, store, m, W, NOW)
    assert result.label_coverage == pytest.approx(1.0, abs=1e-12)
    if keyed:
        assert checks(result)["label_duplicates"] == (0, False) and result.quality_status == "ok"
    else:
        assert checks(result)["label_duplicates"] == (len(twice), True)
        assert result.quality_status == "invalid" and not quality(result)


@pytest.mark.parametrize("ref", ["typo", "future", "few"])
def test_a_reference_with_no_rows_too_few_or_in_the_future_fails_and_drift_is_not_computed(world, ref):
    df, eng, store = world
    rng = {"typo": (utc(-365), utc(-362)), "future": (utc(400), utc(403)), "few": (utc(0), utc(0, 0.1))}[ref]
    m = model(reference={"start": rng[0].isoformat(), "end": rng[1].isoformat()})
    result, _ = modeljobs.compute(eng, store, m, W, NOW)
    value, detected = checks(result)["reference"]
    assert detected and value == len(rows_in(df, modeljobs.Window(*rng)))
    assert value < modeljobs.REFERENCE_MIN_ROWS
    assert result.drift_share is None and not [x for x in result.metrics if x["kind"] == "feature_drift"]
    assert result.quality_status == "ok"  # drift is off; quality does not depend on the reference


def test_null_timestamps_are_counted_source_wide_and_quality_stays(world):
    df, eng, store = world
    update(eng, "UPDATE preds SET at = NULL WHERE pid IN (:pids)", window_pids(df, day(REF_DAYS + 2), every=100))
    n = int(pd.read_sql("SELECT COUNT(*) AS n FROM preds WHERE at IS NULL", eng).n[0])
    result, _ = modeljobs.compute(eng, store, model(), W, NOW)
    assert checks(result)["timestamp"] == (n, True) and n > 0
    assert result.quality_status == "ok"


def test_a_missing_feature_column_records_the_window_with_a_failing_schema_check(world):
    df, eng, store = world
    m = model(source={"table": "preds", "id": "pid", "timestamp": "at", "score": "score", "prediction": "pred",
                      "features": {"numeric": [*NUMERIC, "gone"], "categorical": CATEGORICAL}})
    result, _ = modeljobs.compute(eng, store, m, W, NOW)
    assert checks(result)["schema"] == (None, True)
    assert result.rows == len(rows_in(df, W)) and result.quality_status == "invalid" and not quality(result)
    store.save_model_window(result, NOW)  # stored like any window


def test_non_finite_scores_and_features_count_as_null_and_quality_equals_sklearn_on_finite_rows(world):
    df, eng, store = world
    pg = eng.dialect.name == "postgresql"
    cur = rows_in(df, W)
    bad = [float("inf"), float("-inf")] + ([float("nan")] if pg else [])  # SQLite stores NaN as NULL
    score_pids = window_pids(df, W, every=150)  # under 1 %
    feat_pids = window_pids(df, W, every=120, first=7)
    with eng.begin() as c:
        for i, p in enumerate(score_pids):
            c.execute(sa.text("UPDATE preds SET score = :v WHERE pid = :p"), {"v": bad[i % len(bad)], "p": p})
        for i, p in enumerate(feat_pids):
            c.execute(sa.text("UPDATE preds SET n_stable = :v, n_shift = :v WHERE pid = :p"), {"v": bad[i % len(bad)], "p": p})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy warning on the way
        result, _ = modeljobs.compute(eng, store, model(), W, NOW)
    got = checks(result)
    assert got["non_finite"] == (len(set(score_pids) | set(feat_pids)), True)
    assert got["score_nulls"] == (len(score_pids), False)
    assert result.quality_status == "ok"
    lab = pd.read_sql("SELECT pid, y FROM labels", eng)
    j = cur[~cur.pid.isin(score_pids)].drop(columns="y").merge(lab, on="pid")
    want = {"roc_auc": skm.roc_auc_score(j.y, j.score), "pr_auc": skm.average_precision_score(j.y, j.score),
            "log_loss": skm.log_loss(j.y, j.score), "brier": skm.brier_score_loss(j.y, j.score),
            "precision": skm.precision_score(j.y, j.pred), "recall": skm.recall_score(j.y, j.pred),
            "f1": skm.f1_score(j.y, j.pred)}
    q = quality(result)
    for k, v in want.items():
        assert q[k] == pytest.approx(v, abs=1e-9), k
    online = {k[1]: x["value"] for k, x in by_key(result).items() if k[0] == "online"}
    finite = cur[~cur.pid.isin(score_pids)].score
    assert online["score_mean"] == pytest.approx(finite.mean(), abs=1e-12)
    assert online["score_p95"] == pytest.approx(np.percentile(finite, 95), abs=1e-12)
    keyed = by_key(result)
    for col in ("n_stable", "n_shift"):
        drift = keyed[("feature_drift", col, "")]
        assert drift["value"] is not None and np.isfinite(drift["value"]), col
        assert keyed[("null_share", col, "")]["value"] == pytest.approx(len(feat_pids) / len(cur), abs=1e-12)
    assert keyed[("feature_drift", "n_stable", "")]["detected"] is False
    assert keyed[("feature_drift", "n_shift", "")]["detected"] is True


def test_non_finite_values_in_a_rolling_reference_keep_drift_finite(world):
    df, eng, store = world
    ref_pids = window_pids(df, day(REF_DAYS), every=100)
    inf = "'Infinity'" if eng.dialect.name == "postgresql" else "9e999"
    update(eng, f"UPDATE preds SET n_stable = {inf} WHERE pid IN (:pids)", ref_pids)
    m = model(reference={"rolling": "1d"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result, _ = modeljobs.compute(eng, store, m, day(REF_DAYS + 1), NOW)
    drift = by_key(result)[("feature_drift", "n_stable", "")]
    assert drift["value"] is not None and np.isfinite(drift["value"]) and drift["detected"] is False
