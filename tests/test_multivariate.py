"""Multivariate drift on SQLite and PostgreSQL (`db_url`): two features swap their correlation while
their marginals stay the same; univariate drift sees nothing, the PCA reconstruction error does,
and it equals scikit-learn's PCA reconstruction on the same rows."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.decomposition import PCA

from apppage import models_page
from monitor import conventions as n
from monitor import modeljobs
from monitor import multivariate as MV
from monitor.config import Model, parse_config
from monitor.db import make_engine
from monitor.exporter import exposition
from monitor.store import Store
from monitor.windows import Window

T0 = datetime(2026, 3, 2, tzinfo=UTC)
DAY = timedelta(days=1)
SWAP = 4  # the day the correlation flips
FEATURES = ["amount", "income", "age"]


def utc(d: int) -> datetime:
    return T0 + d * DAY


def make_world(url: str, days: int = 5, per_day: int = 1500, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(days):
        m = per_day + int(rng.integers(-60, 60))
        rho = -0.8 if d >= SWAP else 0.8
        z1 = rng.normal(0, 1, m)
        z2 = rho * z1 + np.sqrt(1 - rho**2) * rng.normal(0, 1, m)
        f = pd.DataFrame({
            "amount": 1_000_000 + 50_000 * z1,  # large values: the sums are taken about the median
            "income": 80_000 + 9_000 * z2,
            "age": rng.normal(40, 10, m),
            "score": rng.random(m),
        })
        f.loc[rng.random(m) < 0.03, "age"] = np.nan  # rows with a NULL feature are left out
        f["at"] = [(utc(d) + timedelta(seconds=float(s))).replace(tzinfo=None) for s in np.sort(rng.uniform(0, 86399, m))]
        f["pid"] = np.arange(m) + d * 100_000
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    eng = sa.create_engine(url)
    df.to_sql("loans", eng, index=False)
    eng.dispose()
    return df


def model_dict(reference: dict, **drift) -> dict:
    return {"name": "credit", "task": "regression", "window": "1d", "start": utc(3).isoformat(),
            "source": {"table": "loans", "id": "pid", "timestamp": "at", "score": "score",
                       "features": {"numeric": FEATURES}},
            "reference": reference, "drift": drift}


def rows_in(df, a: int, b: int) -> pd.DataFrame:
    at = pd.to_datetime(df["at"])
    return df[(at >= utc(a).replace(tzinfo=None)) & (at < utc(b).replace(tzinfo=None))]


def oracle(df, ref_days: range, day: int) -> tuple[float, float]:
    """(mean squared reconstruction error of the day's complete rows, mean + 3 sd of the reference days')."""
    ref = rows_in(df, ref_days.start, ref_days.stop)[FEATURES].dropna().to_numpy()
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    pca = PCA(n_components=0.65, svd_solver="full").fit((ref - mu) / sd)

    def err(rows):
        z = (rows[FEATURES].dropna().to_numpy() - mu) / sd
        return float(np.mean(np.sum((z - pca.inverse_transform(pca.transform(z))) ** 2, axis=1)))

    chunks = [err(rows_in(df, d, d + 1)) for d in ref_days]
    return err(rows_in(df, day, day + 1)), float(np.mean(chunks) + 3 * np.std(chunks))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fixed", "rolling"])
def test_a_correlation_swap_is_seen_by_the_reconstruction_error_only(db_url, tmp_path, kind):
    df = make_world(db_url)
    reference = ({"start": utc(0).isoformat(), "end": utc(3).isoformat()} if kind == "fixed" else {"rolling": "3d"})
    m = Model.model_validate(model_dict(reference))
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    eng = make_engine(db_url)
    got = {}
    for d in (3, SWAP):
        result, _ = modeljobs.compute(eng, store, m, Window(utc(d), utc(d + 1)), utc(6))
        got[d] = {(r["kind"], r["name"]): r for r in result.metrics}
    for d in (3, SWAP):
        ref_days = range(0, 3) if kind == "fixed" else range(d - 3, d)
        want, thr = oracle(df, ref_days, d)
        row = got[d][(MV.KIND, MV.NAME)]
        assert row["value"] == pytest.approx(want, rel=1e-9)
        assert row["threshold"] == pytest.approx(thr, rel=1e-9)
        assert row["detected"] is (d == SWAP)
        # the marginals did not move: no feature drifts on its own
        assert not any(r["detected"] for (k, _), r in got[d].items() if k == "feature_drift")
    assert got[SWAP][(MV.KIND, MV.NAME)]["value"] > 3 * got[3][(MV.KIND, MV.NAME)]["value"]


def test_multivariate_drift_reaches_the_exporter_and_a_fixed_threshold_applies(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src)
    ref = {"start": utc(0).isoformat(), "end": utc(3).isoformat()}
    cfg = parse_config({"database_url": src, "results_url": f"sqlite:///{tmp_path / 'r.db'}",
                        "models": [model_dict(ref, multivariate={"threshold": 100.0})]})
    store = Store(cfg.store_url)
    store.migrate()
    result, _ = modeljobs.compute(make_engine(src), store, cfg.models[0], Window(utc(SWAP), utc(SWAP + 1)), utc(6))
    store.save_model_window(result, utc(6))
    row = next(r for r in result.metrics if r["kind"] == MV.KIND)
    assert row["threshold"] == 100.0 and row["detected"] is False
    text = exposition(cfg, store).decode()
    assert f'{n.MULTIVARIATE_DRIFT_SCORE}{{model="credit"}} {row["value"]!r}' in text
    assert f'{n.MULTIVARIATE_DRIFT_DETECTED}{{model="credit"}} 0.0' in text
    assert f'{n.MULTIVARIATE_DRIFT_THRESHOLD}{{model="credit"}} 100.0' in text


def test_one_numeric_feature_or_disabled_computes_no_multivariate_drift(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src, days=4)
    ref = {"start": utc(0).isoformat(), "end": utc(3).isoformat()}
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    off = Model.model_validate(model_dict(ref, multivariate={"enabled": False}))
    one = Model.model_validate({**model_dict(ref), "source": {**model_dict(ref)["source"], "features": {"numeric": ["age"]}}})
    for m in (off, one):
        result, _ = modeljobs.compute(make_engine(src), store, m, Window(utc(3), utc(4)), utc(6))
        assert not [r for r in result.metrics if r["kind"] == MV.KIND]


@pytest.mark.slow
def test_the_models_page_charts_the_reconstruction_error(tmp_path, monkeypatch):
    import yaml

    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src)
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": src, "results_url": f"sqlite:///{tmp_path / 'r.db'}",
                                    "models": [model_dict({"rolling": "3d"})]}))
    cfg = parse_config(yaml.safe_load(path.read_text()), path)
    store = Store(cfg.store_url)
    store.migrate()
    for d in (3, SWAP):
        result, _ = modeljobs.compute(make_engine(src), store, cfg.models[0], Window(utc(d), utc(d + 1)), utc(6))
        store.save_model_window(result, utc(6))
    at = models_page(path, monkeypatch)
    assert any(s.value == "Multivariate drift" for s in at.subheader)
    assert any("reconstruction error" in c.value for c in at.caption)
