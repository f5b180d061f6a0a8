"""Engines for the source and results databases, and the few dialect differences we allow."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

_engines: dict[tuple, Engine] = {}


def make_engine(url: str, statement_timeout: timedelta | None = None) -> Engine:
    """An engine whose sessions run in UTC and cut any statement after `statement_timeout`."""
    key = (url, statement_timeout)
    if key in _engines:
        return _engines[key]
    ms = int(statement_timeout.total_seconds() * 1000) if statement_timeout else 0
    if url.startswith("postgresql"):
        options = "-c timezone=UTC" + (f" -c statement_timeout={ms}" if ms else "")
        engine = sa.create_engine(url, connect_args={"options": options, "connect_timeout": 5}, pool_pre_ping=True)
    elif url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_on_connect(ms))
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    _engines[key] = engine
    return engine


def _sqlite_on_connect(timeout_ms: int):
    def on_connect(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        if timeout_ms:
            # SQLite has no statement timeout: a progress handler aborts statements that run too long.
            state = {"t0": None}

            def handler():
                if state["t0"] is None:
                    state["t0"] = time.monotonic()
                return 1 if (time.monotonic() - state["t0"]) * 1000 > timeout_ms else 0

            def reset(*_a):
                state["t0"] = None

            dbapi_conn.set_progress_handler(handler, 100000)
            dbapi_conn.set_trace_callback(reset)
    return on_connect


def bind_time(engine_or_conn, ts: datetime, like=None):
    """A UTC timestamp as a bound parameter the dialect compares correctly with stored timestamps.

    `like`: one stored value of the column it is compared with, when known (SQLite).
    """
    naive = ts.astimezone(timezone.utc).replace(tzinfo=None)
    if engine_or_conn.dialect.name == "sqlite":
        # SQLite stores dates and timestamps as text and compares them as text. At midnight the bare
        # date sorts right against every spelling of that day ('YYYY-MM-DD', '... HH:MM:SS[.ffffff]',
        # '...THH:MM:SS[.ffffff][+00:00|Z]'); other times need the column's own separator.
        if naive.time() == naive.min.time():
            return naive.strftime("%Y-%m-%d")
        sep = "T" if isinstance(like, str) and len(like) > 10 and like[10] == "T" else " "
        return naive.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    return naive


def quote_table(engine_or_conn, name: str) -> str:
    """Quote a config-validated `table` or `schema.table` name."""
    prep = engine_or_conn.dialect.identifier_preparer
    return ".".join(prep.quote(p) for p in name.split("."))


def quote(engine_or_conn, name: str) -> str:
    """Quote a config-validated column name."""
    return engine_or_conn.dialect.identifier_preparer.quote(name)


def describe_error(exc: BaseException) -> str:
    """One readable line for a database error, without the SQLAlchemy boilerplate."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    if "interrupted" in msg or "canceling statement due to statement timeout" in msg:
        msg = f"statement timeout: {msg}"
    return msg
