"""DuckDB, embedded: a database file, or an in-memory database over Parquet files (`parquet:`).

Each connection is set to UTC and gets the configured Parquet tables as temporary views
(``read_parquet``), so an in-memory database needs no file at all. DuckDB has no statement
timeout of its own: a timer interrupts the connection's statement once it has run that long.
DuckDB's settings come in the URL (`?memory_limit=100MB&disable_parquet_prefetching=true`).
`preserve_insertion_order` is off unless the URL sets it: every query whose order matters says
ORDER BY, and without it DuckDB's joins and sorts need not keep rows in order, and take less
memory. Needs the `duckdb` extra.
"""
from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from .base import Engine, disc_rank, sa_type


def parquet_source(path: str) -> str:
    """The `read_parquet` argument of a configured path: a file, a glob, or a folder (every
    Parquet file below it, as Spark and other writers lay them out)."""
    from pathlib import Path

    if not any(c in path for c in "*?[") and Path(path).is_dir():
        return str(Path(path) / "**" / "*.parquet")
    return path


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _bytes(setting) -> int | None:
    """Bytes of a DuckDB size setting ('95.3 MiB', '1.5 GB'), or None."""
    import re

    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?)B\s*", str(setting or ""), re.I)
    if not m:
        return None
    unit = (1024 if m.group(3) else 1000) ** " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * unit)


def _cut_after(engine, seconds: float) -> None:
    """Interrupt any statement of `engine` that runs longer than `seconds` (an error naming the timeout)."""
    lock = threading.Lock()

    def interrupt(conn, token):
        with lock:  # only the statement the timer was started for
            if conn.info.get("duckdb_statement") is token:
                conn.info["duckdb_cut"] = True
                conn.connection.driver_connection.interrupt()

    def start(conn, _cursor, _statement, _params, _context, _many):
        token = object()
        conn.info.update(duckdb_statement=token, duckdb_cut=False)
        timer = conn.info["duckdb_timer"] = threading.Timer(seconds, interrupt, (conn, token))
        timer.daemon = True
        timer.start()

    def stop(conn, *_a):
        with lock:
            conn.info.pop("duckdb_statement", None)
            timer = conn.info.pop("duckdb_timer", None)
        if timer is not None:
            timer.cancel()

    def failed(context):
        conn = context.connection
        if conn is None:
            return
        stop(conn)
        if conn.info.pop("duckdb_cut", False):
            raise sa.exc.OperationalError(context.statement, context.parameters,
                                          RuntimeError(f"statement timeout: cut after {seconds:g} s")) from None

    sa.event.listen(engine, "before_cursor_execute", start)
    sa.event.listen(engine, "after_cursor_execute", stop)
    sa.event.listen(engine, "handle_error", failed)


class DuckDB(Engine):
    can_store = False  # results go to results_url (PostgreSQL or SQLite)
    name = "duckdb"
    schemes = ("duckdb",)

    def make_engine(self, url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
        try:
            import duckdb_engine  # noqa: F401
        except ImportError:
            raise ValueError("database_url: duckdb:// needs DuckDB: pip install 'monitor[duckdb]'") from None
        # settings of DuckDB's Parquet reader (`?disable_parquet_prefetching=true`) exist once its
        # extension is loaded, after the connection is made: they are set on each connection then
        u = sa.engine.make_url(url)
        later = {k: v for k, v in u.query.items() if "parquet" in k}
        engine = sa.create_engine(u.difference_update_query(later))
        unordered = "preserve_insertion_order" not in u.query
        views = [f"CREATE OR REPLACE TEMPORARY VIEW {self.quote(None, name)} AS "
                 f"SELECT * FROM read_parquet({_literal(parquet_source(path))})" for name, path in (parquet or {}).items()]

        def on_connect(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            if unordered:
                cur.execute("SET preserve_insertion_order = false")
            if later:
                cur.execute("LOAD parquet")
            for k, v in later.items():
                cur.execute(f"SET {k} = {_literal(str(v))}")
            for v in views:
                cur.execute(v)
            cur.close()

        sa.event.listen(engine, "connect", on_connect)
        if statement_timeout:
            _cut_after(engine, statement_timeout.total_seconds())
        return engine

    def quote(self, conn, name: str) -> str:
        # always quoted: DuckDB reserves more words than PostgreSQL, whose quoting rules the dialect borrows (`at`)
        return '"' + name.replace('"', '""') + '"'

    def iso_time(self, column: str) -> str:
        return f"TRY_CAST({column} AS TIMESTAMPTZ)"

    def infinite_time(self, column: str) -> str:
        return f"NOT isfinite({column})"

    def non_finite(self, column: str) -> str:
        return f"NOT isfinite(CAST({column} AS DOUBLE))"

    def finite(self, expr: str) -> str:
        return f"(CASE WHEN isfinite({expr}) THEN {expr} END)"

    def sample_bucket(self, expr: str, buckets: int) -> str:
        # the value's own hash: twice as fast as of its text, on integer ids
        return f"CAST(hash({expr}) % {buckets} AS BIGINT)"

    # quantile_disc holds every value of its column in memory (it does not spill): 21 columns of a
    # 100 M-row reference in one statement need some 17 GB
    quantile_values = 50_000_000

    def quantiles(self, columns: list[tuple[str, int]], levels: list[float]) -> list[str]:
        # DuckDB's quantile_disc does not take position ceil(q n) where q n is a whole number (it
        # takes the next one): ask it for the middle of the position wanted, which it rounds to it
        def at(q: float, n: int) -> str:
            return repr((disc_rank(q, n) - 0.5) / n if n else q)

        return [f"quantile_disc({c}, [{', '.join(at(q, n) for q in levels)}])" for c, n in columns]

    # bytes of memory_limit per labelled row a statement of the quality query may sort (its join
    # and window functions): under 95 MiB, beside 100 M labels, a slice of 2.7 M rows ran and one
    # of 6 M failed
    sort_row_bytes = 40

    def sort_rows(self, conn) -> int | None:
        limit = _bytes(conn.execute(sa.text("SELECT current_setting('memory_limit')")).scalar())
        return None if limit is None else max(1, limit // self.sort_row_bytes)

    def _describe(self, conn, table: str) -> dict[str, str] | None:
        """{column: type, lower case} of a table or view (temporary ones included), or None."""
        try:
            rows = conn.execute(sa.text(f"DESCRIBE {self.quote_table(conn, table)}")).all()
        except sa.exc.DBAPIError:
            conn.rollback()
            return None
        return {str(r[0]): str(r[1]).lower() for r in rows}

    def column_types(self, conn, table: str) -> dict | None:
        got = self._describe(conn, table)
        return None if got is None else {c: sa_type(t) for c, t in got.items()}

    def columns(self, conn, table: str) -> set[str] | None:
        got = self._describe(conn, table)
        return None if got is None else {c.lower() for c in got}

    def column_type(self, conn, table: str, column: str) -> str | None:
        return (self._describe(conn, table) or {}).get(column)

    def table_names(self, conn, schema: str | None = None) -> list[str]:
        return [r[0] for r in conn.execute(sa.text(
            "SELECT table_name FROM duckdb_tables() UNION SELECT view_name FROM duckdb_views() WHERE NOT internal"))]

    def integer_columns(self, conn, columns: list[tuple[str, str]]) -> bool:
        types = [(self._describe(conn, t) or {}).get(c) for t, c in columns]
        return all(t in ("tinyint", "smallint", "integer", "bigint", "hugeint") for t in types)


ENGINE = DuckDB()
