"""Drift settings on SQLite and PostgreSQL (`db_url`): a method and threshold per feature, more methods
compared in the same pass, thresholds learned from the reference's windows, NULL shares by effect
size on large references; against SciPy on the same rows."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance
from test_modeljobs import CATEGORICAL, NUMERIC, REF_DAYS, by_key, day, make_world, model, rows_in, utc

from monitor import conventions as n
from monitor import drift as D
from monitor import modeljobs
from monitor.config import ConfigError, parse_config
from monitor.db import make_engine
from monitor.exporter import exposition
from monitor.store import Store
from monitor.windows import Window


def test_the_null_share_of_a_large_reference_is_compared_by_effect_size_even_under_a_p_value_method():
    # two days of a reference with realistic NULL rates (10 % and 11 % of 100,000 rows): a z-test
    # gives p < 1e-12, yet nothing drifted
    spec = {"edges": [0.0], "center": 0.0}
    day1 = D.NumericSummary(rows=100_000, n=90_000, s=0.0, s2=90_000.0, lt=[45_000])
    day2 = D.NumericSummary(rows=100_000, n=89_000, s=0.0, s2=89_000.0, lt=[44_500])
    assert D.z_test([90_000, 10_000], [89_000, 11_000]) < 1e-12
    r = D.compare_numeric(spec, day1, day2, "ks")
    assert r.method == "ks" and r.null_method == "jensenshannon"
    assert r.null_value == pytest.approx(distance.jensenshannon([0.9, 0.1], [0.89, 0.11]), abs=1e-12)
    assert r.null_threshold == 0.1 and r.null_detected is False
    moved = D.NumericSummary(rows=100_000, n=60_000, s=0.0, s2=60_000.0, lt=[30_000])
    assert D.compare_numeric(spec, day1, moved, "ks").null_detected is True
    # a small reference keeps the z-test at the method's threshold
    small = D.NumericSummary(rows=800, n=720, s=0.0, s2=720.0, lt=[360])
    assert D.compare_numeric(spec, small, small, "ks").null_method == "z"


# --------------------------------------------------------------------------- per-feature settings, one pass




def _psi(r: np.ndarray, c: np.ndarray) -> float:
    """Evidently's PSI with its zero filling, on two count vectors."""
    keep = (r > 0) | (c > 0)
    p, q = r[keep] / r.sum(), c[keep] / c.sum()
    for x in (p, q):
        low = x[x > 0].min()
        x[x == 0] = low / 1e6 if low <= 1e-4 else 1e-4
    return float(np.sum((p - q) * np.log(p / q)))


@pytest.fixture
def world(db_url, tmp_path):
    df = make_world(db_url, per_day=1200, days=REF_DAYS + 2)
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    store.migrate()
    return df, make_engine(db_url), store


@pytest.mark.slow
def test_each_feature_takes_its_own_method_and_threshold_and_compared_methods_come_in_the_same_pass(world):
    df, eng, store = world
    m = model(drift={"features": {"n_shift": {"method": "ks"}, "n_scale": {"method": "psi", "threshold": 0.5},
                                  "k_drift": {"method": "chisquare"}}, "compare": ["psi"]})
    w = day(REF_DAYS + 1)
    got = by_key(modeljobs.compute(eng, store, m, w, utc(9))[0])
    ref, cur = rows_in(df, Window(utc(0), utc(REF_DAYS))), rows_in(df, w)
    ks = got[("feature_drift", "n_shift", "")]
    want = stats.ks_2samp(ref.n_shift, cur.n_shift).pvalue
    assert ks["method"] == "ks" and ks["detected"] is True and ks["value"] >= want - 1e-12
    assert got[("feature_drift", "n_scale", "")]["method"] == "psi"
    assert got[("feature_drift", "n_scale", "")]["threshold"] == 0.5
    keys = sorted(set(ref.k_drift) | set(cur.k_drift))
    r = ref.k_drift.value_counts().reindex(keys, fill_value=0).to_numpy(float)
    c = cur.k_drift.value_counts().reindex(keys, fill_value=0).to_numpy(float)
    chi = got[("feature_drift", "k_drift", "")]
    assert chi["method"] == "chisquare"
    assert chi["value"] == pytest.approx(stats.chisquare(c, r * c.sum() / r.sum()).pvalue, rel=1e-9, abs=1e-300)
    assert got[("feature_drift", "n_stable", "")]["method"] == "wasserstein"  # the rest: the model's `auto`
    # drift.compare: PSI of every feature whose deciding method is not PSI, from the same summaries
    compared = {name: row for (kind, name, _), row in got.items() if kind == "feature_drift_compare"}
    assert set(compared) == set(NUMERIC + CATEGORICAL) - {"n_scale"}
    assert all(row["method"] == "psi" and row["detected"] is not None for row in compared.values())
    for col in ("k_stable", "k_drift", "k_new"):
        keys = sorted(set(ref[col]) | set(cur[col]))
        r = ref[col].value_counts().reindex(keys, fill_value=0).to_numpy(float)
        c = cur[col].value_counts().reindex(keys, fill_value=0).to_numpy(float)
        assert compared[col]["value"] == pytest.approx(_psi(r, c), rel=1e-9), col


def test_a_new_method_is_one_registry_entry(world, monkeypatch):
    """An entry that scores like Jensen-Shannon, under another name: the config takes it, the pass counts
    what it needs, and it scores every feature as `jensenshannon` does on the same summaries."""
    _df, eng, store = world
    monkeypatch.setitem(D.REGISTRY, "js_copy", D.Method(
        "js_copy", "Jensen-Shannon, again", 0.1, frozenset({D.NUMERIC, D.CATEGORICAL}), True,
        counts=D.jensenshannon, fallback=("wasserstein",)))
    m = model(drift={"method": "js_copy", "compare": ["jensenshannon"]})
    got = by_key(modeljobs.compute(eng, store, m, day(REF_DAYS + 1), utc(9))[0])
    for col in NUMERIC + CATEGORICAL:
        mine, js = got[("feature_drift", col, "")], got[("feature_drift_compare", col, "method=jensenshannon")]
        assert mine["method"] == "js_copy" and js["method"] == "jensenshannon", col
        assert mine["value"] == js["value"] and mine["value"] is not None, col
    assert got[("prediction_drift", "score", "")]["method"] == "js_copy"


@pytest.mark.slow
def test_thresholds_learned_from_the_reference_windows(world, tmp_path):
    df, eng, store = world
    m = model(drift={"threshold": {"sd": 3}})
    result, _ = modeljobs.compute(eng, store, m, day(REF_DAYS + 1), utc(9))
    got = by_key(result)
    ref = rows_in(df, Window(utc(0), utc(REF_DAYS)))
    for col in CATEGORICAL:  # category counts are exact: so is the learned threshold
        scores = []
        for d in range(REF_DAYS):
            chunk = rows_in(df, day(d))[col]
            rest = ref[col][~ref.index.isin(chunk.index)]  # each day against the other reference days
            keys = sorted(set(rest) | set(chunk))
            r = rest.value_counts().reindex(keys, fill_value=0)
            c = chunk.value_counts().reindex(keys, fill_value=0)
            scores.append(distance.jensenshannon(r / r.sum(), c / c.sum()))
        row = got[("feature_drift", col, "")]
        assert row["method"] == "jensenshannon"
        assert row["threshold"] == pytest.approx(np.mean(scores) + 3 * np.std(scores), rel=1e-9), col
    flagged = {name for (kind, name, seg), x in got.items() if kind == "feature_drift" and not seg and x["detected"]}
    assert {"k_drift", "k_new", "n_shift", "n_scale"} <= flagged and "k_stable" not in flagged
    # learned once for a fixed reference, stored beside its summary
    again = by_key(modeljobs.compute(eng, store, m, day(REF_DAYS), utc(9))[0])
    assert again[("feature_drift", "k_stable", "")]["threshold"] == got[("feature_drift", "k_stable", "")]["threshold"]


def test_learned_thresholds_are_exported(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_world(src, per_day=600, days=REF_DAYS + 1)
    spec = model(drift={"threshold": {"sd": 2}}).model_dump(mode="json", exclude_none=True)
    spec["window"], spec["labels"]["max_delay"] = "1d", "1d"
    spec["drift"]["multivariate"]["threshold"] = {"sd": 3}
    cfg = parse_config({"database_url": src, "results_url": f"sqlite:///{tmp_path / 'r.db'}", "models": [spec]})
    store = Store(cfg.store_url)
    store.migrate()
    result, _ = modeljobs.compute(make_engine(src), store, cfg.models[0], day(REF_DAYS), utc(9))
    store.save_model_window(result, utc(9))
    row = next(r for r in result.metrics if r["kind"] == "feature_drift" and r["name"] == "k_stable" and not r.get("segment"))
    text = exposition(cfg, store).decode()
    assert f'{n.FEATURE_DRIFT_THRESHOLD}{{feature="k_stable",method="{row["method"]}",model="m"}} {row["threshold"]!r}' in text


def test_unknown_methods_and_features_name_the_key():
    base = model().model_dump(mode="json", exclude_none=True)
    base["window"], base["labels"]["max_delay"] = "1d", "1d"
    base["drift"].pop("multivariate")
    for drift, key in [({"method": "kss"}, r"drift\.method: unknown drift method 'kss'"),
                       ({"features": {"n_shift": {"method": "nope"}}}, r"drift\.features\.n_shift\.method: unknown"),
                       ({"features": {"missing": {"method": "ks"}}}, r"drift\.features\.missing: not a feature"),
                       ({"compare": ["ks", "x"]}, r"drift\.compare\[1\]: unknown drift method 'x'")]:
        with pytest.raises(ConfigError, match=key):
            parse_config({"models": [{**base, "drift": {**base["drift"], **drift}}]})
