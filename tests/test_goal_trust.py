"""Goals a user can trust: a window without rows is no_data (never on track), goal SQL gets epoch
bounds and runs read-only. On SQLite and a real PostgreSQL."""
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from monitor.cli import main
from monitor.config import load_config
from monitor.exporter import exposition
from monitor.jobs import run_cycle
from monitor.store import Store

UTC = timezone.utc
START = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = 10
OUTAGE = START + timedelta(days=DAYS - 1)  # the last day has no rows at all

MEAN_SQL = "SELECT AVG(minutes) AS value FROM events WHERE ts >= :window_start AND ts < :window_end"
RATE_SQL = """
SELECT 1.0 * SUM(bad) / NULLIF(COUNT(*), 0) AS value, SUM(bad) AS numerator, COUNT(*) AS denominator
FROM events WHERE ts >= :window_start AND ts < :window_end
"""
EPOCH_SQL = """
SELECT 1.0 * SUM(bad) / NULLIF(COUNT(*), 0) AS value, SUM(bad) AS numerator, COUNT(*) AS denominator
FROM events WHERE ts_epoch >= :window_start_epoch AND ts_epoch < :window_end_epoch
"""
WRITE_SQL = "DELETE FROM events WHERE ts >= :window_start AND ts < :window_end RETURNING minutes AS value"


def make_events(url: str, outage: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = DAYS * 200
    ts = pd.Timestamp(START.replace(tzinfo=None)) + pd.to_timedelta(rng.uniform(0, DAYS * 86400, n), unit="s")
    df = pd.DataFrame({"id": np.arange(n), "ts": ts, "bad": (rng.uniform(size=n) < 0.02).astype(int),
                       "minutes": rng.normal(120, 5, n)})
    if outage:
        df = df[df.ts < pd.Timestamp(OUTAGE.replace(tzinfo=None))]
    df["ts_epoch"] = (df.ts - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    engine = sa.create_engine(url)
    df.to_sql("events", engine, index=False, if_exists="replace", dtype={"ts": sa.DateTime(), "ts_epoch": sa.BigInteger()})
    engine.dispose()
    return df


def _cfg(tmp_path, url, goals):
    (tmp_path / "sql").mkdir(exist_ok=True)
    body = ["database_url: " + url, "goals:"]
    for name, (sql, target) in goals.items():
        (tmp_path / "sql" / f"{name}.sql").write_text(sql)
        body.append(f"  - {{name: {name}, sql: sql/{name}.sql, start: 2026-09-01, deadline: 2027-03-31, review: null, {target}}}")
    path = tmp_path / "monitor.yaml"
    path.write_text("\n".join(body) + "\n")
    return str(path)


MINUTES = (MEAN_SQL, "unit: minutes, direction: at_least, target: 50")
RATE = (RATE_SQL, "direction: at_most, target: 0.5")


@pytest.mark.slow
def test_a_window_without_rows_is_no_data_never_insufficient_and_never_on_track(tmp_path, db_url, capsys):
    make_events(db_url)
    path = _cfg(tmp_path, db_url, {"minutes": MINUTES, "rate": RATE})
    cfg = load_config(path)
    assert main(["run-once", "--config", path, "--now", (START + timedelta(days=DAYS)).isoformat()]) == 0
    out = capsys.readouterr().out
    store = Store(cfg.store_url)
    for goal in ("minutes", "rate"):
        series = store.goal_series(goal, 86400)
        assert len(series) == DAYS
        assert series[-1]["window_start"] == OUTAGE and series[-1]["status"] == "no_data" and series[-1]["met"] is None
        assert all(r["status"] != "no_data" and r["value"] is not None for r in series[:-1])
    # values ~120 minutes against a floor of 50: on track until the outage, which is not
    traj = {t["goal"]: t for t in store.latest_trajectories()}
    assert traj["minutes"]["status"] == "unknown" and traj["minutes"]["as_of"] == OUTAGE + timedelta(days=1)
    table = [line for line in out.splitlines() if line.startswith("minutes")]
    assert table and "no_data" in table[0] and "on_track" not in table[0]
    text = exposition(cfg, store).decode()
    assert 'monitor_goal_status{goal="minutes",status="no_data"} 1.0' in text
    assert 'monitor_goal_status{goal="minutes",status="insufficient_data"} 0.0' in text
    assert 'monitor_goal_trajectory{goal="minutes",trajectory="on_track"} 0.0' in text


def test_the_same_goal_with_data_in_its_latest_window_is_on_track(tmp_path, db_url):
    """The counterpart of the outage: the trajectory rule is what changes the status, not the data."""
    make_events(db_url, outage=False)
    cfg = load_config(_cfg(tmp_path, db_url, {"minutes": MINUTES}))
    run_cycle(cfg, START + timedelta(days=DAYS))
    store = Store(cfg.store_url)
    assert store.goal_series("minutes", 86400)[-1]["status"] == "met"
    assert store.latest_trajectories()[0]["status"] == "on_track"


def test_the_app_card_of_a_week_without_data_says_no_data_and_not_on_track(tmp_path, db_url):
    from app_streamlit.data import Reader, goal_card

    make_events(db_url)
    path = _cfg(tmp_path, db_url, {"minutes": MINUTES})
    text = open(path).read().replace("review: null", "review: 1d")  # the card reads the review size
    open(path, "w").write(text)
    cfg = load_config(path)
    run_cycle(cfg, START + timedelta(days=DAYS))
    card = goal_card(cfg, Reader(cfg.store_url), cfg.goals[0], OUTAGE)
    assert card["status"] == "no_data" and card["trajectory"]["status"] == "unknown", card


def test_goal_sql_gets_the_window_as_epoch_seconds(tmp_path, db_url):
    df = make_events(db_url, outage=False)
    cfg = load_config(_cfg(tmp_path, db_url, {"epoch": (EPOCH_SQL, "direction: at_most, target: 0.5")}))
    report = run_cycle(cfg, START + timedelta(days=DAYS))
    assert report.ok, report.failed
    got = {r["window_start"]: (r["numerator"], r["denominator"]) for r in Store(cfg.store_url).goal_series("epoch", 86400)}
    day = df.groupby(df.ts.dt.floor("1D"))
    want = {d.tz_localize(UTC).to_pydatetime(): (float(g.bad.sum()), float(len(g))) for d, g in day}
    assert got == want


def test_goal_sql_runs_read_only_and_a_file_that_writes_fails_and_deletes_nothing(tmp_path, db_url, capsys):
    df = make_events(db_url, outage=False)
    path = _cfg(tmp_path, db_url, {"writer": (WRITE_SQL, "direction: at_most, target: 0.5")})
    assert main(["run-once", "--config", path, "--now", "2026-09-02"]) == 1
    err = capsys.readouterr().err
    assert "goal:writer" in err and ("read-only transaction" in err or "readonly database" in err)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM events")).scalar() == len(df)
        # the connection is usable for writes afterwards: read-only was for the goal's statement only
    engine.dispose()
    cfg = load_config(path)
    assert Store(cfg.store_url).goal_windows("writer", 86400) == {}
    from monitor.store import job_runs  # the results store still takes writes on the same database
    with Store(cfg.store_url).engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar() >= 1


def test_window_parameters_are_found_outside_comments_and_quotes():
    from monitor.goals import used_params

    assert used_params("SELECT 1 AS value -- :window_start\n/* :window_end */ WHERE a = ':window_end'") == set()
    assert used_params("SELECT 1 AS value WHERE t >= :window_start_epoch AND t < :window_end") == {"window_start_epoch", "window_end"}
    assert used_params("SELECT '2026-01-01'::date AS value") == set()

