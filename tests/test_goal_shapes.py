"""Whatever a goal's SQL returns, the monitor stores a right number or raises an error naming goal and file."""
import math
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from monitor.config import Goal
from monitor.goals import GoalDataError, cap_segments, shape
from monitor.sqltext import strip_comments

GOAL = Goal(name="g", sql=Path("/cfg/metrics_sql/g.sql"), direction="at_most", target=0.01, start="2026-09-01")

cells = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=5), st.decimals(allow_nan=False, allow_infinity=False, places=3), st.booleans())
column_sets = st.lists(st.sampled_from(["value", "numerator", "denominator", "segment", "other", "VALUE"]),
                       unique=True, max_size=5)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(column_sets, st.integers(0, 4), st.data())
def test_any_result_shape_is_stored_right_or_rejected_with_goal_and_file(columns, nrows, data):
    rows = [tuple(data.draw(cells) for _ in columns) for _ in range(nrows)]
    try:
        value, num, den, segs = shape(GOAL, columns, rows)
    except GoalDataError as e:
        assert "goal g" in str(e) and "g.sql" in str(e)
        return
    for x in (value, num, den):
        assert x is None or (isinstance(x, float) and math.isfinite(x))
    lower = [c.lower() for c in columns]
    assert "value" in lower
    if "segment" in lower and segs:
        assert num == pytest.approx(sum(s["numerator"] or 0 for s in segs))
        assert den == pytest.approx(sum(s["denominator"] or 0 for s in segs))
        if den:
            assert value == pytest.approx(num / den)
    elif nrows == 1:
        raw = rows[0][lower.index("value")]
        assert value == (None if raw is None else float(raw))


@pytest.mark.parametrize("columns,rows,message", [
    (["n"], [(1,)], "no `value` column"),
    (["value"], [("high",)], "expected a number"),
    (["value"], [(1,), (2,)], "2 rows without a `segment`"),
    (["value"], [(float("nan"),)], "finite"),
    (["value"], [(float("inf"),)], "finite"),
    (["segment", "value"], [("a", 1)], "must also return `numerator` and `denominator`"),
    (["segment", "value", "numerator", "denominator"], [("a", 0.5, 1, 2), ("a", 0.5, 1, 2)], "more than one row"),
        (["value", "numerator", "denominator"], [(0.5, 3, 10)], "value 0.5 contradicts numerator / denominator = 3 / 10"),
        (["segment", "value", "numerator", "denominator"], [("a", 0.9, 1, 2)], "segment 'a': value 0.9 contradicts"),
        (["value"], [(1.5,)], "value 1.5 is outside \\[0, 1\\], but the unit is ratio"),
        (["segment", "value", "numerator", "denominator"], [("a", None, 5, 2)], "the segments' sum: value 2.5 is outside"),
    (["value", "numerator", "denominator"], [(0.1, "x", 10)], "numerator"),
])
def test_each_bad_shape_gets_a_clear_error(columns, rows, message):
    with pytest.raises(GoalDataError, match=message):
        shape(GOAL, columns, rows)


def test_null_denominators_and_no_rows_give_no_value_rather_than_a_wrong_one():
    assert shape(GOAL, ["value"], []) == (None, None, None, [])
    assert shape(GOAL, ["value", "numerator", "denominator"], [(None, 0, None)])[0] is None
    value, num, den, segs = shape(GOAL, ["segment", "value", "numerator", "denominator"], [("a", None, None, None)])
    assert value is None and den == 0


def test_decimals_from_postgresql_are_numbers():
    assert shape(GOAL, ["value"], [(Decimal("0.125"),)])[0] == 0.125


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 1000)), max_size=40), st.integers(1, 25))
def test_capping_segments_keeps_the_largest_and_loses_no_count(pairs, limit):
    segs = [{"segment": f"s{i}", "numerator": float(min(n, d)), "denominator": float(d), "value": None}
            for i, (n, d) in enumerate(pairs)]
    capped = cap_segments(segs, limit)
    assert len(capped) <= limit + 1
    assert sum(s["denominator"] for s in capped) == sum(s["denominator"] for s in segs)
    assert sum(s["numerator"] for s in capped) == sum(s["numerator"] for s in segs)
    kept = [s for s in capped if s["segment"] != "other"]
    dropped = [s for s in segs if s["segment"] not in {k["segment"] for k in kept}]
    if kept and dropped:
        assert min(k["denominator"] for k in kept) >= max(d["denominator"] for d in dropped)


def test_comments_are_stripped_but_strings_are_kept():
    sql = "SELECT '-- not a comment' AS a, ':x' AS b -- :window_start here\n/* :window_end */ FROM t"
    assert strip_comments(sql) == "SELECT '-- not a comment' AS a, ':x' AS b \n  FROM t"
