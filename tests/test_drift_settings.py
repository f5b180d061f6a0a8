"""Drift settings beyond one method per model: NULL shares by effect size on large references."""
from __future__ import annotations

import pytest
from scipy.spatial import distance

from monitor import drift as D


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
