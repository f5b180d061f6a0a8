"""Categorical drift of a high-cardinality column on SQLite and PostgreSQL: values the reference never
saw are a bucket of their own, apart from the reference's tail (its values beyond the top 50), so a
shift into new values is flagged whatever the cardinality. Scores equal SciPy's Jensen-Shannon
distance over the same buckets, and never exceed it over the raw categories (merging categories
can only bring two distributions closer).
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.spatial import distance

from monitor import db, modeljobs
from monitor.config import Model
from monitor.db import make_engine
from monitor.store import Store
from monitor.windows import Window

T0 = datetime(2026, 5, 4, tzinfo=UTC)
DAY = timedelta(days=1)
N = 3000
SEEN = [f"r{i:03d}" for i in range(400)]  # 400 values: far beyond the 50 counted one by one
NEW = [f"n{i:03d}" for i in range(400)]


def day(d: int) -> Window:
    return Window(T0 + d * DAY, T0 + (d + 1) * DAY)


def values(rng, d: int) -> np.ndarray:
    """Days 0-2: the reference's values; 3: the same; 4: all new values; 5: 30 % new values."""
    weights = np.linspace(2, 1, len(SEEN))
    seen = rng.choice(SEEN, N, p=weights / weights.sum())
    if d == 4:
        return rng.choice(NEW, N)
    if d == 5:
        return np.where(rng.random(N) < 0.3, rng.choice(NEW, N), seen)
    return seen


@pytest.fixture
def world(db_url, tmp_path):
    db.clear_timestamp_cache()
    rng = np.random.default_rng(11)
    frames = []
    for d in range(6):
        at = [(T0 + d * DAY + timedelta(seconds=float(s))).replace(tzinfo=None) for s in np.sort(rng.uniform(0, 86399, N))]
        frames.append(pd.DataFrame({"pid": np.arange(N) + d * N, "at": at, "score": rng.random(N),
                                    "k_hi": values(rng, d), "k_lo": rng.choice(list("abc"), N)}))
    df = pd.concat(frames, ignore_index=True)
    eng = sa.create_engine(db_url)
    df.to_sql("preds", eng, index=False, chunksize=5000)
    eng.dispose()
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    store.migrate()
    return df, make_engine(db_url), store


def model(**over) -> Model:
    d = {"name": "m", "task": "binary_classification", "window": "1d", "start": (T0 + 3 * DAY).isoformat(),
         "source": {"table": "preds", "id": "pid", "timestamp": "at", "score": "score",
                    "features": {"categorical": ["k_hi", "k_lo"]}},
         "reference": {"start": T0.isoformat(), "end": (T0 + 3 * DAY).isoformat()}}
    d.update(over)
    return Model.model_validate(d)


def rows_in(df, w: Window) -> pd.DataFrame:
    return df[(df["at"] >= w.start.replace(tzinfo=None)) & (df["at"] < w.end.replace(tzinfo=None))]


def buckets(ref: pd.Series, cur: pd.Series, top: int = modeljobs.CAT_MAX) -> tuple[list, list]:
    """The reference's top categories (most frequent first, ties by value), its tail, the unseen."""
    counts = ref.value_counts()
    order = sorted(counts.index, key=lambda v: (-counts[v], v))[:top]
    r = [counts[v] for v in order] + [len(ref) - counts[order].sum(), 0]
    c_counts = cur.value_counts()
    c_top = [int(c_counts.get(v, 0)) for v in order]
    seen = cur.isin(set(ref))
    return r, c_top + [int(seen.sum()) - sum(c_top), int((~seen).sum())]


def drift_of(result, col: str) -> dict:
    return next(m for m in result.metrics if m["kind"] == "feature_drift" and m["name"] == col and not m["segment"])


@pytest.mark.parametrize("reference", ["fixed", "rolling"])
def test_a_shift_into_never_seen_values_is_flagged_and_equals_scipy(world, reference):
    df, eng, store = world
    m = model() if reference == "fixed" else model(reference={"rolling": "3d"})
    flagged = {}
    days = (3, 4, 5) if reference == "fixed" else (3, 4)  # rolling: day 4's new values are seen by day 5's reference
    for d in days:
        ref = rows_in(df, modeljobs.reference_range(m, day(d))).k_hi
        result, _ = modeljobs.compute(eng, store, m, day(d), T0 + 10 * DAY)
        got = drift_of(result, "k_hi")
        assert got["method"] == "jensenshannon"
        cur = rows_in(df, day(d)).k_hi
        if reference == "fixed":
            r, c = buckets(ref, cur)
            assert got["value"] == pytest.approx(distance.jensenshannon(r, c), abs=1e-9), d
        full = pd.concat([ref.value_counts().rename("r"), cur.value_counts().rename("c")], axis=1).fillna(0)
        assert got["value"] <= distance.jensenshannon(full.r, full.c) + 1e-9
        flagged[d] = got["detected"]
        assert drift_of(result, "k_lo")["detected"] is False
    assert flagged == {3: False, 4: True, 5: True} if reference == "fixed" else {3: False, 4: True}
    # every value moved to new ones: as far apart as two distributions can be, as over the raw values
    assert drift_of(modeljobs.compute(eng, store, m, day(4), T0 + 10 * DAY)[0], "k_hi")["value"] == pytest.approx(
        np.sqrt(np.log(2)), abs=1e-9)
