"""The KS test on references above the cut-point budget, on SQLite and PostgreSQL (`db_url`): on a
corpus of windows shifted and rescaled around the detection boundary, every decision agrees with
SciPy's `ks_2samp` on the same rows, and where the cut points leave it open the p-value is SciPy's."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy import stats

from monitor import exactks, modeljobs
from monitor.config import Model
from monitor.db import make_engine
from monitor.store import Store
from monitor.windows import Window

T0 = datetime(2026, 3, 2, tzinfo=UTC)
CORPUS = [(s, 1.0) for s in np.linspace(0.0, 0.16, 9)] + [(0.0, k) for k in (1.04, 1.08, 1.12)] + [(0.06, 1.05)]


def utc(d: int) -> datetime:
    return T0 + timedelta(days=d)


def _world(url: str) -> pd.DataFrame:
    """Days 0-1: the reference (3,000 values); day 2 + i: the corpus' i-th shift and scale."""
    rng = np.random.default_rng(21)
    frames = []
    for d, (shift, scale) in enumerate([(0.0, 1.0), (0.0, 1.0), *CORPUS]):
        m = 1500
        f = pd.DataFrame({"x": np.round(shift + scale * rng.normal(0, 1, m), 4), "score": rng.random(m)})
        f["at"] = [(utc(d) + timedelta(seconds=float(s))).replace(tzinfo=None) for s in np.sort(rng.uniform(0, 86399, m))]
        f["pid"] = np.arange(m) + d * 10_000
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    eng = sa.create_engine(url)
    df.to_sql("obs", eng, index=False)
    eng.dispose()
    return df


def _decisions(url: str, tmp_path, name: str) -> list[dict]:
    m = Model.model_validate({
        "name": name, "task": "regression", "window": "1d", "start": utc(2).isoformat(),
        "source": {"table": "obs", "id": "pid", "timestamp": "at", "score": "score", "features": {"numeric": ["x"]}},
        "reference": {"start": utc(0).isoformat(), "end": utc(2).isoformat()}, "drift": {"method": "ks"}})
    store = Store(f"sqlite:///{tmp_path / f'{name}.db'}")
    store.migrate()
    out = []
    for i in range(len(CORPUS)):
        result, _ = modeljobs.compute(make_engine(url), store, m, Window(utc(2 + i), utc(3 + i)), utc(30))
        out.append(next(r for r in result.metrics if r["kind"] == "feature_drift" and r["name"] == "x"))
    return out


@pytest.mark.slow
def test_ks_decisions_agree_with_scipy_and_open_ones_are_exact(db_url, tmp_path, monkeypatch):
    df = _world(db_url)
    at = pd.to_datetime(df["at"])
    ref = df[at < utc(2).replace(tzinfo=None)].x
    want = []
    for i in range(len(CORPUS)):
        cur = df[(at >= utc(2 + i).replace(tzinfo=None)) & (at < utc(3 + i).replace(tzinfo=None))].x
        want.append(stats.ks_2samp(ref, cur).pvalue)
    refined = []
    real = exactks.refine

    def spy(*a, **k):
        d = real(*a, **k)
        refined.append(d is not None)
        return d

    monkeypatch.setattr(exactks, "refine", spy)
    got = _decisions(db_url, tmp_path, "exact")
    assert len(refined) == len(CORPUS)
    for i, (row, p) in enumerate(zip(got, want)):
        assert row["method"] == "ks"
        assert row["detected"] is bool(p <= 0.05), (i, CORPUS[i], row["value"], p)
        assert row["value"] >= p - 1e-12  # never below SciPy's: the statistic is exact or a lower bound
        if refined[i]:
            assert row["value"] == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert any(refined)
    # without the refinement the cut points alone get some of these decisions wrong
    monkeypatch.setattr(exactks, "refine", lambda *a, **k: None)
    binned = _decisions(db_url, tmp_path, "binned")
    assert any(b["detected"] != bool(p <= 0.05) for b, p in zip(binned, want))
