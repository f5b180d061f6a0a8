"""Model windows end to end on SQLite and PostgreSQL (`db_url`), against their oracles.

A test corpus plants drift in some columns (a shift, a rescaling, a skewed shift, moved shares of
a few values, a NULL share that grows, moved categories, a new category) and none in the others
(normal, skewed, integer, few-valued, with NULLs, categories, 30 categories). The monitor must flag
exactly the planted ones; on the values its decisions agree with Evidently 0.7 on every column
(Evidently drops NULLs, so the growing NULL share is the monitor's own addition) and its scores
agree with SciPy and Evidently within the tolerances of test_drift.py. Quality agrees with
scikit-learn to 1e-9.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy import stats
from scipy.spatial import distance
from sklearn import metrics as skm
from sklearn.decomposition import PCA

from app_streamlit.drift_report import evidently_report
from monitor import drift as D
from monitor import modeljobs
from monitor.config import Model
from monitor.db import make_engine
from monitor.store import Store
from monitor.windows import Window

pytestmark = pytest.mark.slow  # model windows computed over generated worlds

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
REF_DAYS = 3


def utc(d: int, h: float = 0) -> datetime:
    return T0 + d * DAY + timedelta(hours=h)


def day(d: int) -> Window:
    return Window(utc(d), utc(d + 1))


NUMERIC = ["n_stable", "n_shift", "n_scale", "n_skew", "n_skew_drift", "n_int", "n_few", "n_few_drift",
           "n_null", "n_null_drift"]
CATEGORICAL = ["k_stable", "k_drift", "k_new", "k_many"]
PLANTED = {"n_shift", "n_scale", "n_skew_drift", "n_few_drift", "n_null_drift", "k_drift", "k_new"}


def corpus(rng: np.random.Generator, n: int, drifted: bool) -> pd.DataFrame:
    d = drifted
    null_share = 0.4 if d else 0.1
    f = pd.DataFrame({
        "n_stable": rng.normal(0, 1, n),
        "n_shift": rng.normal(0.5 if d else 0, 1, n),
        "n_scale": rng.normal(0, 1.6 if d else 1, n),
        "n_skew": rng.lognormal(0, 0.8, n),
        "n_skew_drift": rng.lognormal(0.4 if d else 0, 0.8, n),
        "n_int": rng.poisson(4, n).astype(float),
        "n_few": rng.choice([0.0, 1.0, 2.0], n, p=[0.5, 0.3, 0.2]),
        "n_few_drift": rng.choice([0.0, 1.0, 2.0], n, p=[0.2, 0.3, 0.5] if d else [0.5, 0.3, 0.2]),
        "n_null": np.where(rng.random(n) < 0.1, np.nan, rng.normal(10, 2, n)),
        "n_null_drift": np.where(rng.random(n) < null_share, np.nan, rng.normal(10, 2, n)),
        "k_stable": rng.choice(list("abcd"), n, p=[0.4, 0.3, 0.2, 0.1]),
        "k_drift": rng.choice(list("abcd"), n, p=[0.1, 0.2, 0.3, 0.4] if d else [0.4, 0.3, 0.2, 0.1]),
        "k_new": np.where(rng.random(n) < (0.3 if d else 0), "new", rng.choice(list("xyz"), n)),
        "k_many": rng.choice([f"c{i:02d}" for i in range(30)], n),
        "client": rng.choice(["android", "ios", "web"], n, p=[0.5, 0.3, 0.2]),
    })
    z = 1.5 * f.n_stable - 0.8 * np.log(f.n_skew) + rng.normal(0, 1, n)
    f["score"] = np.round(1 / (1 + np.exp(-z)), 3)  # rounded: ties, as real scores have
    f["pred"] = (f.score >= 0.5).astype(int)
    f["y"] = (rng.random(n) < f.score).astype(int)
    return f


def make_world(url: str, per_day: int = 1500, days: int = 6, drift_from: int = REF_DAYS + 1, seed: int = 7,
               table: str = "preds", labels: str = "labels", label_share: float = 0.85) -> pd.DataFrame:
    """Days 0..REF_DAYS-1 are the reference; drift is planted from `drift_from` on."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(days):
        n = per_day + int(rng.integers(-100, 100))
        f = corpus(rng, n, d >= drift_from)
        f["at"] = [(utc(d) + timedelta(seconds=float(s))).replace(tzinfo=None) for s in np.sort(rng.uniform(0, 86399, n))]
        f["pid"] = np.arange(n) + d * 1_000_000
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    eng = sa.create_engine(url)
    df.drop(columns=["y"]).to_sql(table, eng, index=False, if_exists="replace", chunksize=5000)
    df[["pid", "y"]].sample(frac=label_share, random_state=seed).to_sql(labels, eng, index=False, if_exists="replace",
                                                                         chunksize=5000)
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE INDEX ix_{table}_at ON {table} (at)"))
    eng.dispose()
    return df


def model(**over) -> Model:
    d = {"name": "m", "task": "binary_classification", "window": "1d", "start": utc(REF_DAYS).isoformat(),
             "source": {"table": "preds", "id": "pid", "timestamp": "at", "score": "score", "prediction": "pred",
                         "features": {"numeric": NUMERIC, "categorical": CATEGORICAL}},
             "labels": {"table": "labels", "id": "pid", "label": "y", "max_delay": "1d"},
             "reference": {"start": utc(0).isoformat(), "end": utc(REF_DAYS).isoformat()}, "recompute": 1}
    d.update(over)
    return Model.model_validate(d)


def rows_in(df: pd.DataFrame, w: Window) -> pd.DataFrame:
    at = pd.to_datetime(df["at"])
    return df[(at >= w.start.replace(tzinfo=None)) & (at < w.end.replace(tzinfo=None))]


def by_key(result) -> dict:
    return {(m["kind"], m["name"], m.get("segment", "")): m for m in result.metrics}


@pytest.fixture
def world(db_url, tmp_path):
    df = make_world(db_url)
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    store.migrate()
    return df, make_engine(db_url), store


# --------------------------------------------------------------------------- drift


def test_planted_drift_flagged_and_agrees_with_evidently_and_scipy(world):
    df, eng, store = world
    m = model()
    now = utc(10)
    ref = rows_in(df, Window(utc(0), utc(REF_DAYS)))
    for d, planted in [(REF_DAYS, set()), (REF_DAYS + 1, PLANTED)]:
        w = day(d)
        result, _ = modeljobs.compute(eng, store, m, w, now)
        got = by_key(result)
        flagged = {name for (kind, name, seg), x in got.items() if kind == "feature_drift" and not seg and x["detected"]}
        assert flagged == planted, d
        assert result.drift_share == pytest.approx(len(planted) / (len(NUMERIC) + len(CATEGORICAL)))
        assert result.dataset_drift == (len(planted) / 14 >= 0.5)
        cur = rows_in(df, w)
        for col in NUMERIC + CATEGORICAL:
            kind = D.NUMERIC if col in NUMERIC else D.CATEGORICAL
            mine = got[("feature_drift", col, "")]
            name, score, drifted = _evidently(ref[col], cur[col], kind)
            assert mine["method"] == name, col
            # decisions on the values agree with Evidently on every column
            assert D.REGISTRY[name].detected(mine["value"], mine["threshold"]) == drifted, col
            r, c = ref[col].dropna().to_numpy(), cur[col].dropna().to_numpy()
            if name == "wasserstein":
                exact = stats.wasserstein_distance(r, c) / max(float(np.std(r)), 0.001)
                assert exact == pytest.approx(score, rel=1e-9)
                assert -1e-9 <= exact - mine["value"] <= 0.02, col  # a lower bound; see test_drift.py
            else:  # category counts (and numeric columns of <= 5 values): exact
                assert mine["value"] == pytest.approx(score, rel=1e-9, abs=1e-12), col
                if name == "jensenshannon":
                    keys = sorted(set(r) | set(c))
                    pr = pd.Series(r).value_counts().reindex(keys, fill_value=0)
                    pc = pd.Series(c).value_counts().reindex(keys, fill_value=0)
                    assert mine["value"] == pytest.approx(distance.jensenshannon(pr / pr.sum(), pc / pc.sum()), rel=1e-9)
        # prediction drift: the score column
        sc = got[("prediction_drift", "score", "")]
        assert sc["method"] == "wasserstein"
        exact = stats.wasserstein_distance(ref.score, cur.score) / float(np.std(ref.score))
        assert -1e-9 <= exact - sc["value"] <= 0.02
        # NULL shares: counted, never dropped
        for col in NUMERIC:
            assert got[("null_share", col, "")]["value"] == pytest.approx(cur[col].isna().mean(), abs=1e-12)
        assert got[("null_share", "n_null_drift", "")]["detected"] == (d > REF_DAYS)
        assert got[("null_share", "n_null", "")]["detected"] is False


CONTINUOUS = ["n_stable", "n_shift", "n_scale", "n_skew", "n_skew_drift", "n_null", "n_null_drift"]


def _w_on(ref: np.ndarray, cur: np.ndarray) -> float:
    """The monitor's Wasserstein estimate, in numpy: reference quantile cut points (order statistics
    at ceil(q n)), sums of distances to them, normed by the reference's standard deviation."""
    s, n = np.sort(ref), len(ref)
    edges = np.unique(s[np.array(sorted({min(n, max(1, math.ceil(q * n))) for q in modeljobs.W_LEVELS})) - 1])

    def dist(x):
        return np.abs(x[:, None] - edges[None, :]).sum(axis=0)

    return D.wasserstein(edges, dist(ref), n, ref.mean(), ref.std(), dist(cur), len(cur), cur.mean())


def _mv_sampled(df: pd.DataFrame, w: Window, ids_of) -> tuple[float, float]:
    """The multivariate drift of window `w` as the engine takes it above SAMPLE_ROWS (300 here): over
    the hashed sample of each range (the window and each reference day, a cut each from its emptiest
    column, `ids_of(window, cut)` the ids below it), in scikit-learn: (the window's error, the
    threshold from the reference days' errors)."""
    def sample(rng: Window) -> pd.DataFrame:
        rows = rows_in(df, rng)
        keep = math.ceil(65536 * 300 / min(int(rows[c].notna().sum()) for c in [*NUMERIC, "score"]))
        return rows[rows.pid.isin(ids_of(rng, keep))][NUMERIC].dropna().to_numpy()

    chunks = [sample(day(d)) for d in range(REF_DAYS)]
    ref = np.concatenate(chunks)
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    pca = PCA(n_components=0.65, svd_solver="full").fit((ref - mu) / sd)

    def err(x):
        z = (x - mu) / sd
        return float(np.mean(np.sum((z - pca.inverse_transform(pca.transform(z))) ** 2, axis=1)))

    errors = [err(c) for c in chunks]
    assert all(25 < len(c) < 600 for c in chunks), [len(c) for c in chunks]  # samples, not every row
    return err(sample(w)), float(np.mean(errors) + 3 * np.std(errors))


def _sampled_ids(eng, w: Window, keep: int) -> set:
    with eng.connect() as c:
        return set(c.execute(sa.text(
            "SELECT pid FROM preds WHERE at >= :a AND at < :b AND (hashtext(CAST(pid AS TEXT)) & 65535) < :k"),
            {"a": w.start.replace(tzinfo=None), "b": w.end.replace(tzinfo=None), "k": keep}).scalars())


def test_large_windows_take_distances_over_a_fixed_hashed_sample(pg_url, tmp_path, monkeypatch):
    """PostgreSQL, above SAMPLE_ROWS values: the Wasserstein sums come from the rows whose id hashes
    below a cut, about SAMPLE_ROWS of them in the emptiest column. The distance is then exactly the
    estimate on those rows against the whole (fixed) reference, the same on every run; the rest of
    the window's numbers (NULL shares, online signals, quality) stay those of every row."""
    df = make_world(pg_url)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    eng, m, w = make_engine(pg_url), model(), day(REF_DAYS + 1)
    monkeypatch.setattr(modeljobs.passes, "SAMPLE_ROWS", 300)
    first, again = (by_key(modeljobs.compute(eng, store, m, w, utc(10))[0]) for _ in range(2))
    assert first == again
    ref, cur = rows_in(df, Window(utc(0), utc(REF_DAYS))), rows_in(df, w)
    least = min(int(cur[c].notna().sum()) for c in [*NUMERIC, "score"])
    keep = math.ceil(65536 * 300 / least)
    sample = cur[cur.pid.isin(_sampled_ids(eng, w, keep))]
    assert 0.5 < len(sample) / (len(cur) * keep / 65536) < 1.5 and len(sample) < len(cur) / 2
    for col in CONTINUOUS:
        mine = first[("feature_drift", col, "")]
        assert mine["method"] == "wasserstein"
        assert mine["value"] == pytest.approx(_w_on(ref[col].dropna().to_numpy(), sample[col].dropna().to_numpy()),
                                              rel=1e-9), col
        assert mine["value"] != pytest.approx(_w_on(ref[col].dropna().to_numpy(), cur[col].dropna().to_numpy()),
                                              rel=1e-6), col  # it is a sample
        assert first[("null_share", col, "")]["value"] == pytest.approx(cur[col].isna().mean(), abs=1e-12)
    assert first[("prediction_drift", "score", "")]["value"] == pytest.approx(
        _w_on(ref.score.to_numpy(), sample.score.to_numpy()), rel=1e-9)
    assert first[("online", "score_mean", "")]["value"] == pytest.approx(cur.score.mean(), rel=1e-12)
    assert {k for (kind, k, seg), x in first.items() if kind == "feature_drift" and not seg and x["detected"]} == PLANTED
    # the multivariate moments: over the same sample, and the reference days' over theirs
    mv, threshold = _mv_sampled(df, w, lambda rng, k: _sampled_ids(eng, rng, k))
    assert first[("multivariate_drift", "reconstruction_error", "")]["value"] == pytest.approx(mv, rel=1e-9)
    assert first[("multivariate_drift", "reconstruction_error", "")]["threshold"] == pytest.approx(threshold, rel=1e-9)


def test_a_sample_that_comes_out_empty_is_taken_again_over_every_row(pg_url, tmp_path, monkeypatch):
    """Ids that all hash alike (here one repeated id, in a bucket above the cut) give no sample:
    the distances are then taken over every row, as without sampling."""
    make_world(pg_url)
    eng, m, w = make_engine(pg_url), model(), day(REF_DAYS + 1)
    with eng.begin() as c:
        buckets = dict(c.execute(sa.text("SELECT v, hashtext(CAST(v AS TEXT)) & 65535 FROM generate_series(1, 200) v")).all())
        high = next(v for v, b in buckets.items() if b > 65000)
        c.execute(sa.text("UPDATE preds SET pid = :v WHERE at >= :a AND at < :b"),
                  {"v": high, "a": w.start.replace(tzinfo=None), "b": w.end.replace(tzinfo=None)})
    stores = [Store(f"sqlite:///{tmp_path / f'{i}.db'}") for i in range(2)]
    for s in stores:
        s.migrate()
    monkeypatch.setattr(modeljobs.passes, "SAMPLE_ROWS", 300)
    sampled = by_key(modeljobs.compute(eng, stores[0], m, w, utc(10))[0])
    monkeypatch.setattr(modeljobs.passes, "SAMPLE_ROWS", 10**9)
    exact = by_key(modeljobs.compute(eng, stores[1], m, w, utc(10))[0])
    for col in CONTINUOUS:
        assert sampled[("feature_drift", col, "")]["value"] == pytest.approx(exact[("feature_drift", col, "")]["value"],
                                                                             rel=1e-12), col


def _evidently(ref: pd.Series, cur: pd.Series, kind: str):
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Numerical if kind == D.NUMERIC else ColumnType.Categorical
    r, c = ref.dropna(), cur.dropna()
    test = get_stattest(r, c, ctype, None)
    res = test(r, c, ctype, None)
    return test.name, float(res.drift_score), bool(res.drifted)


def test_small_reference_uses_p_values_and_agrees_with_evidently(db_url, tmp_path):
    """A reference of <= 1000 rows: KS, chi-square and z-tests, as Evidently picks them."""
    df = make_world(db_url, per_day=300, days=5)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m = model()
    ref = rows_in(df, Window(utc(0), utc(REF_DAYS)))
    assert len(ref) <= 1000
    w = day(REF_DAYS + 1)
    cur = rows_in(df, w)
    got = by_key(modeljobs.compute(make_engine(db_url), store, m, w, utc(9))[0])
    for col in NUMERIC + CATEGORICAL:
        kind = D.NUMERIC if col in NUMERIC else D.CATEGORICAL
        name, score, drifted = _evidently(ref[col], cur[col], kind)
        mine = got[("feature_drift", col, "")]
        assert mine["method"] == name, col
        assert D.REGISTRY[name].detected(mine["value"], mine["threshold"]) == drifted, col
        if name == "ks":  # from counts at 64 cut points: between the p-values of the bounds
            assert mine["value"] >= score - 1e-12
        else:
            assert mine["value"] == pytest.approx(score, rel=1e-9, abs=1e-12), col
    assert {n for (k, n, s), x in got.items() if k == "feature_drift" and x["detected"]} >= PLANTED - {"n_null_drift"}


def test_methods_from_config(world):
    _df, eng, store = world
    w = day(REF_DAYS + 1)
    for method in ["psi", "jensenshannon", "ks", "wasserstein", "chisquare"]:
        m = model(name=f"m_{method}", drift={"method": method})
        got = by_key(modeljobs.compute(eng, store, m, w, utc(9))[0])
        for col in NUMERIC + CATEGORICAL:
            kind = D.NUMERIC if col in NUMERIC else D.CATEGORICAL
            if kind in D.REGISTRY[method].column_types:
                assert got[("feature_drift", col, "")]["method"] == method
        flagged = {n for (k, n, s), x in got.items() if k == "feature_drift" and x["detected"]}
        assert PLANTED <= flagged, method


# --------------------------------------------------------------------------- online and quality


@pytest.mark.parametrize("ids", ["integer", "text"])
def test_online_signals_and_quality_equal_sklearn(world, ids):
    """Integer ids on PostgreSQL narrow the labels read to the window's id range; text ids read them
    all. Either way the labels of other windows never change the result."""
    df, eng, store = world
    m = model()
    w = day(REF_DAYS + 2)
    if ids == "text":
        with eng.begin() as c:
            for t in ("preds", "labels"):
                if eng.dialect.name == "postgresql":
                    c.execute(sa.text(f"ALTER TABLE {t} ALTER COLUMN pid TYPE TEXT"))
                c.execute(sa.text(f"UPDATE {t} SET pid = 'p' || pid"))
        df = df.assign(pid="p" + df.pid.astype(str))
    with eng.connect() as c:
        assert modeljobs.quality._integer_ids(c, m) == (eng.dialect.name == "postgresql" and ids == "integer")
    result, _rows = modeljobs.compute(eng, store, m, w, utc(REF_DAYS + 4))
    got = by_key(result)
    cur = rows_in(df, w)
    lab = pd.read_sql("SELECT pid, y FROM labels", eng)
    j = cur.drop(columns="y").merge(lab, on="pid")
    assert result.rows == len(cur) and result.quality_status == "ok"
    assert result.label_coverage == pytest.approx(len(j) / len(cur), abs=1e-12)
    online = {k[1]: x["value"] for k, x in got.items() if k[0] == "online"}
    assert online["predictions"] == len(cur)
    assert online["positive_rate"] == pytest.approx(cur.pred.mean(), abs=1e-12)
    assert online["score_mean"] == pytest.approx(cur.score.mean(), abs=1e-12)
    assert online["score_p95"] == pytest.approx(np.percentile(cur.score, 95), abs=1e-12)
    q = {k[1]: x["value"] for k, x in got.items() if k[0] == "quality"}
    want = {"roc_auc": skm.roc_auc_score(j.y, j.score), "pr_auc": skm.average_precision_score(j.y, j.score),
            "log_loss": skm.log_loss(j.y, j.score), "brier": skm.brier_score_loss(j.y, j.score),
            "precision": skm.precision_score(j.y, j.pred), "recall": skm.recall_score(j.y, j.pred),
            "f1": skm.f1_score(j.y, j.pred), "accuracy": skm.accuracy_score(j.y, j.pred),
            "specificity": skm.recall_score(j.y, j.pred, pos_label=0)}
    assert set(q) == set(want)
    for k, v in want.items():
        assert q[k] == pytest.approx(v, abs=1e-9), k


def test_quality_without_prediction_column_and_extreme_scores(db_url, tmp_path):
    rng = np.random.default_rng(3)
    n = 2000
    score = np.concatenate([rng.random(n - 4), [0.0, 1.0, 0.5, 0.5]])  # 0 and 1: log loss clips as sklearn
    y = (rng.random(n) < score).astype(int)
    at = [(utc(0) + timedelta(seconds=float(i * 40))).replace(tzinfo=None) for i in range(n)]
    eng = sa.create_engine(db_url)
    pd.DataFrame({"pid": np.arange(n), "at": at, "score": score, "x": rng.normal(0, 1, n)}).to_sql("p", eng, index=False)
    pd.DataFrame({"pid": np.arange(n), "y": y}).to_sql("l", eng, index=False)
    m = Model.model_validate({
        "name": "np", "task": "binary_classification", "window": "1d", "start": utc(0).isoformat(),
        "source": {"table": "p", "id": "pid", "timestamp": "at", "score": "score", "features": {"numeric": ["x"]}},
        "labels": {"table": "l", "id": "pid", "label": "y"}, "reference": {"rolling": "1d"}})
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    got = by_key(modeljobs.compute(make_engine(db_url), store, m, day(0), utc(2))[0])
    pred = (score >= 0.5).astype(int)
    assert got[("online", "positive_rate", "")]["value"] == pytest.approx(pred.mean(), abs=1e-12)
    assert got[("quality", "roc_auc", "")]["value"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-9)
    assert got[("quality", "log_loss", "")]["value"] == pytest.approx(skm.log_loss(y, score), abs=1e-9)
    assert got[("quality", "f1", "")]["value"] == pytest.approx(skm.f1_score(y, pred), abs=1e-9)
    assert got[("quality", "pr_auc", "")]["value"] == pytest.approx(skm.average_precision_score(y, score), abs=1e-9)


@pytest.mark.parametrize("coverage", [1.0, 0.7])
@pytest.mark.parametrize("ties", ["everywhere", "below the p95"])
def test_score_p95_and_quality_with_unique_labels_ties_and_null_scores(db_url, tmp_path, coverage, ties):
    """With every scored row labelled once, score_p95 comes from the quality query (the order
    statistics of its sorted rows; no separate ORDER BY ... OFFSET); partly labelled, from its own
    query. Either way it equals numpy's, and quality equals scikit-learn's on the scored labelled rows."""
    rng = np.random.default_rng(5)
    n = 3000
    score = rng.random(n)
    # many ties: at the p95 too, or distinct values there (an order statistic off by one shows)
    score = np.round(score, 2) if ties == "everywhere" else np.where(score < 0.8, np.round(score, 2), score)
    score[rng.random(n) < 0.03] = np.nan  # NULL scores: left out of the percentile and of the metrics
    y = (rng.random(n) < np.nan_to_num(score, nan=0.5)).astype(int)
    at = [(utc(0) + timedelta(seconds=float(i * 25))).replace(tzinfo=None) for i in range(n)]
    eng = sa.create_engine(db_url)
    pd.DataFrame({"pid": np.arange(n), "at": at, "score": score, "x": rng.normal(0, 1, n)}).to_sql("p", eng, index=False)
    keep = rng.random(n) < coverage
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE l (pid BIGINT PRIMARY KEY, y INTEGER)"))
    pd.DataFrame({"pid": np.arange(n)[keep], "y": y[keep]}).to_sql("l", eng, index=False, if_exists="append")
    m = Model.model_validate({
        "name": "pk", "task": "binary_classification", "window": "1d", "start": utc(0).isoformat(),
        "source": {"table": "p", "id": "pid", "timestamp": "at", "score": "score", "features": {"numeric": ["x"]}},
        "labels": {"table": "l", "id": "pid", "label": "y"}, "reference": {"rolling": "1d"}})
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    src = make_engine(db_url)
    statements = []

    def seen(_conn, _cursor, statement, *_rest):
        statements.append(statement)

    sa.event.listen(src, "before_cursor_execute", seen)
    try:
        result = modeljobs.compute(src, store, m, day(0), utc(2))[0]
    finally:
        sa.event.remove(src, "before_cursor_execute", seen)
    got = by_key(result)
    scored = ~np.isnan(score)
    assert got[("online", "score_p95", "")]["value"] == pytest.approx(np.percentile(score[scored], 95), abs=1e-12)
    separate = any("OFFSET" in st for st in statements)
    assert separate == (coverage < 1)
    sel = keep & scored
    assert result.label_coverage == pytest.approx(keep.sum() / n, abs=1e-12)
    ys, ss = y[sel], score[sel]
    want = {"roc_auc": skm.roc_auc_score(ys, ss), "pr_auc": skm.average_precision_score(ys, ss),
            "log_loss": skm.log_loss(ys, ss), "brier": skm.brier_score_loss(ys, ss)}
    for k, v in want.items():
        assert got[("quality", k, "")]["value"] == pytest.approx(v, abs=1e-9), k


def test_regression_quality_equals_sklearn(db_url, tmp_path):
    rng = np.random.default_rng(5)
    n = 1500
    truth = rng.gamma(3, 20, n)
    pred = truth + rng.normal(0, 8, n)
    at = [(utc(0) + timedelta(seconds=float(i * 50))).replace(tzinfo=None) for i in range(n)]
    eng = sa.create_engine(db_url)
    pd.DataFrame({"pid": np.arange(n), "at": at, "minutes": pred, "x": rng.normal(0, 1, n)}).to_sql("p", eng, index=False)
    pd.DataFrame({"pid": np.arange(0, n, 2), "actual": truth[::2]}).to_sql("l", eng, index=False)
    m = Model.model_validate({
        "name": "reg", "task": "regression", "window": "1d", "start": utc(0).isoformat(),
        "source": {"table": "p", "id": "pid", "timestamp": "at", "score": "minutes", "features": {"numeric": ["x"]}},
        "labels": {"table": "l", "id": "pid", "label": "actual"}, "reference": {"rolling": "1d"}})
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    result, _ = modeljobs.compute(make_engine(db_url), store, m, day(0), utc(2))
    got = by_key(result)
    assert got[("quality", "mae", "")]["value"] == pytest.approx(skm.mean_absolute_error(truth[::2], pred[::2]), rel=1e-9)
    assert got[("quality", "rmse", "")]["value"] == pytest.approx(skm.root_mean_squared_error(truth[::2], pred[::2]), rel=1e-9)
    assert result.label_coverage == pytest.approx(0.5, abs=1e-3)
    assert ("online", "positive_rate", "") not in got


# --------------------------------------------------------------------------- labels, planning, statuses


def test_pending_until_labels_mature_then_planned_again(world):
    _df, eng, store = world
    m = model(labels={"table": "labels", "id": "pid", "label": "y", "max_delay": "2d"}, recompute=0)
    now = utc(REF_DAYS + 2, 1)  # windows REF_DAYS and REF_DAYS+1 are due; only the first has mature labels
    planned = modeljobs.plan_windows(store, m, now)
    assert [w.start for w in planned] == [utc(REF_DAYS), utc(REF_DAYS + 1)]
    for w in planned:
        store.save_model_window(modeljobs.compute(eng, store, m, w, now)[0], now)
    done = store.model_windows_done("m")
    assert done == {utc(REF_DAYS): "pending", utc(REF_DAYS + 1): "pending"}  # end + 2d > now for both
    assert modeljobs.plan_windows(store, m, now) == []
    later = utc(REF_DAYS + 3, 1)  # the first window's labels matured; a new window is due
    assert [w.start for w in modeljobs.plan_windows(store, m, later)] == [utc(REF_DAYS), utc(REF_DAYS + 2)]
    result, _ = modeljobs.compute(eng, store, m, day(REF_DAYS), later)
    assert result.quality_status == "ok" and any(x["kind"] == "quality" for x in result.metrics)


def test_recompute_covers_late_labels(world):
    _df, eng, store = world
    m = model(recompute=2)
    now = utc(REF_DAYS + 3, 1)
    for w in modeljobs.plan_windows(store, m, now):
        store.save_model_window(modeljobs.compute(eng, store, m, w, now)[0], now)
    again = {w.start for w in modeljobs.plan_windows(store, m, now)}
    # the last 2 due windows (late predictions) and the last 2 whose labels matured (late labels)
    assert again == {utc(REF_DAYS + 1), utc(REF_DAYS + 2)} | {utc(REF_DAYS), utc(REF_DAYS + 1)}


def test_statuses_empty_and_no_labels(world):
    _df, eng, store = world
    result, _rows = modeljobs.compute(eng, store, model(), day(40), utc(50))
    assert (result.rows, result.quality_status, result.drift_share) == (0, "empty", None)
    nolab = model(name="nolab", labels=None)
    result, _ = modeljobs.compute(eng, store, nolab, day(REF_DAYS), utc(9))
    assert result.quality_status == "no_labels" and result.label_coverage is None
    assert not [x for x in result.metrics if x["kind"] == "quality"]


def test_unknown_method_is_a_clear_error(world):
    _df, _eng, store = world
    with pytest.raises(ValueError, match="unknown drift method 'kolmogorov'"):
        modeljobs.plan_windows(store, model(drift={"method": "kolmogorov"}), utc(9))


# --------------------------------------------------------------------------- references


def test_hourly_windows_on_sqlite_timestamps_spelled_with_a_t(tmp_path):
    """SQLite compares timestamps as text: an hourly window of a column spelled 'YYYY-MM-DDTHH:MM:SS'
    holds exactly its hour's rows (the bounds are spelled like the column)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    df = make_world(url)
    with sa.create_engine(url).begin() as c:
        c.execute(sa.text("UPDATE preds SET at = replace(at, ' ', 'T')"))
        assert "T" in c.execute(sa.text("SELECT at FROM preds LIMIT 1")).scalar()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m = model(window="1h")
    for hour in (0, 5, 13):
        w = Window(utc(REF_DAYS, hour), utc(REF_DAYS, hour + 1))
        result, _ = modeljobs.compute(make_engine(url), store, m, w, utc(10))
        cur = rows_in(df, w)
        assert result.rows == len(cur) > 0, hour
        got = by_key(result)
        assert got[("online", "score_mean", "")]["value"] == pytest.approx(cur.score.mean(), rel=1e-12)


def _computed_and_saved(eng, store: Store, m: Model, w: Window, now) -> tuple:
    """A window as the model job computes it: its result saved with the reference summaries it built."""
    result, read = modeljobs.compute(eng, store, m, w, now)
    store.save_model_window(result, now)
    return result, read


def test_fixed_reference_is_computed_once(world):
    df, eng, store = world
    m = model()
    reads = [_computed_and_saved(eng, store, m, day(d), utc(9))[1] for d in (REF_DAYS, REF_DAYS + 1)]
    window_rows = [len(rows_in(df, day(d))) for d in (REF_DAYS, REF_DAYS + 1)]
    ref_rows = len(rows_in(df, Window(utc(0), utc(REF_DAYS))))
    labelled = [reads[0] - window_rows[0] - ref_rows, reads[1] - window_rows[1]]
    assert all(0 < x <= r for x, r in zip(labelled, window_rows))  # the second read no reference rows


def _summary_keys(store: Store, model_name: str) -> set[str]:
    from monitor.store import reference_summaries as t

    with store.engine.connect() as c:
        return {r[0] for r in c.execute(sa.select(t.c.ref_key).where(t.c.model == model_name))}


def test_a_window_writes_nothing_until_it_is_saved_with_its_reference_summaries(world):
    """The summaries a window builds (its reference; its own part of later rolling references) come
    back with it and are saved in its transaction: a computation that is not saved leaves none."""
    df, eng, store = world
    fixed, rolling = model(), model(name="roll", reference={"rolling": "3d"})
    for m, w, ref in ((fixed, day(REF_DAYS), Window(utc(0), utc(REF_DAYS))),
                      (rolling, day(REF_DAYS + 3), Window(utc(REF_DAYS), utc(REF_DAYS + 3)))):
        result, first = modeljobs.compute(eng, store, m, w, utc(9))
        assert result.references and _summary_keys(store, m.name) == set(), m.name
        assert modeljobs.compute(eng, store, m, w, utc(9))[1] == first  # nothing kept: the reference is read again
        store.save_model_window(result, utc(9))
        assert _summary_keys(store, m.name) == set(result.references), m.name
        assert all(store.load_reference(m.name, k) == v for k, v in result.references.items())
        assert first - modeljobs.compute(eng, store, m, w, utc(9))[1] == len(rows_in(df, ref)), m.name


def test_rolling_reference_is_the_sum_of_stored_window_summaries(world):
    """Rolling: each window's summary is stored with it, and a window's reference is the sum
    of its predecessors' summaries: equal to one scan of the whole range, to rounding."""
    _df, eng, store = world
    m = model(reference={"rolling": "3d"})
    now = utc(9)
    for d in range(REF_DAYS, REF_DAYS + 3):
        _result, read = _computed_and_saved(eng, store, m, day(d), now)
    spec = store.load_reference("m", f"spec:{modeljobs.specs.model_hash(m)}")
    w = day(REF_DAYS + 3)
    with eng.connect() as conn:
        _, summed, read = modeljobs.references._reference(conn, store, m, w, now)
        direct = modeljobs.scan(conn, m, spec, Window(w.start - 3 * DAY, w.start), moments=True)
    assert read == 0  # every predecessor's summary was stored
    flat_a, flat_b = _flatten(summed), _flatten(direct)
    assert flat_a.keys() == flat_b.keys()
    for k in flat_a:
        assert flat_a[k] == pytest.approx(flat_b[k], rel=1e-9, abs=1e-6), k
    # drift against a rolling reference sees the planted change, then absorbs it
    flags = {}
    for d in range(REF_DAYS, 9):
        r = _computed_and_saved(eng, store, m, day(d), now)[0]
        flags[d] = {x["name"] for x in r.metrics if x["kind"] == "feature_drift" and not x["segment"] and x["detected"]}
    assert flags[REF_DAYS + 1] == PLANTED
    assert flags[REF_DAYS + 4] == set() and flags[REF_DAYS] == set()


def _flatten(node, prefix=""):
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = node
    return out


# --------------------------------------------------------------------------- segments


def test_segments_drift_per_value_with_a_cap(db_url, tmp_path):
    df = make_world(db_url, drift_from=99)  # no planted drift ...
    eng = sa.create_engine(db_url)
    w = day(REF_DAYS + 1)
    with eng.begin() as c:  # ... except n_stable on iOS in one window
        c.execute(sa.text("UPDATE preds SET n_stable = n_stable + 1.5 WHERE client = 'ios' AND at >= :a AND at < :b"),
                  {"a": w.start.replace(tzinfo=None), "b": w.end.replace(tzinfo=None)})
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    m = model(segments=["client"], max_segments=2)
    result, _ = modeljobs.compute(make_engine(db_url), store, m, w, utc(9))
    got = by_key(result)
    segs = {k[2] for k in got if k[2]}
    assert segs == {"client=android", "client=ios", "client=other"}  # web is beyond the top 2
    assert got[("feature_drift", "n_stable", "client=ios")]["detected"] is True
    assert got[("feature_drift", "n_stable", "client=android")]["detected"] is False
    assert got[("feature_drift", "n_stable", "client=other")]["detected"] is False
    ios = rows_in(df, w).query("client == 'ios'")
    ref_ios = rows_in(df, Window(utc(0), utc(REF_DAYS))).query("client == 'ios'")
    exact = stats.wasserstein_distance(ref_ios.n_stable, ios.n_stable + 1.5) / np.std(ref_ios.n_stable)
    assert -1e-9 <= exact - got[("feature_drift", "n_stable", "client=ios")]["value"] <= 0.02
    # the whole window is the sum of its segments: the same as without segments
    plain = by_key(modeljobs.compute(make_engine(db_url), store, model(name="plain"), w, utc(9))[0])
    for key, x in plain.items():
        if x["value"] is not None:
            assert got[key]["value"] == pytest.approx(x["value"], rel=1e-9, abs=1e-12), key


# --------------------------------------------------------------------------- the Evidently report


def test_evidently_report_on_a_bounded_sample(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    make_world(url, per_day=400, days=5)
    path = evidently_report(make_engine(url), model(), day(REF_DAYS + 1), sample=500,
                            path=tmp_path / "report.html")
    text = path.read_text()
    assert text.lstrip().startswith("<!DOCTYPE html>") and "n_shift" in text and len(text) > 10_000
