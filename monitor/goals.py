"""A goal's window: run its SQL, check the shape of what it returns, judge it."""
from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from . import engines
from .config import Goal
from .db import bind_time
from .smart import judge
from .spec import kind_mismatch
from .sqltext import strip_comments
from .store import GoalWindow
from .windows import Window

OTHER = "other"


class GoalDataError(Exception):
    """The goal's SQL returned something the monitor cannot store; the message names goal and file."""


def _number(goal: Goal, column: str, raw, row_no: int) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal)):
        raise GoalDataError(f"goal {goal.name} ({goal.sql}): column {column!r} of row {row_no} is {raw!r}, expected a number or NULL")
    x = float(raw)
    if not math.isfinite(x):
        raise GoalDataError(f"goal {goal.name} ({goal.sql}): column {column!r} of row {row_no} is {x}, expected a finite number or NULL")
    return x


WINDOW_PARAMS = ("window_start", "window_end", "window_start_epoch", "window_end_epoch")
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def window_params(conn, window: Window) -> dict:
    """The bind parameters of a goal's SQL: the window's bounds as timestamps and as integer epoch seconds."""
    return {"window_start": bind_time(conn, window.start), "window_end": bind_time(conn, window.end),
            "window_start_epoch": int(window.start.timestamp()), "window_end_epoch": int(window.end.timestamp())}


def used_params(sql: str) -> set[str]:
    """The window parameters a SQL text uses (comments and quoted text aside)."""
    text = re.sub(r"'(?:[^']|'')*'", "''", strip_comments(sql))
    return {p for p in _PARAM.findall(text) if p in WINDOW_PARAMS}


def run_sql(conn, goal: Goal, window: Window, text: str | None = None) -> tuple[list[str], list[tuple]]:
    """Run the goal's SQL on one window with bound parameters, in a read-only transaction.

    PostgreSQL: SET TRANSACTION READ ONLY; SQLite: PRAGMA query_only for the statement (see
    `Engine.begin_read_only`). A file that tries to write fails with the database's own error;
    other engines run it as it is.
    """
    sql = sa.text(strip_comments(goal.sql_text if text is None else text))
    engine = engines.of(conn)
    if conn.in_transaction():
        conn.rollback()  # SET TRANSACTION must come first in its transaction
    try:
        engine.begin_read_only(conn)
        result = conn.execute(sql, window_params(conn, window))
        return list(result.keys()), [tuple(r) for r in result]
    finally:
        conn.rollback()
        engine.end_read_only(conn)


def _consistent(goal: Goal, value, numerator, denominator, where: str) -> None:
    """A rate's `value` must be its numerator over its denominator, a ratio's in [0, 1]: anything else is a bug in the SQL."""
    if value is not None and goal.unit.lower() == "ratio" and not 0 <= value <= 1:
        raise GoalDataError(f"goal {goal.name} ({goal.sql}): {where}value {value:g} is outside [0, 1], but the unit is ratio")
    if value is None or numerator is None or not denominator:
        return
    if not math.isclose(value, numerator / denominator, rel_tol=1e-6, abs_tol=1e-12):
        raise GoalDataError(f"goal {goal.name} ({goal.sql}): {where}value {value:g} contradicts numerator / denominator "
                            f"= {numerator:g} / {denominator:g} = {numerator / denominator:g}")


def shape(goal: Goal, columns: list[str], rows: list[tuple]) -> tuple[float | None, float | None, float | None, list[dict]]:
    """(value, numerator, denominator, segments) from the SQL's rows, or a GoalDataError."""
    cols = [c.lower() for c in columns]
    if goal.kind_declared and (mismatch := kind_mismatch(goal, cols)):  # a declared kind is held to its columns
        raise GoalDataError(f"{mismatch} ({goal.sql})")
    if "value" not in cols:
        raise GoalDataError(f"goal {goal.name} ({goal.sql}): the query returns no `value` column (it returns {', '.join(columns) or 'nothing'})")
    idx = {c: cols.index(c) for c in ("value", "numerator", "denominator", "segment") if c in cols}

    def num(row, c, i):
        return _number(goal, c, row[idx[c]], i) if c in idx else None

    if "segment" not in idx:
        if len(rows) > 1:
            raise GoalDataError(f"goal {goal.name} ({goal.sql}): the query returns {len(rows)} rows without a `segment` column; expected one row")
        if not rows:
            return None, None, None, []
        r = rows[0]
        value, numerator, denominator = num(r, "value", 1), num(r, "numerator", 1), num(r, "denominator", 1)
        _consistent(goal, value, numerator, denominator, "")
        return value, numerator, denominator, []
    if "numerator" not in idx or "denominator" not in idx:
        raise GoalDataError(f"goal {goal.name} ({goal.sql}): a query with a `segment` column must also return `numerator` and `denominator`")
    segs, seen = [], set()
    for i, r in enumerate(rows, 1):
        name = "(null)" if r[idx["segment"]] is None else str(r[idx["segment"]])
        if name in seen:
            raise GoalDataError(f"goal {goal.name} ({goal.sql}): segment {name!r} appears in more than one row")
        seen.add(name)
        segs.append({"segment": name, "value": num(r, "value", i), "numerator": num(r, "numerator", i),
                     "denominator": num(r, "denominator", i)})
        _consistent(goal, segs[-1]["value"], segs[-1]["numerator"], segs[-1]["denominator"], f"segment {name!r}: ")
    segs = cap_segments(segs, goal.max_segments)
    n = sum(s["numerator"] or 0.0 for s in segs)
    d = sum(s["denominator"] or 0.0 for s in segs)
    if not segs:
        return None, None, None, []
    _consistent(goal, n / d if d else None, n, d, "the segments' sum: ")
    return (n / d if d else None), n, d, segs


def cap_segments(segs: list[dict], limit: int) -> list[dict]:
    """Keep the `limit` segments with the largest denominators; sum the rest as `other`."""
    ordered = sorted(segs, key=lambda s: (-(s["denominator"] or 0.0), s["segment"]))
    if len(ordered) <= limit:
        return ordered
    keep, rest = ordered[:limit], ordered[limit:]
    other = [s for s in keep if s["segment"] == OTHER]
    if other:  # a segment already called `other` absorbs the tail
        keep.remove(other[0])
        rest.append(other[0])
    n = sum(s["numerator"] or 0.0 for s in rest)
    d = sum(s["denominator"] or 0.0 for s in rest)
    return keep + [{"segment": OTHER, "numerator": n, "denominator": d, "value": n / d if d else None}]


def compute(conn, goal: Goal, window: Window, provisional: bool, size: timedelta | None = None,
            kept_estimate: dict | None = None) -> tuple[GoalWindow, int]:
    """The stored result of one goal window, and the rows the query returned. `size` (the configured
    window size) keys it in the store: a calendar month's own length varies, its key does not.
    `kept_estimate`: the window's stored estimate, kept once the window is mature."""
    columns, rows = run_sql(conn, goal, window)
    value, numerator, denominator, segs = shape(goal, columns, rows)
    j = judge(value, numerator, denominator, goal.target, goal.direction)
    from .estimate import goal_estimate

    est = (goal_estimate(conn, goal, window, None if provisional else value, kept_estimate)
           if goal.estimate else None)
    return GoalWindow(
        goal=goal.name, size_seconds=int((size or window.size).total_seconds()), window_start=window.start,
        window_end=window.end, value=value, numerator=numerator, denominator=denominator,
        ci_low=j.ci_low, ci_high=j.ci_high, met=j.met, status=j.status, needed=j.needed,
        provisional=provisional, segments=segs, estimate=est,
    ), len(rows)
