"""`monitor check`: the config against the real database, storing nothing."""
from __future__ import annotations

import sqlalchemy as sa

from .config import Config
from .db import describe_error, make_engine


def _columns(insp, table: str) -> set[str] | None:
    schema, _, name = table.rpartition(".")
    try:
        return {c["name"].lower() for c in insp.get_columns(name, schema=schema or None)}
    except sa.exc.NoSuchTableError:
        return None


class DatabaseDown(Exception):
    """The database cannot be reached: not a config problem."""


def check(cfg: Config) -> list[str]:
    """Problems found: missing tables or columns, goal SQL that fails or lacks `value`."""
    from .goals import GoalDataError, run_sql, shape
    from .windows import Window

    where = cfg.path or "config"
    engine = make_engine(cfg.database_url, cfg.statement_timeout)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            problems = []
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
                for table, cols in wanted.items():
                    have = _columns(insp, table)
                    if have is None:
                        problems.append(f"{where}: models[{i}]({m.name}): table {table} does not exist")
                        continue
                    for key, col in cols:
                        if col.lower() not in have:
                            problems.append(f"{where}: models[{i}]({m.name}).{key}: column {col} not in table {table}")
            for i, g in enumerate(cfg.goals):
                empty = Window(g.start, g.start)
                try:
                    columns, rows = run_sql(conn, g, empty)
                    shape(g, columns, rows)
                except GoalDataError as e:
                    problems.append(f"{where}: goals[{i}]({g.name}): {e}")
                except Exception as e:
                    problems.append(f"{where}: goals[{i}]({g.name}): {g.sql} fails: {describe_error(e)}")
                    conn.rollback()
            return problems
    except sa.exc.OperationalError as e:
        raise DatabaseDown(f"{where}: database_url: cannot connect: {describe_error(e)}") from None
