"""SQLite: the embedded default. Timestamps are text; no statement timeout but a progress handler."""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from .base import Engine


class SQLite(Engine):
    name = "sqlite"
    schemes = ("sqlite",)

    def make_engine(self, url: str, statement_timeout: timedelta | None = None, parquet: dict | None = None):
        if parquet:
            return super().make_engine(url, statement_timeout, parquet)
        ms = int(statement_timeout.total_seconds() * 1000) if statement_timeout else 0
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _on_connect(ms))
        return engine

    def bind_time(self, ts: datetime, like=None):
        # SQLite stores dates and timestamps as text and compares them as text. At midnight the bare
        # date sorts right against every spelling of that day ('YYYY-MM-DD', '... HH:MM:SS[.ffffff]',
        # '...THH:MM:SS[.ffffff][+00:00|Z]'); other times need the column's own separator.
        naive = ts.astimezone(timezone.utc).replace(tzinfo=None)
        if naive.time() == naive.min.time():
            return naive.strftime("%Y-%m-%d")
        sep = "T" if isinstance(like, str) and len(like) > 10 and like[10] == "T" else " "
        return naive.strftime(f"%Y-%m-%d{sep}%H:%M:%S")

    def desc_nulls_last(self, expr: str) -> str:
        return f"{expr} DESC"  # SQLite's default for DESC

    def finite(self, expr: str) -> str:
        return f"NULLIF(NULLIF({expr}, 9e999), -9e999)"  # SQLite stores NaN as NULL; 9e999 is infinity

    def non_finite(self, expr: str) -> str:
        return f"{expr} IN (9e999, -9e999)"

    def begin_read_only(self, conn) -> None:
        conn.exec_driver_sql("PRAGMA query_only = ON")

    def end_read_only(self, conn) -> None:
        conn.exec_driver_sql("PRAGMA query_only = OFF")
        conn.rollback()

    def ensure_functions(self, conn) -> None:
        """SQLite builds without math functions get `ln` from Python."""
        try:
            conn.execute(sa.text("SELECT ln(1.0)")).scalar()
        except sa.exc.OperationalError:  # no such function: ln
            raw = conn.connection.driver_connection
            raw.create_function("ln", 1, lambda x: math.log(x) if x is not None and x > 0 else None, deterministic=True)


def _on_connect(timeout_ms: int):
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


ENGINE = SQLite()
