"""Drift methods on summaries against their oracles: SciPy and Evidently 0.7 on the same rows.

Summaries here are computed with numpy exactly as the SQL pass computes them (counts below cut
points, sums of |x - cut point|, category counts), so these tests pin the arithmetic; the SQL
side is pinned in test_modeljobs.py.

Tolerances:
- category-count methods (Jensen-Shannon, chi-square, z, PSI on categories) see exactly what
  Evidently sees: 1e-9;
- Wasserstein: the estimate is a lower bound of SciPy's, exact whenever the two CDFs do not cross
  between two cut points, and low by at most sum(width x larger mass) over the bins where they do
  cross (computed here from the rows: `crossing_bound`);
- KS: the statistic at the cut points is a lower bound, and SciPy's lies within the largest bin
  mass above it (`ks_statistic_bound`); the p-value function itself equals SciPy's to 1e-12.
"""
from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from monitor import drift as D
from monitor.modeljobs import W_LEVELS

RNG = np.random.default_rng(20260901)


@pytest.fixture(autouse=True)
def _seeded(request):
    """Each test draws from its own seed: the same rows whatever else runs."""
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.name.encode()))


# --------------------------------------------------------------------------- helpers: numpy summaries


def quantile_edges(ref: np.ndarray, levels) -> np.ndarray:
    """Cut points as the SQL spec picks them: order statistics at ceil(q n) (1-based), deduplicated."""
    s = np.sort(ref)
    n = len(s)
    ranks = sorted({min(n, max(1, math.ceil(q * n))) for q in levels} | {max(1, math.ceil(n / 2))})
    return np.unique(s[np.array(ranks) - 1])


def abs_sums(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.abs(x[:, None] - edges[None, :]).sum(axis=0)


def lt_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return (x[:, None] < edges[None, :]).sum(axis=0).astype(float)


def w_estimate(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray) -> float:
    return D.wasserstein(edges, abs_sums(ref, edges), len(ref), ref.mean(), ref.std(), abs_sums(cur, edges),
                         len(cur), cur.mean())


def w_scipy(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's normed Wasserstein, as Evidently computes it."""
    return stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)


def crossing_bound(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray) -> float:
    """How far below the exact W1 (normed) the estimate may be: over each bin where F_ref - F_cur
    changes sign, the bin's width times its larger mass (ref or cur)."""
    lo, hi = min(ref.min(), cur.min()), max(ref.max(), cur.max())
    cuts = np.concatenate([[lo], edges, [hi]])
    pts = np.sort(np.concatenate([ref, cur]))
    d = np.searchsorted(np.sort(ref), pts, side="right") / len(ref) - np.searchsorted(np.sort(cur), pts, side="right") / len(cur)
    bound = 0.0
    for a, b in itertools.pairwise(cuts):
        inside = (pts >= a) & (pts < b)
        if inside.any() and d[inside].max() > 0 and d[inside].min() < 0:
            mass = max(((ref >= a) & (ref < b)).mean(), ((cur >= a) & (cur < b)).mean())
            bound += (b - a) * mass
    return bound / max(float(np.std(ref)), 0.001)


def evidently_test(ref, cur, kind: str):
    """Evidently's own choice of test and its result on these rows: (method name, score, drifted)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Numerical if kind == D.NUMERIC else ColumnType.Categorical
    r, c = pd.Series(ref).dropna(), pd.Series(cur).dropna()
    test = get_stattest(r, c, ctype, None)
    result = test(r, c, ctype, None)
    return test.name, float(result.drift_score), bool(result.drifted)


GENERATORS = {  # (rng, rows, shift, scale) -> sample
    "normal": lambda g, n, s, k: g.normal(s, k, n),
    "lognormal": lambda g, n, s, k: np.exp(g.normal(s, 0.7 * k, n)),
    "bimodal": lambda g, n, s, k: np.where(g.random(n) < 0.5, g.normal(-1 + s, 0.5 * k, n), g.normal(1, 0.5, n)),
    "gamma": lambda g, n, s, k: g.gamma(2 * k, 1, n) + s,
    "rounded": lambda g, n, s, k: np.round(g.exponential(3 * k, n) + s),
}


# --------------------------------------------------------------------------- Wasserstein


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("shift,scale", [(0, 1), (0.05, 1), (0.3, 1), (0, 1.4), (0, 0.7), (0.2, 1.2)])
def test_wasserstein_against_scipy_within_the_crossing_bound(name, shift, scale):
    gen = GENERATORS[name]
    rng = np.random.default_rng(11)
    ref, cur = gen(rng, 4000, 0, 1), gen(rng, 2500, shift, scale)
    edges = quantile_edges(ref, W_LEVELS)
    est, exact = w_estimate(ref, cur, edges), w_scipy(ref, cur)
    assert est <= exact + 1e-9  # a lower bound
    assert exact - est <= crossing_bound(ref, cur, edges) + 1e-9


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_wasserstein_is_exact_for_a_pure_shift(name):
    """No crossing, no error: a shifted copy is exact whatever the cut points (even none)."""
    ref = GENERATORS[name](np.random.default_rng(12), 3000, 0, 1)
    cur = ref + 0.37
    for edges in (quantile_edges(ref, W_LEVELS), np.array([])):
        assert w_estimate(ref, cur, edges) == pytest.approx(w_scipy(ref, cur), rel=1e-9, abs=1e-12)


def test_wasserstein_levels_accuracy_on_a_corpus():
    """The tail-dense levels: on 150 random shifts/rescalings of five shapes, the estimate is within
    0.02 (in reference standard deviations, against a threshold of 0.1) of SciPy's, and no more
    than 2 decisions in 150 differ (all within 0.02 of the threshold)."""
    errors, flips = [], 0
    rng = np.random.default_rng(13)
    for trial in range(150):
        gen = list(GENERATORS.values())[trial % len(GENERATORS)]
        ref = gen(rng, 3000, 0, 1)
        shift = rng.choice([0, 0, rng.uniform(0, 0.4)])
        scale = rng.choice([1, 1, rng.uniform(0.7, 1.5)])
        cur = gen(rng, 1500, shift, scale)
        est, exact = w_estimate(ref, cur, quantile_edges(ref, W_LEVELS)), w_scipy(ref, cur)
        errors.append(exact - est)
        if (est >= 0.1) != (exact >= 0.1):
            flips += 1
            assert abs(exact - 0.1) < 0.02
    assert max(errors) < 0.02 and min(errors) > -1e-9
    assert flips <= 2


@pytest.mark.slow
def test_wasserstein_matches_evidently():
    ref, cur = RNG.normal(0, 1, 3000), RNG.normal(0.25, 1.1, 2000)
    name, score, drifted = evidently_test(ref, cur, D.NUMERIC)
    assert name == "wasserstein"
    edges = quantile_edges(ref, W_LEVELS)
    est = w_estimate(ref, cur, edges)
    assert 0 <= score - est <= crossing_bound(ref, cur, edges) + 1e-9
    assert D.REGISTRY["wasserstein"].detected(est, 0.1) == drifted


# --------------------------------------------------------------------------- KS


@pytest.mark.parametrize("n1,n2", [(300, 200), (800, 800), (1000, 600), (20000, 15000)])
def test_ks_pvalue_equals_scipy(n1, n2):
    a, b = RNG.normal(0, 1, n1), RNG.normal(0.1, 1, n2)
    res = stats.ks_2samp(a, b)
    assert D.ks_pvalue(float(res.statistic), n1, n2) == pytest.approx(res.pvalue, rel=1e-12, abs=1e-300)


def test_ks_from_cut_points_brackets_scipy():
    ref, cur = RNG.normal(0, 1, 900), RNG.normal(0.15, 1.1, 700)
    edges = quantile_edges(ref, [i / 65 for i in range(1, 65)])
    lo = D.ks_statistic(lt_counts(ref, edges), lt_counts(cur, edges), len(ref), len(cur))
    hi = D.ks_statistic_bound(lt_counts(ref, edges), lt_counts(cur, edges), len(ref), len(cur))
    exact = stats.ks_2samp(ref, cur)
    assert lo <= exact.statistic + 1e-12 <= hi + 2e-12
    # p is decreasing in the statistic: SciPy's p-value lies between the two
    assert D.ks_pvalue(hi, 900, 700) - 1e-12 <= exact.pvalue <= D.ks_pvalue(lo, 900, 700) + 1e-12


def test_ks_exact_on_discrete_values():
    """Cut at every value and just above the last, as the spec does for <= 20 values: exact."""
    ref, cur = RNG.poisson(3, 700).astype(float), RNG.poisson(3.4, 500).astype(float)
    values = np.unique(ref)
    edges = np.concatenate([values, [np.nextafter(values[-1], np.inf)]])
    if cur.max() > values[-1]:
        cur = np.minimum(cur, values[-1])  # no unseen values above: then every jump is at a cut point
    cur = cur[np.isin(cur, values)]
    p = D.ks(lt_counts(ref, edges), lt_counts(cur, edges), len(ref), len(cur))
    exact = stats.ks_2samp(ref, cur)
    assert D.ks_statistic(lt_counts(ref, edges), lt_counts(cur, edges), len(ref), len(cur)) == pytest.approx(exact.statistic, abs=1e-12)
    assert p == pytest.approx(exact.pvalue, rel=1e-9)


@pytest.mark.slow
def test_ks_decision_matches_evidently_on_small_references():
    for shift, expect in [(0.0, False), (0.6, True)]:
        ref, cur = RNG.normal(0, 1, 800), RNG.normal(shift, 1, 600)
        name, _score, drifted = evidently_test(ref, cur, D.NUMERIC)
        assert name == "ks" and drifted == expect
        edges = quantile_edges(ref, [i / 65 for i in range(1, 65)])
        p = D.ks(lt_counts(ref, edges), lt_counts(cur, edges), 800, 600)
        assert D.REGISTRY["ks"].detected(p, 0.05) == drifted


# --------------------------------------------------------------------------- categories


def counts_of(ref, cur):
    keys = sorted(set(ref) | set(cur))
    r, c = pd.Series(ref).value_counts(), pd.Series(cur).value_counts()
    return [r.get(k, 0) for k in keys], [c.get(k, 0) for k in keys]


CATEGORY_CASES = {
    "stable": (["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]),
    "moved": (["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]),
    "slight": (["a", "b", "c"], [0.5, 0.3, 0.2], [0.48, 0.31, 0.21]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CATEGORY_CASES))
@pytest.mark.parametrize("n_ref", [600, 3000])
def test_categorical_methods_equal_evidently(case, n_ref):
    cats, p_ref, p_cur = CATEGORY_CASES[case]
    ref, cur = RNG.choice(cats, n_ref, p=p_ref), RNG.choice(cats, 2000, p=p_cur)
    r, c = counts_of(ref, cur)
    name, score, drifted = evidently_test(ref, cur, D.CATEGORICAL)
    assert D.auto_method(D.CATEGORICAL, n_ref, len(cats)) == name
    fn = {"jensenshannon": D.jensenshannon, "chisquare": D.chisquare}[name]
    assert fn(r, c) == pytest.approx(score, rel=1e-9, abs=1e-12)
    assert D.REGISTRY[name].detected(fn(r, c), D.REGISTRY[name].default_threshold) == drifted


@pytest.mark.slow
def test_psi_and_js_equal_evidently_and_scipy_on_categories():
    from evidently.legacy.calculations.stattests import (
        jensenshannon_stat_test,
        psi_stat_test,
    )
    from evidently.legacy.core import ColumnType

    ref = RNG.choice(list("abcde"), 3000, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    cur = RNG.choice(list("abcdf"), 2000, p=[0.3, 0.3, 0.2, 0.1, 0.1])  # e vanished, f is new
    r, c = counts_of(ref, cur)
    rs, cs = pd.Series(ref), pd.Series(cur)
    assert D.psi(r, c) == pytest.approx(psi_stat_test(rs, cs, ColumnType.Categorical, 0.1).drift_score, rel=1e-9)
    js = jensenshannon_stat_test(rs, cs, ColumnType.Categorical, 0.1).drift_score
    assert D.jensenshannon(r, c) == pytest.approx(js, rel=1e-9)
    assert D.jensenshannon(r, c) == pytest.approx(distance.jensenshannon(np.array(r) / 3000, np.array(c) / 2000), rel=1e-12)


def test_chisquare_equals_scipy_without_importing_it():
    from scipy import stats

    for ref, cur in [([500, 300, 200], [480, 330, 190]), ([50, 50], [70, 30]), ([9000, 900, 90, 10], [8500, 1200, 250, 50])]:
        expected = np.array(ref) * (sum(cur) / sum(ref))
        assert D.chisquare(ref, cur) == pytest.approx(stats.chisquare(cur, expected).pvalue, rel=1e-12, abs=1e-300)


def test_unseen_categories_pooled_keep_jensenshannon_exact():
    """Categories the reference never saw are pooled in one count: JS is linear in them, so exact."""
    ref = RNG.choice(list("abc"), 3000)
    cur = np.concatenate([RNG.choice(list("abc"), 1500), RNG.choice(list("xyz"), 500)])
    r, c = counts_of(ref, cur)  # keys a b c x y z
    pooled_r, pooled_c = r[:3] + [0], c[:3] + [sum(c[3:])]
    assert D.jensenshannon(pooled_r, pooled_c) == pytest.approx(D.jensenshannon(r, c), rel=1e-12)
    assert D.chisquare(pooled_r, pooled_c) == 0.0  # an unseen category: infinite statistic


@pytest.mark.slow
def test_z_test_equals_evidently():
    from evidently.legacy.calculations.stattests import z_stat_test
    from evidently.legacy.core import ColumnType

    ref, cur = RNG.choice(["no", "yes"], 700, p=[0.7, 0.3]), RNG.choice(["no", "yes"], 500, p=[0.6, 0.4])
    r, c = counts_of(ref, cur)
    want = z_stat_test(pd.Series(ref), pd.Series(cur), ColumnType.Categorical, 0.05)
    assert D.z_test(r, c) == pytest.approx(want.drift_score, rel=1e-9)
    assert D.auto_method(D.CATEGORICAL, 700, 2) == "z"


# --------------------------------------------------------------------------- auto and the registry


@pytest.mark.slow
@pytest.mark.parametrize("n_ref", [50, 1000, 1001, 50000])
@pytest.mark.parametrize("n_values", [1, 2, 3, 5, 6, 40])
@pytest.mark.parametrize("kind", [D.NUMERIC, D.CATEGORICAL])
def test_auto_picks_what_evidently_picks(n_ref, n_values, kind):
    from evidently.legacy.calculations.stattests.registry import _get_default_stattest
    from evidently.legacy.core import ColumnType

    values = np.arange(n_values, dtype=float) if kind == D.NUMERIC else np.array([f"v{i}" for i in range(n_values)])
    ref = pd.Series(np.resize(values, n_ref))
    cur = pd.Series(values)
    ctype = ColumnType.Numerical if kind == D.NUMERIC else ColumnType.Categorical
    assert D.auto_method(kind, n_ref, n_values) == _get_default_stattest(ref, cur, ctype).name


def test_auto_picks_exactly_one_descriptor_for_every_column():
    for kind in (D.NUMERIC, D.CATEGORICAL):
        for large in (False, True):
            for n_values in range(1, 12):
                picked = [m.name for m in D.REGISTRY.values() if m.auto is not None and m.auto(kind, large, n_values)]
                assert len(picked) == 1, (kind, large, n_values, picked)


def test_a_method_needs_what_it_scores_from_and_falls_back_to_what_the_summaries_carry():
    assert D.needs("ks", [5000], None) == {D.CDF}
    assert D.needs("psi", [5000], None) == {D.BINS} and D.needs("psi", [5000], 3) == {D.VALUES}
    assert D.needs("wasserstein", [50], 3) == {D.DISTANCES}
    assert D.needs("auto", [5000], None) == {D.DISTANCES}  # large: Wasserstein
    assert D.needs("auto", [500], None) == {D.CDF}  # small: KS
    # few values: chi-square on them, or KS once a window brings a value the reference never had
    assert D.needs("auto", [500], 3) == {D.VALUES, D.CDF}
    assert D.needs("auto", [500, 5000], None) == {D.CDF, D.DISTANCES}  # a rolling reference of either size
    assert D.needs("chisquare", [5000], None) == {D.DISTANCES}  # categorical-only: numeric columns take auto's
    spec = {"edges": [0.0, 1.0], "center": 0.5, "values": None, "distinct": None}
    only_abs = D.NumericSummary(rows=2000, n=2000, s=1000.0, s2=500.0, abs=[600.0, 1400.0])
    assert D.compare_numeric(spec, only_abs, only_abs, "ks").method == "wasserstein"
    only_lt = D.NumericSummary(rows=2000, n=2000, s=1000.0, s2=500.0, lt=[0.0, 2000.0])
    assert D.compare_numeric(spec, only_lt, only_lt, "wasserstein").method == "ks"
    assert D.compare_numeric(spec, only_lt, only_lt, "psi").method == "psi"


def test_registry_descriptors():
    for name, m in D.REGISTRY.items():
        assert m.name == name and m.default_threshold > 0 and m.column_types
    assert D.REGISTRY["wasserstein"].detected(0.1, 0.1) is True
    assert D.REGISTRY["ks"].detected(0.05, 0.05) is True  # Evidently: p <= threshold
    assert D.REGISTRY["chisquare"].detected(0.05, 0.05) is False  # Evidently: p < threshold
    assert D.resolve("chisquare", D.NUMERIC, 5000, 100) == "wasserstein"  # categorical-only: auto
    assert D.resolve("psi", D.NUMERIC, 5000, 100) == "psi"
    with pytest.raises(ValueError, match="unknown drift method 'kl'"):
        D.validate_method("kl")


def test_null_share_is_compared_on_its_own():
    spec = {"edges": [0.0], "center": 0.0}
    stable = D.NumericSummary(rows=1000, n=900, s=0.0, s2=900.0, abs=[800.0])
    more_nulls = D.NumericSummary(rows=1000, n=600, s=0.0, s2=600.0, abs=[533.3])
    same = D.compare_numeric(spec, stable, stable)
    assert same.null_detected is False and same.detected is False and same.null_cur == pytest.approx(0.1)
    moved = D.compare_numeric(spec, stable, more_nulls)
    assert moved.value_detected is False  # the values did not move
    assert moved.null_detected is True and moved.detected is True  # their NULL share did
    # with a small reference the NULL shares go through the z-test
    small = D.NumericSummary(rows=500, n=450, s=0.0, s2=450.0, lt=[225.0])
    assert D.compare_numeric({"edges": [0.0], "center": 0.0}, small, small).null_method == "z"


def test_add_summaries_is_elementwise():
    a = {"rows": 2, "num": {"x": {"n": 2, "s": 1.5, "lt": [1, 2]}}}
    b = {"rows": 3, "num": {"x": {"n": 1, "s": 0.5, "lt": [0, 1]}}}
    assert D.add_summaries(a, b) == {"rows": 5, "num": {"x": {"n": 3, "s": 2.0, "lt": [1, 3]}}}
    with pytest.raises(ValueError):
        D.add_summaries({"lt": [1]}, {"lt": [1, 2]})
