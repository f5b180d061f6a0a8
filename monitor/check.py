"""`monitor check`: the config against the real databases, storing nothing.

Errors are what would make a job fail or store a wrong number (a missing column, goal SQL that
fails or returns the wrong shape, or columns that do not fit the goal's `kind`); warnings are what is suspicious (SQL that ignores the window,
a categorical feature that looks like an id, a target that is always met); notes say what was
found (the format of each model's timestamp column).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from . import engines
from .config import Config, Goal
from .db import describe_error, make_engine, quote, quote_table
from .spec import kind_mismatch
from .suggest import did_you_mean

# a categorical feature whose sampled rows are at least this share distinct looks like an id
ID_LIKE_SHARE = 0.9
ID_SAMPLE_ROWS = 10_000
ID_MIN_ROWS = 20
NON_NEGATIVE_UNITS = {"count", "minutes", "seconds", "hours", "days", "percent", "rub", "usd", "eur"}


class DatabaseDown(Exception):
    """A database cannot be reached: not a config problem."""


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def latest_due_window(goal_start: datetime, size, now: datetime):
    """The latest window whose end is not after now (the first window when none is due yet)."""
    from .windows import Window, floor

    end = floor(now, size)
    first = floor(goal_start, size)
    return Window(end - size, end) if end - size >= first else Window(first, first + size)


def goal_settings(g: Goal, now: datetime) -> list[str]:
    """Suspicious settings of a goal (plainly wrong ones are refused when the config is read)."""
    out = []
    unit = g.unit.lower()
    if g.target < 0 and unit in NON_NEGATIVE_UNITS:
        out.append(f"target: {g.target:g} is negative, but a value in {g.unit} cannot be")
    if unit == "percent" and not 0 <= g.target <= 100:
        out.append(f"target: {g.target:g} is outside [0, 100], but the unit is percent")
    if unit == "ratio" and ((g.direction == "at_most" and g.target == 1) or (g.direction == "at_least" and g.target == 0)):
        out.append(f"target: {g.direction} {g.target:g} of a ratio is always met")
    if g.deadline and g.deadline <= now:
        out.append(f"deadline: {g.deadline.date()} has passed")
    if g.baseline and g.baseline.value < 0 and unit in NON_NEGATIVE_UNITS:
        out.append(f"baseline.value: {g.baseline.value:g} is negative, but a value in {g.unit} cannot be")
    return out


def _check_goal(conn, g: Goal, i: int, where: str, now: datetime, report: CheckReport) -> None:
    from .goals import WINDOW_PARAMS, GoalDataError, run_sql, shape, used_params

    key = f"{where}: goals[{i}]({g.name})"
    for w in goal_settings(g, now):
        report.warnings.append(f"{key}.{w}")
    if not used_params(g.sql_text):
        report.warnings.append(f"{key}.sql: {g.sql} never uses the window parameters "
                               f"({', '.join(':' + p for p in WINDOW_PARAMS)}): every window gets the same value")
    window = latest_due_window(g.start, g.window, now)
    try:
        columns, rows = run_sql(conn, g, window)
        mismatch = kind_mismatch(g, list(columns))
        if mismatch and g.kind_declared:
            report.errors.append(f"{key}.kind: {mismatch}")
            return
        if mismatch:  # read from the SQL text, as older configs have it: said, not refused
            report.warnings.append(f"{key}.kind: {mismatch}")
        value, numerator, denominator, segs = shape(g, columns, rows)
    except GoalDataError as e:
        report.errors.append(f"{key}: on the window {window}: {e}")
        return
    except Exception as e:
        report.errors.append(f"{key}: {g.sql} fails on the window {window}: {describe_error(e)}")
        return
    if value is None:
        report.warnings.append(f"{key}: the latest due window {window} has no data (value NULL): the goal would read no_data")


def _check_timestamps(conn, m, i: int, where: str, report: CheckReport) -> None:
    from .db import detect_timestamp_format

    try:
        fmt, example = detect_timestamp_format(conn, m.source.table, m.source.timestamp)
    except Exception as e:
        report.errors.append(f"{where}: models[{i}]({m.name}).source.timestamp: {describe_error(e)}")
        if conn.in_transaction():
            conn.rollback()
        return
    declared = m.source.timestamp_format
    report.notes.append(f"models[{i}]({m.name}).source.timestamp: {m.source.table}.{m.source.timestamp} holds {fmt}"
                        + (f" (e.g. {example})" if example is not None else "")
                        + (f"; declared {declared}" if declared != "auto" else ""))


def _id_like(conn, m, i: int, where: str, report: CheckReport) -> None:
    """Warn on categorical features whose values are (almost) all distinct: ids, not categories."""
    table = quote_table(conn, m.source.table)
    for col in m.source.features.categorical:
        c = quote(conn, col)
        q = (f"SELECT COUNT(x), COUNT(DISTINCT x) FROM (SELECT {c} AS x FROM {table} "
             f"WHERE {c} IS NOT NULL LIMIT {ID_SAMPLE_ROWS}) s")
        try:
            rows, distinct = conn.execute(sa.text(q)).one()
        except Exception as e:
            report.errors.append(f"{where}: models[{i}]({m.name}).source.features.categorical: {col}: {describe_error(e)}")
            conn.rollback()
            continue
        if rows >= ID_MIN_ROWS and distinct >= ID_LIKE_SHARE * rows:
            report.warnings.append(
                f"{where}: models[{i}]({m.name}).source.features.categorical: {col} looks like an id "
                f"({distinct:,} distinct values in {rows:,} rows): its drift is meaningless; drop it or bucket it")


def _check_models(conn, cfg: Config, where: str, report: CheckReport) -> None:
    engine = engines.of(conn)
    for i, m in enumerate(cfg.models):
        wanted = {m.source.table: [("source.id", m.source.id), ("source.timestamp", m.source.timestamp)]
                  + ([("source.score", m.source.score)] if m.source.score else [])
                  + ([("source.prediction", m.source.prediction)] if m.source.prediction else [])
                  + [(f"source.class_scores.{k}", c) for k, c in (m.source.class_scores or {}).items()]
                  + [("source.features.numeric", c) for c in m.source.features.numeric]
                  + [("source.features.categorical", c) for c in m.source.features.categorical]
                  + [("segments", c) for c in m.segments]}
        if m.labels:
            wanted.setdefault(m.labels.table, []).extend([("labels.id", m.labels.id), ("labels.label", m.labels.label)])
        source_ok = True
        for table, cols in wanted.items():
            have = engine.columns(conn, table)
            if have is None:
                report.errors.append(f"{where}: models[{i}]({m.name}): table {table} does not exist"
                                     + did_you_mean(table, engine.table_names(conn, table.rpartition(".")[0] or None)))
                source_ok = source_ok and table != m.source.table
                continue
            for key, col in cols:
                if col.lower() not in have:
                    report.errors.append(f"{where}: models[{i}]({m.name}).{key}: column {col} not in table {table}"
                                         + did_you_mean(col.lower(), have))
                    if table == m.source.table:
                        source_ok = False
        if source_ok:
            _check_timestamps(conn, m, i, where, report)
            _id_like(conn, m, i, where, report)
    if conn.in_transaction():
        conn.rollback()


def _check_results(cfg: Config, where: str) -> None:
    """The results store answers (it is the source database when results_url is empty)."""
    if not cfg.results_url:
        return
    try:
        with make_engine(cfg.results_url).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as e:
        raise DatabaseDown(f"{where}: results_url: cannot connect: {describe_error(e)}") from None


def check(cfg: Config, now: datetime | None = None) -> CheckReport:
    """Tables and columns, timestamp formats, id-like features, and every goal's SQL on its latest due window."""
    from .durations import utcnow

    now = now or utcnow()
    where = cfg.path or "config"
    report = CheckReport()
    engine = make_engine(cfg.database_url, cfg.statement_timeout, cfg.parquet)
    try:
        with engine.connect() as conn:
            _check_models(conn, cfg, where, report)
            for i, g in enumerate(cfg.goals):
                _check_goal(conn, g, i, where, now, report)
    except sa.exc.OperationalError as e:
        raise DatabaseDown(f"{where}: database_url: cannot connect: {describe_error(e)}") from None
    _check_results(cfg, where)
    return report
