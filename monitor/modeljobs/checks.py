"""Data checks of a window: the configured columns (schema), the source's timestamps, its scores."""
from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa

from .. import conventions as names
from .. import engines
from .. import multiclass as MC
from ..config import Model
from ..db import invalid_time, newest_of, quote, quote_table
from ..store import ModelWindow
from ..windows import Window
from .source import model_bounds, _columns, _table_columns, _ts, model_where

log = logging.getLogger("monitor.modeljobs")


SCORE_NULL_TOLERANCE = 0.05  # score_nulls fails when more of the window's scores than this are NULL or not finite
REFERENCE_MIN_ROWS = 30  # a reference of fewer rows is too few to judge drift by (the `reference` check)
QUALITY_CHECKS = ("score_range", "score_nulls", "label_values", "label_duplicates")  # failing: quality withheld


def _schema_problems(conn, model: Model) -> list[str]:
    """Configured columns missing, or of a type that cannot be read as a number (as the engine says).

    The timestamp column is `monitor.db.timestamps`' to judge; without it there is no window at
    all, so a missing one is an error (the job fails) rather than a check.
    """
    s, lab = model.source, model.labels
    number = (sa.Integer, sa.Numeric, sa.Float)
    binary = model.task == "binary_classification"
    classes = MC.is_multiclass(model)  # class names or codes: any type, the same for predictions and labels
    wanted = [(s.table, "source.id", s.id, None),
              *([(s.table, "source.score", s.score, number)] if s.score else []),
              *[(s.table, f"source.class_scores.{k}", c, number) for k, c in (s.class_scores or {}).items()],
              *[(s.table, "source.features.numeric", c, number) for c in s.features.numeric],
              *[(s.table, "source.features.categorical", c, None) for c in s.features.categorical],
              *[(s.table, "segments", c, None) for c in model.segments]]
    if s.prediction:
        wanted.append((s.table, "source.prediction", s.prediction, None if classes else (*number, sa.Boolean)))
    if lab is not None:
        wanted += [(lab.table, "labels.id", lab.id, None),
                   (lab.table, "labels.label", lab.label,
                    None if classes else (*number, sa.Boolean) if binary else number)]
    problems = []
    for table, key, col, types in wanted:
        have = _columns(conn, table)
        if have is None:
            problems.append(f"{key}: table {table} does not exist")
        elif col not in have:
            problems.append(f"{key}: column {col} not in table {table}")
        elif types and not engines.of(conn).readable_as(have[col], types):
            problems.append(f"{key}: column {col} of table {table} is of type {have[col]}, not a number")
    if problems:  # read the tables again next time: the fix may be on its way
        for table in {s.table, *([lab.table] if lab else [])}:
            _table_columns.pop((str(conn.engine.url), table), None)
    if any(p.startswith("source.") and "table" in p and "does not exist" in p for p in problems):
        raise ValueError(f"model {model.name}: {problems[0]}")
    return problems


def _check(name: str, value: float | None, detected: bool) -> dict:
    """A data check's row: `value` the offending rows (None: not a count), `detected` True when failing."""
    assert name in names.DATA_CHECKS, name
    return {"kind": names.DATA_CHECK_KIND, "name": name, "segment": "", "method": None,
            "value": None if value is None else float(value), "threshold": None, "detected": bool(detected)}


_bad_ts: dict[tuple, int] = {}


def _bad_timestamps(conn, model: Model, now: datetime) -> int:
    """Rows of the whole source whose timestamp is NULL or unreadable: counted once per cycle (per
    `now`), since it is one count for every window a cycle computes."""
    s = model.source
    key = (str(conn.engine.url), s.table, s.timestamp, now)
    if key not in _bad_ts:
        for old in [k for k in _bad_ts if k[3] != now]:
            del _bad_ts[old]
        x = quote(conn, s.timestamp)
        _bad_ts[key] = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {quote_table(conn, s.table)} "
                                                f"WHERE {invalid_time(conn, x, _ts(conn, model))}")).scalar() or 0)
    return _bad_ts[key]


def _source_checks(conn, model: Model, allc: dict, newest: float | None, now: datetime) -> list[dict]:
    """The checks read from the window's pass, the source-wide `timestamp` check and the freshness
    row (`newest`, the pass's newest timestamp)."""
    s = model.source
    rows = int(allc["rows"])
    found = allc.get("checks", {})
    nulls = rows - int(allc["score"]["n"])  # NULL, NaN and +-infinity
    bad_ts = _bad_timestamps(conn, model, now)
    checks = [_check("timestamp", bad_ts, bad_ts > 0),
              *([_check("score_nulls", nulls, nulls > SCORE_NULL_TOLERANCE * rows)] if s.score else []),
              _check("non_finite", found.get("non_finite", 0), found.get("non_finite", 0) > 0)]
    if model.task == "binary_classification" or s.class_scores:
        checks.append(_check("score_range", found.get("score_range", 0), found.get("score_range", 0) > 0))
    checks.append({"kind": names.FRESHNESS_KIND, "name": names.FRESHNESS_NAME, "segment": "", "method": None,
                   "value": None if newest is None else float(newest), "threshold": None, "detected": None})
    return checks


def _unusable(conn, model: Model, window: Window, problems: list[str], now: datetime) -> tuple[ModelWindow, int]:
    """A window whose configured columns are missing or unusable: recorded with its rows, its
    freshness and a failing `schema` check, and nothing computed from the columns."""
    s = model.source
    log.warning("model %s: %s", model.name, "; ".join(problems), extra={"model": model.name})
    t, x, ts = quote_table(conn, s.table), quote(conn, s.timestamp), _ts(conn, model)
    row = conn.execute(sa.text(f"SELECT COUNT(*), {newest_of(conn, x, ts)} FROM {t} WHERE {model_where(conn, model)}"),
                       model_bounds(conn, model, window)).one()
    bad_ts = _bad_timestamps(conn, model, now)
    conn.rollback()
    rows = int(row[0] or 0)
    metrics = [_check("schema", None, True), _check("timestamp", bad_ts, bad_ts > 0),
               {"kind": names.FRESHNESS_KIND, "name": names.FRESHNESS_NAME, "segment": "", "method": None,
                "value": None if row[1] is None else float(row[1]), "threshold": None, "detected": None},
               {"kind": "online", "name": "predictions", "segment": "", "value": float(rows)}]
    return ModelWindow(model=model.name, window_start=window.start, window_end=window.end, rows=rows,
                       drift_share=None, dataset_drift=None, quality_status="invalid", label_coverage=None,
                       metrics=metrics), rows
