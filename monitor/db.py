"""Engines for the source and results databases; what differs between them is in `monitor.engines`."""
from __future__ import annotations

from datetime import datetime, timedelta

from . import engines


def make_engine(url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
    """An engine whose sessions run in UTC and cut any statement after `statement_timeout`
    (a SQLAlchemy engine, or Spark's connection factory: see `monitor.engines`)."""
    return engines.make_engine(url, statement_timeout, parquet)


def bind_time(engine_or_conn, ts: datetime, like=None):
    """A UTC timestamp as a bound parameter the engine compares correctly with stored timestamps.

    `like`: one stored value of the column it is compared with, when known (SQLite).
    """
    return engines.of(engine_or_conn).bind_time(ts, like)


def quote_table(engine_or_conn, name: str) -> str:
    """Quote a config-validated `table` or `schema.table` name."""
    return engines.of(engine_or_conn).quote_table(engine_or_conn, name)


def quote(engine_or_conn, name: str) -> str:
    """Quote a config-validated column name."""
    return engines.of(engine_or_conn).quote(engine_or_conn, name)


def describe_error(exc: BaseException) -> str:
    """One readable line for a database error, without the SQLAlchemy boilerplate."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    if "interrupted" in msg or "canceling statement due to statement timeout" in msg:
        msg = f"statement timeout: {msg}"
    return msg
