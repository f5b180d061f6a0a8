"""The engines the monitor reads sources from: one module each, found by URL scheme or dialect name.

`of(conn)` gives the engine of a connection (or of an engine made by `make_engine`); `for_url(url)`
the engine of a URL. An engine this package has no module for gets the portable defaults of
`base.Engine` through SQLAlchemy: plain ANSI SQL, exact sums, no hashed sample.
"""
from __future__ import annotations

from datetime import timedelta

from .base import Engine
from .duckdb import ENGINE as DUCKDB
from .postgresql import ENGINE as POSTGRESQL
from .spark import ENGINE as SPARK
from .sqlite import ENGINE as SQLITE

ENGINES: tuple[Engine, ...] = (POSTGRESQL, SQLITE, DUCKDB, SPARK)
GENERIC = Engine()
_by_name = {e.name: e for e in ENGINES}


def scheme(url: str) -> str:
    """`postgresql` of `postgresql+psycopg2://...`, `sc` of `sc://...`."""
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def for_url(url: str) -> Engine:
    s = scheme(url)
    return next((e for e in ENGINES if s in e.schemes), GENERIC)


def of(conn) -> Engine:
    """The engine of a connection or engine (anything with `.dialect.name`)."""
    return _by_name.get(conn.dialect.name, GENERIC)


_made: dict[tuple, object] = {}


def make_engine(url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
    """One connection factory per (url, timeout, parquet tables), made by the URL's engine."""
    key = (url, statement_timeout, tuple(sorted((parquet or {}).items())))
    if key not in _made:
        _made[key] = for_url(url).make_engine(url, statement_timeout, parquet or None)
    return _made[key]


def dispose(url: str) -> None:
    """Close and forget this process's connection factories of `url`."""
    for key in [k for k in _made if k[0] == url]:
        made = _made.pop(key)
        if hasattr(made, "dispose"):
            made.dispose()


__all__ = ["ENGINES", "Engine", "for_url", "make_engine", "of", "scheme"]
