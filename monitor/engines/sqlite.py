"""SQLite: the embedded default. Timestamps are text; no statement timeout but a progress handler."""
from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from .base import Engine, TimestampError, not_iso

MAX_OFFSET = timedelta(hours=14)  # the widest UTC offset in use: the text band searched around a window
ISO = re.compile(r"^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d+)?)?)?(Z|[+-]\d\d:\d\d)?$")


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

    # timestamps are text (or epoch numbers): told by their values, compared as text where they are
    # all plain UTC with one separator, else on their epoch seconds inside a text band

    def time_where(self, column: str, ts, p: str = "") -> str:
        if ts.text_sep:
            return f"{column} >= :{p}ws AND {column} < :{p}we"  # the column itself: an index on it is used
        e = _epoch(column)  # a text band that an index narrows, then the exact comparison in UTC
        return f"{column} >= :{p}ws_text AND {column} < :{p}we_text AND {e} >= :{p}ws AND {e} < :{p}we"

    def time_params(self, ts, start: datetime, end: datetime) -> dict:
        if ts.text_sep:
            return super().time_params(ts, start, end)
        lo = (start - MAX_OFFSET).astimezone(timezone.utc)
        hi = (end + MAX_OFFSET).astimezone(timezone.utc)
        # ' ' sorts before 'T': the band holds every spelling of the times between lo and hi
        return {"ws": _seconds(start), "we": _seconds(end),
                "ws_text": lo.strftime("%Y-%m-%d %H:%M:%S"), "we_text": hi.strftime("%Y-%m-%dT%H:%M:%S")}

    def time_epoch(self, column: str, ts) -> str:
        return f"(CASE WHEN typeof({column}) = 'text' THEN {_epoch(column)} END)"

    def newest_time(self, column: str, ts) -> str:
        return f"MAX({self.time_epoch(column, ts)})"

    def invalid_time(self, column: str, ts) -> str:
        if ts.format in ("epoch_s", "epoch_ms"):
            return f"({column} IS NULL OR typeof({column}) NOT IN ('integer', 'real') OR ABS({column}) > 1e300)"
        return f"({column} IS NULL OR typeof({column}) != 'text' OR {_epoch(column)} IS NULL)"

    def sample_times(self, conn, table: str, column: str, n: int) -> list:
        values = super().sample_times(conn, table, column, n)
        t, c = self.quote_table(conn, table), self.quote(conn, column)
        try:  # and the newest rows: a spelling that changed lately is seen too
            values += [r[0] for r in conn.execute(sa.text(
                f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY rowid DESC LIMIT {n}"))]
        except sa.exc.OperationalError:  # a table without rowid
            pass
        return values

    def time_kind(self, where: str, kind: str, numbers: list, texts: list, declared: str, example) -> str:
        # any column holds any value: the kind is that of the values
        if numbers and texts:
            odd = texts[0] if len(texts) <= len(numbers) else numbers[0]
            raise TimestampError(f"{where} mixes text and numbers, e.g. {odd!r}: store one kind")
        if declared in ("epoch_s", "epoch_ms") and texts or declared in ("timestamp", "iso") and numbers:
            raise TimestampError(f"{where}: declared timestamp_format {declared} does not fit its values, e.g. {example!r}")
        return "epoch" if numbers else "iso"

    def text_times(self, where: str, texts: list[str], declared: str) -> tuple[str, str | None]:
        bad = not_iso(where, texts, ISO.match)
        good = [v for v in texts if v not in bad]
        seps = {v[10] for v in good if len(v) > 10}
        utc = all(len(v) <= 19 or _naive_or_utc(v) for v in good)
        plain = declared in ("auto", "timestamp") and len(seps) <= 1 and utc
        return ("timestamp" if declared == "timestamp" else "iso"), ((seps.pop() if seps else " ") if plain else None)

    def readable_as(self, column_type, types: tuple) -> bool:
        # a declared type is only an affinity: any column may hold numbers, except one of text
        # affinity, which stores them as text (SQLite's rule: the type names CHAR, CLOB or TEXT)
        name = str(column_type).upper() if not isinstance(column_type, sa.types.NullType) else ""
        return isinstance(column_type, types) or not any(t in name for t in ("CHAR", "CLOB", "TEXT"))

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


def _epoch(column: str) -> str:
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


def _seconds(ts: datetime) -> int:
    return int((ts - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())


def _naive_or_utc(v: str) -> bool:
    tail = v[19:]
    return not re.search(r"[+-]\d\d:\d\d$", tail) or tail.endswith(("+00:00", "-00:00"))


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
