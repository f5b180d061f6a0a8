import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st
from scipy.stats import binomtest

from monitor.smart import judge, needed_sample, planned, theil_sen, trajectory, wilson

UTC = timezone.utc


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_wilson_interval_holds_the_observed_rate_and_stays_in_unit_range(k, n):
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1


@pytest.mark.parametrize("k,n", [(0, 300), (3, 300), (150, 300), (6000, 1_000_000), (999, 1000)])
def test_wilson_interval_agrees_with_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_a_rare_rate_cannot_be_judged_from_few_loans_and_says_how_many_are_needed():
    j = judge(0.0, 0, 300, target=0.0005, direction="at_most")
    assert j.status == "insufficient_data"
    assert j.met is True
    # with zero defaults, the Wilson upper bound z²/(n+z²) drops below 0.05 % only past ~7,700 loans
    assert 7_000 < j.needed < 8_000
    assert wilson(0, j.needed)[1] < 0.0005 <= wilson(0, j.needed - 1)[1]


def test_a_clear_breach_is_missed_and_a_clear_success_is_met():
    assert judge(0.03, 300, 10_000, 0.01, "at_most").status == "missed"
    assert judge(0.005, 50, 10_000, 0.01, "at_most").status == "met"
    assert judge(120.0, None, None, 100, "at_least").status == "met"
    assert judge(80.0, 8000.0, 100.0, 100, "at_least").status == "missed"  # not a rate: numerator > denominator


def test_a_window_without_rows_is_no_data_and_neither_met_nor_missed():
    for denominator in (0, None):
        j = judge(None, None, denominator, 0.01, "at_most")
        assert j.status == "no_data" and j.met is None
    # rows, but no value computed from them: too little to judge, not an outage
    assert judge(None, None, 40, 0.01, "at_most").status == "insufficient_data"


def test_a_latest_window_without_data_is_never_on_track():
    pts = _weeks([120.0] * 6)
    deadline = datetime(2027, 3, 31, tzinfo=UTC)
    assert trajectory(pts, 100, "at_least", deadline, None, pts[-1][0]).status == "on_track"
    gap = pts + [(pts[-1][0] + timedelta(weeks=1), None)]
    assert trajectory(gap, 100, "at_least", deadline, None, gap[-1][0]).status == "unknown"
    falling = _weeks([120.0 - 5 * i for i in range(6)]) + [(pts[-1][0] + timedelta(weeks=1), None)]
    assert trajectory(falling, 100, "at_least", deadline, None, falling[-1][0]).status == "off_track"


@given(st.floats(0.0001, 0.2), st.floats(0.0001, 0.2))
def test_needed_sample_is_the_smallest_that_separates_rate_and_target(p, target):
    if abs(p - target) < 1e-3:
        return
    n = needed_sample(p, target)
    lo, hi = wilson(p * n, n)
    assert not (lo <= target <= hi)
    if n > 1:
        lo, hi = wilson(p * (n - 1), n - 1)
        assert lo <= target <= hi


def test_the_planned_path_runs_straight_from_baseline_to_target():
    a, b = datetime(2026, 9, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC)
    assert planned(0.04, a, 0.01, b, a) == 0.04
    assert planned(0.04, a, 0.01, b, b) == 0.01
    assert planned(0.04, a, 0.01, b, a + (b - a) / 2) == pytest.approx(0.025)
    assert planned(0.04, a, 0.01, b, b + timedelta(days=30)) == 0.01


def test_theil_sen_ignores_one_outlier():
    xs = list(range(8))
    ys = [2 * x + 1 for x in xs]
    ys[5] = 100
    slope, intercept = theil_sen(xs, ys)
    assert slope == pytest.approx(2) and intercept == pytest.approx(1)


def _weeks(values, start=datetime(2026, 9, 7, tzinfo=UTC)):
    return [(start + timedelta(weeks=i), v) for i, v in enumerate(values)]


def test_growth_too_slow_for_the_deadline_is_off_track():
    t = trajectory(_weeks([80 + 0.5 * i for i in range(8)]), 100, "at_least", datetime(2027, 3, 31, tzinfo=UTC),
                   (80, datetime(2026, 9, 1, tzinfo=UTC)), datetime(2026, 11, 1, tzinfo=UTC))
    assert t.status == "off_track" and t.projected < 100
    assert t.slope_per_day == pytest.approx(0.5 / 7)


def test_a_one_week_spike_does_not_throw_a_goal_off_track():
    vals = [0.006] * 8
    vals[5] = 0.03
    t = trajectory(_weeks(vals), 0.01, "at_most", datetime(2027, 3, 31, tzinfo=UTC),
                   (0.034, datetime(2026, 9, 1, tzinfo=UTC)), datetime(2026, 11, 1, tzinfo=UTC))
    assert t.status == "on_track" and math.isclose(t.projected, 0.006)


def test_meeting_the_target_by_the_deadline_but_behind_plan_is_at_risk():
    # plan: 50 -> 100 over the period; now far behind the plan but growing fast enough
    vals = [50 + 1.5 * i for i in range(8)]
    t = trajectory(_weeks(vals, datetime(2026, 12, 1, tzinfo=UTC)), 100, "at_least", datetime(2027, 9, 1, tzinfo=UTC),
                   (50, datetime(2026, 9, 1, tzinfo=UTC)), datetime(2027, 2, 1, tzinfo=UTC))
    assert t.projected >= 100 and t.status == "at_risk"


def test_too_few_points_leave_the_trajectory_unknown():
    t = trajectory(_weeks([1.0, 2.0]), 3, "at_least", datetime(2027, 1, 1, tzinfo=UTC), None, datetime(2026, 10, 1, tzinfo=UTC))
    assert t.status == "unknown" and t.current == 2.0


def test_a_goal_met_from_the_start_plans_to_stay_within_the_target():
    vals = [0.004, 0.005, 0.003, 0.0085, 0.005, 0.166, 0.007]
    t = trajectory(_weeks(vals), 0.01, "at_most", datetime(2027, 3, 31, tzinfo=UTC),
                   (0.005, datetime(2026, 9, 1, tzinfo=UTC)), datetime(2026, 11, 1, tzinfo=UTC))
    assert t.planned == 0.01 and t.status == "on_track"
    assert t.slope_per_day == 0.0 and t.projected == pytest.approx(0.005), "noise is not projected as a trend"
