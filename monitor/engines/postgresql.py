"""PostgreSQL: snapshots shared between connections, hashed samples, quantiles in one statement."""
from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from .base import ISO_RE, Engine


class PostgreSQL(Engine):
    name = "postgresql"
    schemes = ("postgresql", "postgres")
    snapshots = True
    # the planner inlines a subquery's columns into every use: 231 products of 21 centred values
    # each spelled out again; OFFSET 0 keeps the subquery. Its scan then runs in one process, not
    # in parallel: still faster than a second, parallel read of the window (3.23 s against 4.11 s
    # for a 1 M-row window on 2 cores)
    fence = " OFFSET 0"

    def make_engine(self, url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
        if parquet:
            return super().make_engine(url, statement_timeout, parquet)
        ms = int(statement_timeout.total_seconds() * 1000) if statement_timeout else 0
        options = "-c timezone=UTC" + (f" -c statement_timeout={ms}" if ms else "")
        return sa.create_engine(url, connect_args={"options": options, "connect_timeout": 5}, pool_pre_ping=True)

    def connect(self, engine):
        return engine.connect().execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)

    def setup(self, conn) -> None:
        if (conn.dialect.server_version_info or (0,)) >= (11,):
            # JIT compiling a query of hundreds of aggregates costs seconds and saves nothing here.
            conn.execute(sa.text("SET LOCAL jit = off"))

    def export_snapshot(self, conn) -> str | None:
        """The transaction's snapshot, for a second connection to see exactly the same rows
        (``SET TRANSACTION SNAPSHOT``); None when the server refuses (then one connection does
        everything, in turn)."""
        try:
            sid = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar()
        except sa.exc.DBAPIError:  # e.g. a hot standby: the transaction is aborted, start it again
            conn.rollback()
            self.setup(conn)
            return None
        return sid if isinstance(sid, str) and re.fullmatch(r"[0-9A-Fa-f-]+", sid) else None

    def on_snapshot(self, engine, snapshot: str, job):
        """Run `job(conn)` on a connection of its own that sees the exporting transaction's snapshot."""
        with engine.connect() as c:
            c = c.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            try:
                c.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
                self.setup(c)
                return job(c)
            finally:
                c.rollback()

    def sample_bucket(self, expr: str, buckets: int) -> str:
        return f"(hashtext(CAST({expr} AS TEXT)) & {buckets - 1})"

    def quantiles(self, columns: list[tuple[str, int]], levels: list[float]) -> list[str]:
        arr = "ARRAY[" + ", ".join(repr(q) for q in levels) + "]::double precision[]"
        return [f"percentile_disc({arr}) WITHIN GROUP (ORDER BY {c})" for c, _n in columns]

    def iso_time(self, column: str) -> str:
        return f"(CASE WHEN {column} ~ '{ISO_RE}' THEN CAST({column} AS TIMESTAMPTZ) END)"

    def infinite_time(self, column: str) -> str:
        return f"{column} IN ('infinity', '-infinity')"

    def non_finite(self, column: str) -> str:
        return f"CAST({column} AS DOUBLE PRECISION) IN ('NaN', 'Infinity', '-Infinity')"

    def finite(self, expr: str) -> str:
        return f"NULLIF(NULLIF(NULLIF({expr}, 'NaN'), 'Infinity'), '-Infinity')"

    def begin_read_only(self, conn) -> None:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    def column_type(self, conn, table: str, column: str) -> str | None:
        return conn.execute(sa.text(
            "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a WHERE a.attrelid = to_regclass(:t) "
            "AND a.attname = :c AND a.attnum > 0 AND NOT a.attisdropped"), {"t": self.quote_table(conn, table), "c": column}).scalar()

    def unique_column(self, conn, table: str, column: str) -> bool:
        try:
            with conn.begin_nested():
                return bool(conn.execute(sa.text(
                    "SELECT COUNT(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(:t) AND i.indisunique "
                    "AND i.indnatts = 1 AND i.indpred IS NULL AND a.attname = :c"),
                    {"t": self.quote_table(conn, table), "c": column}).scalar())
        except sa.exc.DBAPIError:  # no catalog access: take the separate query
            return False

    def integer_columns(self, conn, columns: list[tuple[str, str]]) -> bool:
        sql = ("SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
               "WHERE a.attrelid = to_regclass(:t) AND a.attname = :c AND NOT a.attisdropped")
        try:
            with conn.begin_nested():
                types = [conn.execute(sa.text(sql), {"t": self.quote_table(conn, table), "c": col}).scalar()
                         for table, col in columns]
        except sa.exc.DBAPIError:  # no catalog access
            return False
        return all(t in ("int2", "int4", "int8") for t in types)


ENGINE = PostgreSQL()
