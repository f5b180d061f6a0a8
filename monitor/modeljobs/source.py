"""How a model's source rows are read: window bounds, numeric casts, column types, connections."""
from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from .. import engines
from ..config import Model
from ..db import Timestamps, finite, quote, timestamps, window_params, window_where
from ..windows import Window


def _ts(conn, model: Model) -> Timestamps:
    """How the source's timestamp column is read (detected once per process): see `monitor.db`."""
    s = model.source
    return timestamps(conn, s.table, s.timestamp, s.timestamp_format)


def model_where(conn, model: Model, prefix: str = "", p: str = "") -> str:
    """The rows of the window bound by `model_bounds` (exact in UTC whatever the column holds); `p`
    prefixes the parameters' names, for a second window in one statement."""
    return window_where(conn, prefix + quote(conn, model.source.timestamp), _ts(conn, model), p)


def model_bounds(conn, model: Model, w: Window, p: str = "") -> dict:
    return window_params(conn, _ts(conn, model), w.start, w.end, p)


def _num(conn, column: str, clean: bool = True) -> str:
    """A quoted numeric column as DOUBLE PRECISION, NaN and +-infinity read as NULL.

    `clean=False`: the plain cast. The queries that read every row of a window run that way first,
    with a count of the non-finite values they met, and again clean only when that count is not
    zero: the clean expression is repeated wherever the column is used (the database inlines it)
    and costs a window's pass half as much again.
    """
    cast = f"CAST({column} AS {engines.of(conn).double})"
    return finite(conn, cast) if clean else cast


def _jsonable(v):
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, Decimal):
        return int(v) if v == int(v) else float(v)
    return str(v)


_table_columns: dict[tuple, dict] = {}


def _columns(conn, table: str) -> dict | None:
    """The table's columns and their SQLAlchemy types (read once per process), or None when no such table."""
    key = (str(conn.engine.url), table)
    if key not in _table_columns:
        cols = engines.of(conn).column_types(conn, table)
        if cols is None:
            return None
        _table_columns[key] = cols
    return _table_columns[key]


def _is_boolean(conn, table: str, column: str) -> bool:
    return isinstance((_columns(conn, table) or {}).get(column), sa.Boolean)


def connect(engine):
    """A connection whose queries all see one snapshot, where the engine has them."""
    return engines.of(engine).connect(engine)


def _setup(conn) -> None:
    engines.of(conn).setup(conn)


def _export_snapshot(conn) -> str | None:
    """The transaction's snapshot, for a second connection to see exactly the same rows; None
    where the engine has none (then one connection does everything, in turn)."""
    return engines.of(conn).export_snapshot(conn)


def _on_snapshot(engine, snapshot: str, job):
    """Run `job(conn)` on a connection of its own that sees the exporting transaction's snapshot."""
    return engines.of(engine).on_snapshot(engine, snapshot, job)
