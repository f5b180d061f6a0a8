"""Apache Spark through Spark Connect (`sc://HOST:PORT`): Spark SQL, run inside the cluster.

Spark is no SQLAlchemy dialect: `SparkSource.connect()` gives a connection with the few methods
the jobs use (`execute(sql, params)` returning rows and column names, `rollback`, `close`). The
queries are the same SQL as on the other engines, with the same `:name` bind parameters, which
Spark binds itself (``spark.sql(query, args=...)``). Every aggregate runs in Spark: the monitor
receives one row per query. Tables are named as in the Spark catalog (`db.table`), or come from
Parquet files (`parquet:`, as temporary views of the session). Needs the `spark` extra.
"""
from __future__ import annotations

import atexit
import logging
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import sqlalchemy as sa

from .base import Engine, no_savepoint, sa_type

log = logging.getLogger(__name__)


class SparkError(sa.exc.DBAPIError):
    """A Spark error, shaped like SQLAlchemy's so that the jobs report it as a database error."""


class _Result:
    def __init__(self, columns: list[str], rows: list[tuple]):
        self._columns, self._rows = columns, rows

    def keys(self) -> list[str]:
        return list(self._columns)

    def all(self) -> list[tuple]:
        return list(self._rows)

    fetchall = all

    def one(self) -> tuple:
        if len(self._rows) != 1:
            raise sa.exc.NoResultFound if not self._rows else sa.exc.MultipleResultsFound
        return self._rows[0]

    def scalar(self):
        return self._rows[0][0] if self._rows else None

    def __iter__(self):
        return iter(self._rows)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _Preparer:
    quote = staticmethod(_quote)


DIALECT = SimpleNamespace(name="spark", identifier_preparer=_Preparer())


class SparkConnection:
    """One Spark Connect session's queries, each cut after the statement timeout."""

    dialect = DIALECT

    def __init__(self, source: "SparkSource"):
        self.source = self.engine = source
        self.session = source.session()

    def execute(self, statement, params: dict | None = None) -> _Result:
        sql = str(getattr(statement, "text", statement))
        timer = None
        if self.source.timeout_s:
            timer = threading.Timer(self.source.timeout_s, self.session.interruptAll)
            timer.daemon = True
            timer.start()
        try:
            df = self.session.sql(sql, args=dict(params or {}))
            rows = [tuple(r) for r in df.collect()]
            return _Result(list(df.columns), rows)
        except Exception as e:
            if timer is not None and not timer.is_alive():
                raise SparkError(sql, params, RuntimeError(f"statement timeout: cut after {self.source.timeout_s:g} s")) from None
            raise SparkError(sql, params, _one_line(e)) from None
        finally:
            if timer is not None:
                timer.cancel()

    def begin_nested(self):
        return no_savepoint(self)

    def in_transaction(self) -> bool:
        return False

    def rollback(self) -> None:
        """Reads only: nothing to undo."""

    commit = rollback

    def close(self) -> None:
        """The session stays open for the next connection."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _one_line(e: Exception) -> Exception:
    """Spark's errors carry the server's stack trace: keep the message."""
    text = str(e).strip().split("\n\nJVM stacktrace:")[0].strip()
    return RuntimeError(text or type(e).__name__)


def _reachable(url: str, timeout: float = 10) -> None:
    """Fail fast on a server that is not there (the client would retry for minutes)."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    socket.create_connection((u.hostname or "localhost", u.port or 15002), timeout=timeout).close()


# The window's passes are single rows of a few hundred aggregates. Past `maxFields` (100) output
# columns Spark gives up whole-stage code generation and runs them row by row through its
# interpreter: at 1 M rows the 231 sums of products took 24 s that way and 8.5 s compiled.
FAST = {"spark.sql.codegen.maxFields": "10000"}


NANOS = "spark.sql.legacy.parquet.nanosAsLong"


def _parquet_view(s, name: str, path: str) -> None:
    """The session's temporary view `name` of the Parquet files at `path`.

    Spark reads no nanosecond timestamps, which pandas writes by default: where the monitor sees
    the files (a local path), such columns are read as integers and turned back into timestamps
    of their microseconds; elsewhere the error says how to write them.
    """
    nanos = _nanosecond_columns(path)
    if nanos:
        s.conf.set(NANOS, "true")
    df = s.read.parquet(path)
    if nanos:
        from pyspark.sql.connect import functions as F

        # floor, in integers: a double would round nanoseconds since 1970 to 256 of them
        df = df.withColumns({c: F.expr(f"timestamp_micros(({_quote(c)} - pmod({_quote(c)}, 1000)) DIV 1000)")
                             .cast("timestamp" if aware else "timestamp_ntz") for c, aware in nanos.items()})
    try:
        df.createOrReplaceTempView(name)
    except Exception as e:
        if "TIMESTAMP(NANOS" not in str(e):
            raise
        raise RuntimeError(f"parquet: {name} ({path}): Spark reads no nanosecond timestamps; write them in "
                           "microseconds (pandas: to_parquet(..., coerce_timestamps='us'), pyarrow: "
                           "pq.write_table(..., coerce_timestamps='us'))") from None


def _nanosecond_columns(path: str) -> dict[str, bool]:
    """{column: whether it is in UTC} of the nanosecond timestamps in the first Parquet file at a
    local `path` (a file, a glob or a folder); {} when there are none or the files are elsewhere."""
    import glob
    from pathlib import Path
    from urllib.parse import urlparse

    scheme = urlparse(path).scheme
    if scheme not in ("", "file"):
        return {}
    local = path.removeprefix("file://")
    if Path(local).is_dir():
        files = sorted(str(f) for f in Path(local).rglob("*.parquet")  # as Spark, skip hidden files
                       if not any(p.startswith((".", "_")) for p in f.relative_to(local).parts))
    else:
        files = sorted(glob.glob(local))
    if not files:
        return {}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(files[0])
    except Exception:  # Spark's own read reports what is wrong with the file
        return {}
    return {f.name: f.type.tz is not None for f in schema
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}


class SparkSource:
    """The Spark Connect server of a `sc://` URL; `connect()` like a SQLAlchemy engine."""

    dialect = DIALECT

    def __init__(self, url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
        self.url = url
        self.timeout_s = statement_timeout.total_seconds() if statement_timeout else 0.0
        self.parquet = dict(parquet or {})
        self._session = None
        self._lock = threading.Lock()

    def session(self):
        with self._lock:
            if self._session is not None:
                try:
                    _reachable(self.url, timeout=2)  # asking the session itself would retry for minutes
                    self._session.conf.get("spark.sql.session.timeZone")
                except Exception:  # the server went away: a new session
                    self._close()
            if self._session is None:
                self._session = self._open()
            return self._session

    def _open(self):
        try:
            from pyspark.logger import PySparkLogger
            from pyspark.sql import SparkSession
        except ImportError:
            raise ValueError("database_url: sc:// needs the Spark Connect client: pip install 'monitor[spark]'") from None
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            # each failed query is logged with its JVM stack trace; the error itself is reported once
            PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)
        try:
            _reachable(self.url)
            s = SparkSession.builder.remote(self.url).create()
            # before the client's own exit handler (they run last first), which calls the server
            atexit.register(self.dispose)
            s.conf.set("spark.sql.session.timeZone", "UTC")
            for key, value in FAST.items():
                try:
                    s.conf.set(key, value)
                except Exception as e:  # a managed cluster that pins it: slower, still right
                    log.warning("spark: cannot set %s=%s (%s); queries run slower", key, value, _one_line(e))
            for name, path in self.parquet.items():
                _parquet_view(s, name, path)
        except Exception as e:
            raise sa.exc.OperationalError(f"connect {self.url}", {}, _one_line(e)) from None
        return s

    def connect(self) -> SparkConnection:
        return SparkConnection(self)

    def dispose(self) -> None:
        """Stop the session (at exit too); only close its channel when the server is gone, since
        the client's own calls to a server that is not there retry for about ten minutes."""
        with self._lock:
            if self._session is not None:
                try:
                    _reachable(self.url, timeout=2)
                    self._session.stop()
                    self._session = None
                except Exception:
                    self._close()

    def _close(self) -> None:
        try:
            self._session.client.close()
        except Exception:  # closing is all that is left to do
            pass
        self._session = None


class Spark(Engine):
    can_store = False  # results go to results_url (PostgreSQL or SQLite)
    name = "spark"
    schemes = ("sc",)
    double = "DOUBLE"
    split_order = True

    def make_engine(self, url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
        return SparkSource(url, statement_timeout, parquet)

    def nested(self, conn):
        return no_savepoint(conn)

    def quote(self, conn, name: str) -> str:
        return _quote(name)

    def bind_time(self, ts: datetime, like=None):
        # aware: Spark Connect sends it as an instant, compared in the session's UTC
        return ts.astimezone(timezone.utc)

    def iso_time(self, column: str) -> str:
        return f"try_cast({column} AS TIMESTAMP)"

    def epoch_seconds(self, expr: str) -> str:
        return f"(unix_micros(CAST({expr} AS TIMESTAMP)) / 1000000.0)"

    def non_finite(self, column: str) -> str:
        x = f"CAST({column} AS DOUBLE)"
        return f"(isnan({x}) OR abs({x}) = double('Infinity'))"

    def finite(self, expr: str) -> str:
        return f"(CASE WHEN isnan({expr}) OR abs({expr}) = double('Infinity') THEN NULL ELSE {expr} END)"

    def column_types(self, conn, table: str) -> dict | None:
        try:
            fields = conn.session.table(table).schema.fields
        except Exception:
            return None
        return {f.name: sa_type(f.dataType.simpleString()) for f in fields}

    def column_type(self, conn, table: str, column: str) -> str | None:
        try:
            fields = conn.session.table(table).schema.fields
        except Exception:
            return None
        return next((f.dataType.simpleString().lower() for f in fields if f.name == column), None)

    def sample_bucket(self, expr: str, buckets: int) -> str:
        return f"pmod(xxhash64(CAST({expr} AS STRING)), {buckets})"

    def quantiles(self, columns: list[tuple[str, int]], levels: list[float]) -> None:
        # percentile_disc(array(...)) of every column in one statement failed at 1 M reference rows
        # on 1 GiB executors: the portable ROW_NUMBER query per column (a sort each) instead
        return None

    def random(self) -> str:
        return "rand()"

    def columns(self, conn, table: str) -> set[str] | None:
        try:
            return {c.lower() for c in conn.session.table(table).columns}
        except Exception:
            return None

    def table_names(self, conn, schema: str | None = None) -> list[str]:
        try:
            return [t.name for t in conn.session.catalog.listTables(schema)]
        except Exception:
            return []

    def integer_columns(self, conn, columns: list[tuple[str, str]]) -> bool:
        try:
            types = [dict((f.name, f.dataType.typeName()) for f in conn.session.table(t).schema.fields).get(c)
                     for t, c in columns]
        except Exception:
            return False
        return all(t in ("byte", "short", "integer", "long") for t in types)


ENGINE = Spark()
