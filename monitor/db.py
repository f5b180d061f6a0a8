"""Engines for the source and results databases, and the few dialect differences we allow."""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

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


def dispose_engines(url: str) -> None:
    """Close and forget this process's engines of `url` (before its SQLite file is replaced)."""
    for key in [k for k in _engines if k[0] == url]:
        _engines.pop(key).dispose()


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


def finite(engine_or_conn, expr: str) -> str:
    """SQL: a DOUBLE PRECISION expression with NaN and +-infinity read as NULL."""
    if engine_or_conn.dialect.name == "postgresql":
        return f"NULLIF(NULLIF(NULLIF({expr}, 'NaN'), 'Infinity'), '-Infinity')"
    return f"NULLIF(NULLIF({expr}, 9e999), -9e999)"  # SQLite stores NaN as NULL; 9e999 is infinity


def non_finite(engine_or_conn, expr: str) -> str:
    """SQL predicate: a DOUBLE PRECISION expression is NaN or +-infinity."""
    if engine_or_conn.dialect.name == "postgresql":
        return f"{expr} IN ('NaN', 'Infinity', '-Infinity')"
    return f"{expr} IN (9e999, -9e999)"


# --------------------------------------------------------------------------- source timestamps
#
# A source's timestamp column may hold native timestamps, ISO 8601 text or epoch numbers. Each
# function below is one dialect-specific SQL spelling of (column, format); `window_where` and
# `window_params` together select the rows of a window `[start, end)` exactly in UTC.

TIMESTAMP_FORMATS = ("auto", "timestamp", "iso", "epoch_s", "epoch_ms")
MAX_OFFSET = timedelta(hours=14)  # the widest UTC offset in use: the text band searched around a window
EPOCH_MS_FROM = 1e11  # epoch numbers at or above this are milliseconds (seconds reach it in the year 5138)
SAMPLE = 100  # values read (from the start and from the end of the table) to detect the format
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# ISO 8601 as PostgreSQL parses it (no braces: SQL built with str.format holds it): a date, an optional time ('T' or space), fractions, Z or an offset
_ISO_RE = (r"^\d\d\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
           r"([Tt ]([01]\d|2[0-3])(:[0-5]\d)(:[0-5]\d(\.\d+)?)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)?$")
_ISO = re.compile(_ISO_RE)
_ISO_SQLITE = re.compile(r"^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d+)?)?)?(Z|[+-]\d\d:\d\d)?$")


class TimestampError(ValueError):
    """A timestamp column the monitor cannot order: the message names the column and a value."""


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


def _sqlite_epoch(column: str) -> str:
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


def _pg_iso(column: str) -> str:
    return f"(CASE WHEN {column} ~ '{_ISO_RE}' THEN CAST({column} AS TIMESTAMPTZ) END)"


def window_where(conn, column: str, ts: Timestamps, p: str = "") -> str:
    """SQL predicate on the quoted `column`: the row is in the window bound by `window_params`
    (whose parameters' names start with `p`)."""
    sqlite = conn.dialect.name == "sqlite"
    if ts.format in ("epoch_s", "epoch_ms") or (ts.format == "timestamp" and not sqlite) or ts.text_sep:
        return f"{column} >= :{p}ws AND {column} < :{p}we"  # the column itself: an index on it is used
    if sqlite:  # a text band that an index narrows, then the exact comparison in UTC
        e = _sqlite_epoch(column)
        return f"{column} >= :{p}ws_text AND {column} < :{p}we_text AND {e} >= :{p}ws AND {e} < :{p}we"
    e = _pg_iso(column)
    return f"{e} >= :{p}ws AND {e} < :{p}we"


def window_params(conn, ts: Timestamps, start: datetime, end: datetime, p: str = "") -> dict:
    """The bound parameters of `window_where` for the window `[start, end)`."""
    return {p + k: v for k, v in _window_params(conn, ts, start, end).items()}


def _window_params(conn, ts: Timestamps, start: datetime, end: datetime) -> dict:
    sqlite = conn.dialect.name == "sqlite"
    if ts.format in ("epoch_s", "epoch_ms"):
        ws, we = window_epoch(start, end)
        k = 1000 if ts.format == "epoch_ms" else 1
        return {"ws": ws * k, "we": we * k}
    if ts.format == "timestamp" and not sqlite or ts.text_sep:
        like = "0000-00-00T" if ts.text_sep == "T" else None
        return {"ws": bind_time(conn, start, like), "we": bind_time(conn, end, like)}
    if sqlite:
        lo = (start - MAX_OFFSET).astimezone(timezone.utc)
        hi = (end + MAX_OFFSET).astimezone(timezone.utc)
        ws, we = window_epoch(start, end)
        # ' ' sorts before 'T': the band holds every spelling of the times between lo and hi
        return {"ws": ws, "we": we, "ws_text": lo.strftime("%Y-%m-%d %H:%M:%S"), "we_text": hi.strftime("%Y-%m-%dT%H:%M:%S")}
    return {"ws": start.astimezone(timezone.utc), "we": end.astimezone(timezone.utc)}


def epoch_of(conn, column: str, ts: Timestamps) -> str:
    """SQL expression: the column as epoch seconds (NULL when it cannot be read as a time)."""
    if ts.format == "epoch_s":
        return f"CAST({column} AS DOUBLE PRECISION)"
    if ts.format == "epoch_ms":
        return f"CAST({column} AS DOUBLE PRECISION) / 1000.0"
    if conn.dialect.name == "sqlite":
        return f"(CASE WHEN typeof({column}) = 'text' THEN {_sqlite_epoch(column)} END)"
    return f"EXTRACT(EPOCH FROM {column if ts.format == 'timestamp' else _pg_iso(column)})"


def newest_of(conn, column: str, ts: Timestamps) -> str:
    """SQL aggregate: epoch seconds of the newest value (of the rows a window selects)."""
    if ts.format == "timestamp" and conn.dialect.name == "postgresql":
        return f"EXTRACT(EPOCH FROM MAX({column}))"  # MAX first: an index answers it
    if ts.text_sep or ts.format in ("epoch_s", "epoch_ms"):
        return epoch_of(conn, f"MAX({column})", ts)
    return f"MAX({epoch_of(conn, column, ts)})"


def invalid_time(conn, column: str, ts: Timestamps) -> str:
    """SQL predicate: the row's timestamp is NULL or cannot be placed in any window."""
    if conn.dialect.name == "postgresql":
        if ts.format == "timestamp":
            return f"({column} IS NULL OR {column} IN ('infinity', '-infinity'))"
        if ts.format == "iso":
            return f"{_pg_iso(column)} IS NULL"
        return f"({column} IS NULL OR CAST({column} AS DOUBLE PRECISION) IN ('NaN', 'Infinity', '-Infinity'))"
    if ts.format in ("epoch_s", "epoch_ms"):
        return f"({column} IS NULL OR typeof({column}) NOT IN ('integer', 'real') OR ABS({column}) > 1e300)"
    return f"({column} IS NULL OR typeof({column}) != 'text' OR {_sqlite_epoch(column)} IS NULL)"


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


def _column_type(conn, table: str, column: str) -> str | None:
    """The column's type as the database names it (lower case), or None when there is no such column."""
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.text(
            "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a WHERE a.attrelid = to_regclass(:t) "
            "AND a.attname = :c AND a.attnum > 0 AND NOT a.attisdropped"), {"t": quote_table(conn, table), "c": column}).scalar()
    try:
        cols = sa.inspect(conn).get_columns(table.rpartition(".")[2], schema=table.rpartition(".")[0] or None)
    except sa.exc.NoSuchTableError:
        return None
    for c in cols:
        if c["name"] == column:
            return str(c["type"]).lower()
    return None


def _sample(conn, table: str, column: str) -> list:
    t, c = quote_table(conn, table), quote(conn, column)
    first = f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL LIMIT {SAMPLE}"
    values = [r[0] for r in conn.execute(sa.text(first))]
    if conn.dialect.name == "sqlite":  # and the newest rows: a spelling that changed lately is seen too
        try:
            values += [r[0] for r in conn.execute(sa.text(
                f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY rowid DESC LIMIT {SAMPLE}"))]
        except sa.exc.OperationalError:  # a table without rowid
            pass
    return values


def _detect(conn, table: str, column: str, declared: str) -> tuple[str, object, str | None]:
    where = f"source.timestamp column {column} of table {table}"
    kind = _column_type(conn, table, column)
    if kind is None:
        raise TimestampError(f"{where}: no such column")
    values = _sample(conn, table, column)
    example = values[0] if values else None
    sqlite = conn.dialect.name == "sqlite"
    numbers = [v for v in values if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)]
    texts = [v for v in values if isinstance(v, str)]
    if not sqlite:
        if kind.startswith(("timestamp", "date")):
            fmt = "timestamp"
        elif kind in ("smallint", "integer", "bigint", "numeric", "real", "double precision"):
            fmt = "epoch"
        elif kind.startswith(("text", "character")):
            fmt = "iso"
        else:
            raise TimestampError(f"{where}: type {kind} is not a timestamp, ISO 8601 text or an epoch number")
        if declared != "auto" and fmt != ("epoch" if declared.startswith("epoch") else declared):
            raise TimestampError(f"{where}: declared timestamp_format {declared} does not fit its type {kind}")
    else:
        if numbers and texts:
            odd = texts[0] if len(texts) <= len(numbers) else numbers[0]
            raise TimestampError(f"{where} mixes text and numbers, e.g. {odd!r}: store one kind")
        fmt = "epoch" if numbers else "iso"
        if declared in ("epoch_s", "epoch_ms") and texts or declared in ("timestamp", "iso") and numbers:
            raise TimestampError(f"{where}: declared timestamp_format {declared} does not fit its values, e.g. {example!r}")
    if fmt == "epoch":
        finite = [float(v) for v in numbers if math.isfinite(float(v))]
        big = [v for v in finite if abs(v) >= EPOCH_MS_FROM]
        if big and len(big) < len(finite):
            small = next(v for v in numbers if abs(float(v)) < EPOCH_MS_FROM)
            raise TimestampError(f"{where} mixes epoch seconds and milliseconds, e.g. {small!r} and {big[0]!r}")
        fmt = declared if declared in ("epoch_s", "epoch_ms") else ("epoch_ms" if big else "epoch_s")
        return fmt, example, None
    if fmt == "timestamp" and not sqlite:
        return "timestamp", example, None
    # text: ISO 8601 in some spelling
    pattern = _ISO_SQLITE if sqlite else _ISO
    bad = [v for v in texts if not pattern.match(v.strip() if not sqlite else v)]
    if texts and len(bad) == len(texts):
        raise TimestampError(f"{where} holds text that is not ISO 8601, e.g. {bad[0]!r}")
    if not sqlite:
        return "iso", example, None
    fmt = "timestamp" if declared == "timestamp" else "iso"
    good = [v for v in texts if v not in bad]
    seps = {v[10] for v in good if len(v) > 10}
    utc = all(len(v) <= 19 or _naive_or_utc(v) for v in good)
    plain = declared in ("auto", "timestamp") and len(seps) <= 1 and utc
    return fmt, example, ((seps.pop() if seps else " ") if plain else None)


def _naive_or_utc(v: str) -> bool:
    tail = v[19:]
    return not re.search(r"[+-]\d\d:\d\d$", tail) or tail.endswith(("+00:00", "-00:00"))
