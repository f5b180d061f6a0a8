"""Source timestamps of every common kind select exactly the rows of each UTC window, on SQLite and
PostgreSQL: native timestamps, ISO 8601 text ('T' or space, fractions, Z and offsets, mixed in
one column), epoch seconds and milliseconds (integers and floats). The truth is Python's count of
the same instants; hourly windows put offsets across window (and date) boundaries.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from monitor import db, modeljobs
from monitor.config import Model
from monitor.db import TimestampError, detect_timestamp_format, make_engine
from monitor.jobs import run_cycle
from monitor.config import parse_config
from monitor.store import Store
from monitor.windows import Window, windows_between

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = 8
OFFSETS = [timezone(timedelta(hours=3)), timezone(-timedelta(hours=5, minutes=30)), UTC, timezone(timedelta(hours=14))]


def instants(seed: int = 3) -> list[datetime]:
    """Whole-second instants over HOURS hours, with every hour's first second and last second."""
    rng = np.random.default_rng(seed)
    secs = set(int(s) for s in rng.integers(0, HOURS * 3600, 400))
    secs |= {h * 3600 for h in range(HOURS)} | {h * 3600 - 1 for h in range(1, HOURS + 1)}
    return [T0 + timedelta(seconds=s) for s in sorted(secs)]


def _iso_offset(t: datetime, i: int) -> str:
    tz = OFFSETS[i % len(OFFSETS)]
    local = t.astimezone(tz)
    text = local.strftime("%Y-%m-%dT%H:%M:%S.250") + ("Z" if tz is UTC and i % 8 == 2 else local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:])
    return text


def frame(ts: list[datetime]) -> pd.DataFrame:
    """One column per spelling of the same instants (fractions of a second never cross a whole-hour bound)."""
    epoch = np.array([int(t.timestamp()) for t in ts])
    return pd.DataFrame({
        "pid": np.arange(len(ts)),
        "score": np.linspace(0.01, 0.99, len(ts)),
        "t_native": [t.replace(tzinfo=None) for t in ts],
        "t_iso_t": [t.strftime("%Y-%m-%dT%H:%M:%S") for t in ts],
        "t_iso_space_frac": [t.strftime("%Y-%m-%d %H:%M:%S.123456") for t in ts],
        "t_iso_z": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts],
        "t_iso_offset": [_iso_offset(t, i) for i, t in enumerate(ts)],
        "t_iso_mixed": [(t.strftime("%Y-%m-%dT%H:%M:%S") if i % 3 == 0 else t.strftime("%Y-%m-%d %H:%M:%S.5") if i % 3 == 1
                         else _iso_offset(t, i)) for i, t in enumerate(ts)],
        "t_epoch_s": epoch,
        "t_epoch_s_float": epoch + 0.25,
        "t_epoch_ms": epoch * 1000 + 250,
        "t_epoch_ms_float": epoch * 1000.0 + 250.5,
    })


COLUMNS = {"t_native": "timestamp", "t_iso_t": "iso", "t_iso_space_frac": "iso", "t_iso_z": "iso", "t_iso_offset": "iso",
           "t_iso_mixed": "iso", "t_epoch_s": "epoch_s", "t_epoch_s_float": "epoch_s", "t_epoch_ms": "epoch_ms",
           "t_epoch_ms_float": "epoch_ms"}


def model(column: str, fmt: str = "auto", table: str = "preds") -> Model:
    return Model.model_validate({
        "name": "m_" + column, "task": "binary_classification", "window": "1h", "start": T0.isoformat(),
        "source": {"table": table, "id": "pid", "timestamp": column, "timestamp_format": fmt, "score": "score"},
        "reference": {"start": (T0 - timedelta(days=2)).isoformat(), "end": (T0 - timedelta(days=1)).isoformat()}})


@pytest.fixture
def world(db_url, tmp_path):
    db.clear_timestamp_cache()
    ts = instants()
    df = frame(ts)
    eng = sa.create_engine(db_url)
    df.to_sql("preds", eng, index=False)
    if db_url.startswith("postgresql"):
        with eng.begin() as c:  # a timestamptz column too
            c.execute(sa.text("ALTER TABLE preds ADD COLUMN t_tz timestamptz"))
            c.execute(sa.text("UPDATE preds SET t_tz = (t_native AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"))
    eng.dispose()
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    store.migrate()
    return ts, make_engine(db_url), store


def truth(ts: list[datetime], w: Window) -> int:
    return sum(1 for t in ts if w.start <= t < w.end)


def test_every_kind_detected_and_every_hourly_window_exact(world):
    ts, eng, store = world
    columns = dict(COLUMNS)
    if eng.dialect.name == "postgresql":
        columns["t_tz"] = "timestamp"
    elif True:
        columns["t_native"] = "iso"  # SQLite keeps timestamps as text
    windows = windows_between(T0, T0 + timedelta(hours=HOURS), timedelta(hours=1))
    with eng.connect() as conn:
        for col, fmt in columns.items():
            got, example = detect_timestamp_format(conn, "preds", col)
            assert got == fmt, col
            assert example is not None
    for col in columns:
        m = model(col)
        for w in windows:
            result, _ = modeljobs.compute(eng, store, m, w, T0 + timedelta(days=1))
            assert result.rows == truth(ts, w), (col, str(w))


@pytest.mark.parametrize("col,fmt", [("t_epoch_ms", "epoch_ms"), ("t_iso_offset", "iso"), ("t_epoch_s_float", "epoch_s")])
def test_declared_format_gives_the_same_windows(world, col, fmt):
    ts, eng, store = world
    m = model(col, fmt)
    for w in windows_between(T0, T0 + timedelta(hours=3), timedelta(hours=1)):
        assert modeljobs.compute(eng, store, m, w, T0 + timedelta(days=1))[0].rows == truth(ts, w)


def test_declared_format_that_does_not_fit_the_column_is_an_error_naming_it(world):
    _, eng, store = world
    with pytest.raises(TimestampError, match="t_iso_t"):
        modeljobs.compute(eng, store, model("t_iso_t", "epoch_ms"), Window(T0, T0 + timedelta(hours=1)), T0 + timedelta(days=1))


def test_native_timestamps_are_compared_without_a_function_on_the_column(world):
    _, eng, _ = world
    with eng.connect() as conn:
        col = "t_tz" if eng.dialect.name == "postgresql" else "t_epoch_ms"
        ts = db.timestamps(conn, "preds", col)
        assert db.window_where(conn, '"x"', ts) == '"x" >= :ws AND "x" < :we'  # an index on it is used


def _mixed_table(url: str, values: list, sqltype: str) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE TABLE odd (pid INTEGER, score DOUBLE PRECISION, at {sqltype})"))
        for i, v in enumerate(values):
            c.execute(sa.text("INSERT INTO odd VALUES (:i, 0.5, :v)"), {"i": i, "v": v})
    eng.dispose()


def test_epoch_seconds_mixed_with_milliseconds_is_an_error_naming_the_column_and_a_value(db_url, tmp_path):
    db.clear_timestamp_cache()
    base = int(T0.timestamp())
    _mixed_table(db_url, [base + i for i in range(50)] + [base * 1000 + i for i in range(50)], "BIGINT")
    eng = make_engine(db_url)
    with eng.connect() as conn, pytest.raises(TimestampError, match=r"at of table odd mixes epoch seconds and milliseconds.*\d{10}"):
        detect_timestamp_format(conn, "odd", "at")


def test_text_mixed_with_numbers_on_sqlite_fails_the_job_with_one_line(tmp_path):
    db.clear_timestamp_cache()
    url = f"sqlite:///{tmp_path / 'src.db'}"
    base = int(T0.timestamp())
    _mixed_table(url, [(T0 + timedelta(minutes=i)).isoformat() for i in range(30)] + [base + i for i in range(30)], "")
    cfg = parse_config({"database_url": url, "results_url": f"sqlite:///{tmp_path / 'r.db'}", "models": [{
        "name": "odd", "task": "binary_classification", "window": "1h", "start": T0.isoformat(),
        "source": {"table": "odd", "id": "pid", "timestamp": "at", "score": "score"},
        "reference": {"start": (T0 - timedelta(days=1)).isoformat(), "end": T0.isoformat()}}]})
    report = run_cycle(cfg, T0 + timedelta(hours=2))
    assert report.failed
    msg = report.failed[0][2]
    assert "\n" not in msg and "column at of table odd mixes text and numbers" in msg, msg
