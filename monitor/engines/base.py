"""What a model window and a goal send to a database, and how each engine spells it.

An engine is one module of this package with one subclass of `Engine`: how it quotes names, binds
a UTC timestamp, picks the hashed sample of the Wasserstein sums, takes quantiles in few statements
(or not), gives two connections one snapshot (or not), and opens connections. Everything else the
jobs send is plain SQL that every engine here runs as it is (aggregates, CASE, FILTER, window
functions, LIMIT/OFFSET) with named bind parameters (`:name`).
"""
from __future__ import annotations

import math
import re
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone

# ISO 8601 as PostgreSQL parses it (no braces: SQL built with str.format holds it): a date, an optional time ('T' or space), fractions, Z or an offset
ISO_RE = (r"^\d\d\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
           r"([Tt ]([01]\d|2[0-3])(:[0-5]\d)(:[0-5]\d(\.\d+)?)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)?$")


ISO = re.compile(ISO_RE)
NUMBER_TYPES = {"smallint", "integer", "bigint", "numeric", "real", "double precision", "double", "float", "decimal",
                "tinyint", "hugeint", "int", "long", "short", "byte", "ubigint", "uinteger", "usmallint", "utinyint"}


class TimestampError(ValueError):
    """A timestamp column the monitor cannot order: the message names the column and a value."""


def disc_rank(q: float, n: int) -> int:
    """1-based position of the q-quantile of n values as percentile_disc takes it: the first
    whose position / n >= q (PostgreSQL's ceil(q * n), in the same floating point)."""
    return min(n, max(1, math.ceil(q * n)))


class Engine:
    """The portable defaults (ANSI SQL through SQLAlchemy); subclasses override what differs."""

    name = "sql"
    #: SQLAlchemy URL schemes (the part before `://`, or before `+driver`) this engine serves
    schemes: tuple[str, ...] = ()
    #: whether the monitor's own tables (`results_url`) may live here
    can_store = True
    #: the floating-point type of CAST(x AS ...)
    double = "DOUBLE PRECISION"
    #: whether a second connection can see exactly the first one's rows (`export_snapshot`)
    snapshots = False
    #: what ends a subquery whose columns must be computed once per row, where the engine would
    #: inline them into each use ("": it does not): the multivariate sums of products over a
    #: window's sample take the centred values of such a subquery in the distances' query
    fence = ""
    #: the most column values one `quantiles` statement may hold (None: no bound, the engine's
    #: sort spills to disk); above it the reference's columns are cut in several statements
    quantile_values: int | None = None
    #: whether a window function ordered over every row runs in one task: the quality query then
    #: orders the rows within buckets of score (the reference's quantiles), in parallel, and adds
    #: the counts of the buckets above
    split_order = False

    def sort_rows(self, conn) -> int | None:
        """The most labelled rows one statement may join and sort (None: any): above it the quality
        and calibration queries run in slices of score, a statement each (the engine's memory is capped)."""
        return None

    # ------------------------------------------------------------------ connections

    def make_engine(self, url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
        """A connection factory: a SQLAlchemy engine, or an object with the same `connect()`."""
        import sqlalchemy as sa

        if parquet:
            raise ValueError(f"parquet: tables read from Parquet files need a DuckDB or Spark database_url, not {url.split(':')[0]}")
        return sa.create_engine(url, pool_pre_ping=True)

    def connect(self, engine):
        """A connection whose queries all see one snapshot where the engine has them."""
        return engine.connect()

    def setup(self, conn) -> None:
        """Per-transaction settings, run before a window's queries."""

    def export_snapshot(self, conn) -> str | None:
        """An id of the transaction's snapshot for `on_snapshot`, or None: one connection does it all."""
        return None

    def on_snapshot(self, engine, snapshot: str, job):
        raise NotImplementedError(f"{self.name} has no shared snapshots")

    def nested(self, conn):
        """A savepoint around a statement that may fail without aborting the transaction."""
        return conn.begin_nested()

    # ------------------------------------------------------------------ spelling

    def quote(self, conn, name: str) -> str:
        """A config-validated column name, quoted."""
        return conn.dialect.identifier_preparer.quote(name)

    def quote_table(self, conn, name: str) -> str:
        """A config-validated `table` or `schema.table` name, quoted."""
        return ".".join(self.quote(conn, p) for p in name.split("."))

    def bind_time(self, ts: datetime, like=None):
        """A UTC timestamp as a bound parameter compared correctly with the stored timestamps.

        `like`: one stored value of the column it is compared with, where the engine needs it.
        """
        return ts.astimezone(timezone.utc).replace(tzinfo=None)

    def desc_nulls_last(self, expr: str) -> str:
        return f"{expr} DESC NULLS LAST"

    def sample_bucket(self, expr: str, buckets: int) -> str | None:
        """SQL for an integer in [0, buckets) from a hash of `expr`, the same on every run; None: the
        engine takes the Wasserstein sums over every row, in the numeric pass."""
        return None

    def quantiles(self, columns: list[tuple[str, int]], levels: list[float]) -> list[str] | None:
        """One aggregate per (numeric SQL expression, its number of non-NULL values) giving its
        `percentile_disc` values at `levels` (the values at positions `disc_rank`) as an array, for
        one statement (as many columns as `quantile_values` allows); None: the portable ROW_NUMBER
        query per column."""
        return None

    def random(self) -> str:
        return "RANDOM()"

    # timestamps of every kind (see monitor.db): ISO 8601 text, epoch numbers, native timestamps

    def iso_time(self, column: str) -> str:
        """ISO 8601 text (any offset) as a timestamp; NULL when it is not such text."""
        return f"CAST({column} AS TIMESTAMP WITH TIME ZONE)"

    def epoch_seconds(self, expr: str) -> str:
        """A timestamp as epoch seconds."""
        return f"EXTRACT(EPOCH FROM {expr})"

    def infinite_time(self, column: str) -> str:
        """Predicate: the timestamp is +-infinity (it falls in no window)."""
        return "FALSE"

    def non_finite(self, column: str) -> str:
        """Predicate: the number is NaN or infinite."""
        return f"CAST({column} AS {self.double}) <> CAST({column} AS {self.double})"

    def finite(self, expr: str) -> str:
        """A floating-point expression with NaN and +-infinity read as NULL."""
        return f"(CASE WHEN {expr} = {expr} THEN {expr} END)"

    # a source's timestamp column, read as `ts` says (a `monitor.db.Timestamps`); the epoch formats
    # are the same on every engine and stay in monitor.db

    def time_where(self, column: str, ts, p: str = "") -> str:
        """Predicate: a native or ISO 8601 timestamp in the window bound by `time_params`."""
        if ts.format == "timestamp" or ts.text_sep:
            return f"{column} >= :{p}ws AND {column} < :{p}we"  # the column itself: an index on it is used
        e = self.iso_time(column)
        return f"{e} >= :{p}ws AND {e} < :{p}we"

    def time_params(self, ts, start: datetime, end: datetime) -> dict:
        if ts.format == "timestamp" or ts.text_sep:
            like = "0000-00-00T" if ts.text_sep == "T" else None
            return {"ws": self.bind_time(start, like), "we": self.bind_time(end, like)}
        return {"ws": start.astimezone(timezone.utc), "we": end.astimezone(timezone.utc)}

    def time_epoch(self, column: str, ts) -> str:
        """A native or ISO 8601 timestamp as epoch seconds (NULL when it cannot be read as a time)."""
        return self.epoch_seconds(column if ts.format == "timestamp" else self.iso_time(column))

    def newest_time(self, column: str, ts) -> str:
        """Aggregate: epoch seconds of the newest native or ISO 8601 timestamp."""
        if ts.format == "timestamp":
            return self.epoch_seconds(f"MAX({column})")  # MAX first: an index answers it
        return f"MAX({self.time_epoch(column, ts)})"

    def invalid_time(self, column: str, ts) -> str:
        """Predicate: the row's timestamp is NULL or cannot be placed in any window."""
        if ts.format == "timestamp":
            return f"({column} IS NULL OR {self.infinite_time(column)})"
        if ts.format == "iso":
            return f"{self.iso_time(column)} IS NULL"
        return f"({column} IS NULL OR {self.non_finite(column)})"

    def sample_times(self, conn, table: str, column: str, n: int) -> list:
        """Up to `n` non-NULL values of the column, to detect how it is spelled."""
        import sqlalchemy as sa

        t, c = self.quote_table(conn, table), self.quote(conn, column)
        return [r[0] for r in conn.execute(sa.text(f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL LIMIT {n}"))]

    def time_kind(self, where: str, kind: str, numbers: list, texts: list, declared: str, example) -> str:
        """"timestamp", "epoch" or "iso": by the column's type (`kind`), checked against `declared`."""
        if kind.startswith(("timestamp", "date")):
            fmt = "timestamp"
        elif kind.split("(")[0] in NUMBER_TYPES:
            fmt = "epoch"
        elif kind.startswith(("text", "character", "varchar", "string")):
            fmt = "iso"
        else:
            raise TimestampError(f"{where}: type {kind} is not a timestamp, ISO 8601 text or an epoch number")
        if declared != "auto" and fmt != ("epoch" if declared.startswith("epoch") else declared):
            raise TimestampError(f"{where}: declared timestamp_format {declared} does not fit its type {kind}")
        return fmt

    def text_times(self, where: str, texts: list[str], declared: str) -> tuple[str, str | None]:
        """(format, separator of text compared as text) of ISO 8601 text (see `monitor.db.Timestamps`)."""
        not_iso(where, texts, lambda v: ISO.match(v.strip()))
        return "iso", None

    def begin_read_only(self, conn) -> None:
        """Make the coming statement read-only, where the engine can enforce it (goal SQL)."""

    def end_read_only(self, conn) -> None:
        """Undo `begin_read_only` (after the transaction's rollback)."""

    # ------------------------------------------------------------------ catalogs

    def ensure_functions(self, conn) -> None:
        """Functions the queries use that a build of the engine may lack (SQLite's `ln`)."""

    def unique_column(self, conn, table: str, column: str) -> bool:
        """Whether `column` alone is a unique key of `table` (so a join gives each row one match)."""
        return False

    def integer_columns(self, conn, columns: list[tuple[str, str]]) -> bool:
        """Whether each (table, column) is an integer column, as far as the catalog says."""
        return False

    def table_names(self, conn, schema: str | None = None) -> list[str]:
        import sqlalchemy as sa

        return sa.inspect(conn).get_table_names(schema=schema) + sa.inspect(conn).get_view_names(schema=schema)

    def column_type(self, conn, table: str, column: str) -> str | None:
        """The column's type as the engine names it (lower case), or None when there is no such column."""
        import sqlalchemy as sa

        try:
            cols = sa.inspect(conn).get_columns(table.rpartition(".")[2], schema=table.rpartition(".")[0] or None)
        except sa.exc.NoSuchTableError:
            return None
        for c in cols:
            if c["name"] == column:
                return str(c["type"]).lower()
        return None

    def column_types(self, conn, table: str) -> dict | None:
        """{column: SQLAlchemy type} of the table, or None when it does not exist."""
        import sqlalchemy as sa

        schema, _, name = table.rpartition(".")
        try:
            return {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(name, schema=schema or None)}
        except sa.exc.NoSuchTableError:
            return None

    def readable_as(self, column_type, types: tuple) -> bool:
        """Whether a column of `column_type` (as `column_types` gives it) can be read as one of
        `types` (SQLAlchemy type classes: numbers, booleans)."""
        return isinstance(column_type, types)

    def columns(self, conn, table: str) -> set[str] | None:
        """The table's column names in lower case, or None when it does not exist."""
        import sqlalchemy as sa

        schema, _, name = table.rpartition(".")
        try:
            return {c["name"].lower() for c in sa.inspect(conn).get_columns(name, schema=schema or None)}
        except sa.exc.NoSuchTableError:
            return None


def not_iso(where: str, texts: list[str], match) -> list[str]:
    """The texts that are not ISO 8601 (by `match`); an error when every one of them is not."""
    bad = [v for v in texts if not match(v)]
    if texts and len(bad) == len(texts):
        raise TimestampError(f"{where} holds text that is not ISO 8601, e.g. {bad[0]!r}")
    return bad


def no_savepoint(conn):
    return nullcontext()


def sa_type(name: str):
    """A SQLAlchemy type for an engine's type name (DuckDB's, Spark's), as far as the jobs care."""
    import sqlalchemy as sa

    n = name.lower().split("(")[0].strip()
    if n in ("boolean", "bool"):
        return sa.Boolean()
    if n in ("tinyint", "smallint", "integer", "int", "bigint", "hugeint", "long", "short", "byte",
             "ubigint", "uinteger", "usmallint", "utinyint"):
        return sa.Integer()
    if n in ("double", "float", "real", "double precision", "float4", "float8"):
        return sa.Float()
    if n in ("decimal", "numeric"):
        return sa.Numeric()
    if n.startswith(("timestamp", "date")):
        return sa.DateTime()
    return sa.String()
