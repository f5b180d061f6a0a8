"""Engines for the source and results databases; what differs between them is in `monitor.engines`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal


from . import engines
from .engines.base import NUMBER_TYPES, TimestampError  # noqa: F401 (names of this module)


def make_engine(url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
    """An engine whose sessions run in UTC and cut any statement after `statement_timeout`
    (a SQLAlchemy engine, or Spark's connection factory: see `monitor.engines`)."""
    return engines.make_engine(url, statement_timeout, parquet)


def dispose_engines(url: str) -> None:
    """Close and forget this process's engines of `url` (before its SQLite file is replaced)."""
    engines.dispose(url)


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


def finite(engine_or_conn, expr: str) -> str:
    """SQL: a floating-point expression with NaN and +-infinity read as NULL."""
    return engines.of(engine_or_conn).finite(expr)


def non_finite(engine_or_conn, expr: str) -> str:
    """SQL predicate: a floating-point expression is NaN or +-infinity."""
    return engines.of(engine_or_conn).non_finite(expr)


# --------------------------------------------------------------------------- source timestamps
#
# A source's timestamp column may hold native timestamps, ISO 8601 text or epoch numbers. Epoch
# numbers are compared alike on every engine; the rest is spelled by the engine (`time_where`,
# `time_params`, ... of `monitor.engines`). `window_where` and `window_params` together select the
# rows of a window `[start, end)` exactly in UTC.

TIMESTAMP_FORMATS = ("auto", "timestamp", "iso", "epoch_s", "epoch_ms")
EPOCH_MS_FROM = 1e11  # epoch numbers at or above this are milliseconds (seconds reach it in the year 5138)
SAMPLE = 100  # values read (from the start and from the end of the table) to detect the format
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCHS = ("epoch_s", "epoch_ms")


@dataclass(frozen=True)
class Timestamps:
    """How a source's timestamp column is read.

    `format`: timestamp, iso, epoch_s or epoch_ms. `text_sep` (SQLite only): the one separator
    (' ' or 'T') of text that is plain UTC (no other offset) in every sampled value; such text is
    compared as text, which keeps its index usable. Otherwise SQLite text is compared on its
    epoch seconds.
    """

    format: str
    text_sep: str | None = None


def window_epoch(start: datetime, end: datetime) -> tuple[int, int]:
    """A window's bounds as integer epoch seconds."""
    return (int((start - _EPOCH).total_seconds()), int((end - _EPOCH).total_seconds()))


def window_where(conn, column: str, ts: Timestamps, p: str = "") -> str:
    """SQL predicate on the quoted `column`: the row is in the window bound by `window_params`
    (whose parameters' names start with `p`)."""
    if ts.format in EPOCHS:
        return f"{column} >= :{p}ws AND {column} < :{p}we"  # the column itself: an index on it is used
    return engines.of(conn).time_where(column, ts, p)


def window_params(conn, ts: Timestamps, start: datetime, end: datetime, p: str = "") -> dict:
    """The bound parameters of `window_where` for the window `[start, end)`."""
    if ts.format in EPOCHS:
        ws, we = window_epoch(start, end)
        k = 1000 if ts.format == "epoch_ms" else 1
        got = {"ws": ws * k, "we": we * k}
    else:
        got = engines.of(conn).time_params(ts, start, end)
    return {p + k: v for k, v in got.items()}


def epoch_of(conn, column: str, ts: Timestamps) -> str:
    """SQL expression: the column as epoch seconds (NULL when it cannot be read as a time)."""
    double = engines.of(conn).double
    if ts.format == "epoch_s":
        return f"CAST({column} AS {double})"
    if ts.format == "epoch_ms":
        return f"CAST({column} AS {double}) / 1000.0"
    return engines.of(conn).time_epoch(column, ts)


def newest_of(conn, column: str, ts: Timestamps) -> str:
    """SQL aggregate: epoch seconds of the newest value (of the rows a window selects)."""
    if ts.text_sep or ts.format in EPOCHS:
        return epoch_of(conn, f"MAX({column})", ts)  # MAX first: an index answers it
    return engines.of(conn).newest_time(column, ts)


def invalid_time(conn, column: str, ts: Timestamps) -> str:
    """SQL predicate: the row's timestamp is NULL or cannot be placed in any window."""
    return engines.of(conn).invalid_time(column, ts)


_formats: dict[tuple, Timestamps] = {}


def clear_timestamp_cache() -> None:
    _formats.clear()


def timestamps(conn, table: str, column: str, declared: str = "auto") -> Timestamps:
    """How to read `table.column` (detected once per process, or as declared): see `Timestamps`."""
    key = (str(conn.engine.url), table, column, declared)
    got = _formats.get(key)
    if got is None:
        fmt, _example, sep = _detect(conn, table, column, declared)
        got = _formats[key] = Timestamps(fmt, sep)
    return got


def detect_timestamp_format(conn, table: str, column: str) -> tuple[str, object]:
    """(format, an example value) of a timestamp column, from its type and a small sample.

    Raises TimestampError, naming the column and a value, when the column is missing, of a type
    that is not a time, or mixes kinds the monitor cannot order (text and numbers, epoch
    seconds and milliseconds, text that is not ISO 8601).
    """
    fmt, example, _sep = _detect(conn, table, column, "auto")
    return fmt, example


def _detect(conn, table: str, column: str, declared: str) -> tuple[str, object, str | None]:
    where = f"source.timestamp column {column} of table {table}"
    e = engines.of(conn)
    kind = e.column_type(conn, table, column)
    if kind is None:
        raise TimestampError(f"{where}: no such column")
    values = e.sample_times(conn, table, column, SAMPLE)
    example = values[0] if values else None
    numbers = [v for v in values if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)]
    texts = [v for v in values if isinstance(v, str)]
    fmt = e.time_kind(where, kind, numbers, texts, declared, example)
    if fmt == "epoch":
        finite = [float(v) for v in numbers if math.isfinite(float(v))]
        big = [v for v in finite if abs(v) >= EPOCH_MS_FROM]
        if big and len(big) < len(finite):
            small = next(v for v in numbers if abs(float(v)) < EPOCH_MS_FROM)
            raise TimestampError(f"{where} mixes epoch seconds and milliseconds, e.g. {small!r} and {big[0]!r}")
        fmt = declared if declared in EPOCHS else ("epoch_ms" if big else "epoch_s")
        return fmt, example, None
    if fmt == "timestamp":
        return "timestamp", example, None
    fmt, sep = e.text_times(where, texts, declared)  # ISO 8601 text in some spelling
    return fmt, example, sep
