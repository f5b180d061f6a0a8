"""Goal windows computed end to end on SQLite and a real PostgreSQL, checked against pandas."""
import json
import textwrap
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.stats import binomtest, theilslopes

from monitor.cli import main
from monitor.config import load_config
from monitor.jobs import run_cycle
from monitor.store import GoalWindow, Store, closing, goal_results, goal_segments, job_runs

UTC = timezone.utc
START = datetime(2026, 9, 1, tzinfo=UTC)

RATE_SQL = """
SELECT 1.0 * SUM(CASE WHEN bad = 1 THEN 1 ELSE 0 END) / NULLIF(COUNT(*), 0) AS value,
       SUM(CASE WHEN bad = 1 THEN 1 ELSE 0 END) AS numerator,
       COUNT(*) AS denominator
FROM events WHERE ts >= :window_start AND ts < :window_end
"""
SEGMENT_SQL = """
SELECT country AS segment, SUM(CASE WHEN bad = 1 THEN 1 ELSE 0 END) AS numerator, COUNT(*) AS denominator,
       1.0 * SUM(CASE WHEN bad = 1 THEN 1 ELSE 0 END) / COUNT(*) AS value
FROM events WHERE ts >= :window_start AND ts < :window_end GROUP BY country
"""
MEAN_SQL = "SELECT AVG(minutes) AS value FROM events WHERE ts >= :window_start AND ts < :window_end"


def make_events(url: str, days: int = 20, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * 300
    df = pd.DataFrame({
        "id": np.arange(n),
        "ts": pd.to_datetime(START.replace(tzinfo=None)) + pd.to_timedelta(rng.uniform(0, days * 86400, n), unit="s"),
        "bad": (rng.uniform(size=n) < np.where(np.arange(n) % 7 == 0, 0.05, 0.008)).astype(int),
        "country": rng.choice([f"c{i:02d}" for i in range(30)], n, p=np.arange(30, 0, -1) / 465),
        "minutes": rng.gamma(4, 25, n),
    })
    # a row exactly on a window boundary belongs to the window it starts
    df.loc[0, "ts"] = pd.Timestamp("2026-09-02 00:00:00")
    engine = sa.create_engine(url)
    df.to_sql("events", engine, index=False, if_exists="replace", dtype={"ts": sa.DateTime()})
    engine.dispose()
    return df


def write_config(tmp_path, url: str, extra: str = "", max_segments: int = 5) -> str:
    (tmp_path / "sql").mkdir(exist_ok=True)
    for name, sql in (("rate", RATE_SQL), ("seg", SEGMENT_SQL), ("mean", MEAN_SQL)):
        (tmp_path / "sql" / f"{name}.sql").write_text(sql)
    (tmp_path / "monitor.yaml").write_text(textwrap.dedent(f"""\
        database_url: {url}
        goals:
          - {{name: bad_rate, sql: sql/rate.sql, direction: at_most, target: 0.01, start: 2026-09-01, recompute: 2,
              deadline: 2027-03-31, baseline: {{value: 0.03, at: 2026-09-01}}}}
          - {{name: bad_by_country, sql: sql/seg.sql, direction: at_most, target: 0.01, start: 2026-09-01, max_segments: {max_segments}}}
          - {{name: minutes, sql: sql/mean.sql, unit: minutes, direction: at_least, target: 100, start: 2026-09-01,
              deadline: 2027-03-31}}
        """) + extra)
    return str(tmp_path / "monitor.yaml")


def oracle(df: pd.DataFrame, size: str) -> pd.DataFrame:
    g = df.set_index("ts").groupby(pd.Grouper(freq=size, origin="epoch" if size != "W-MON" else "start_day"))
    return pd.DataFrame({"bad": g["bad"].sum(), "n": g["bad"].count(), "minutes": g["minutes"].mean()})


@pytest.fixture
def world(tmp_path, db_url):
    df = make_events(db_url)
    return df, load_config(write_config(tmp_path, db_url))


@pytest.mark.slow
def test_goal_values_match_pandas_on_every_daily_and_weekly_window(world):
    df, cfg = world
    now = START + timedelta(days=20)
    report = run_cycle(cfg, now)
    assert report.ok, report.failed
    store = Store(cfg.store_url)
    daily = df.assign(day=df.ts.dt.floor("D")).groupby("day")
    for name, expected in (("bad_rate", daily.bad.mean()), ("bad_by_country", daily.bad.mean()), ("minutes", daily.minutes.mean())):
        got = {r["window_start"].replace(tzinfo=None): r["value"] for r in store.goal_series(name, 86400)}
        assert len(got) == 20
        for day, value in expected.items():
            assert got[day.to_pydatetime()] == pytest.approx(value, abs=1e-9, rel=1e-9)
    # weekly: the same SQL on Monday-to-Sunday windows, never an average of days
    monday = df.ts - pd.to_timedelta(df.ts.dt.weekday, unit="D")
    weekly = df.assign(week=monday.dt.floor("D")).groupby("week")
    got = {r["window_start"].replace(tzinfo=None): r for r in store.goal_series("bad_rate", 7 * 86400)}
    assert got, "weekly windows are computed"
    for week, r in got.items():
        rows = weekly.get_group(pd.Timestamp(week))
        assert r["value"] == pytest.approx(rows.bad.mean(), abs=1e-9)
        assert r["denominator"] == len(rows) and r["numerator"] == rows.bad.sum()
        assert week.weekday() == 0 and r["window_end"] - r["window_start"] == timedelta(weeks=1)


@pytest.mark.slow
def test_a_rerun_stores_nothing_twice_and_changes_nothing(world):
    _, cfg = world
    now = START + timedelta(days=20)
    run_cycle(cfg, now)
    store = Store(cfg.store_url)
    with store.engine.connect() as c:
        before = c.execute(sa.select(goal_results).order_by("goal", "size_seconds", "window_start")).all()
        nseg = c.execute(sa.select(sa.func.count()).select_from(goal_segments)).scalar()
    run_cycle(cfg, now)
    with store.engine.connect() as c:
        after = c.execute(sa.select(goal_results).order_by("goal", "size_seconds", "window_start")).all()
        assert c.execute(sa.select(sa.func.count()).select_from(goal_segments)).scalar() == nseg
        runs = c.execute(sa.select(job_runs.c.job, sa.func.count()).where(job_runs.c.window_start == START + timedelta(days=19))
                         .group_by(job_runs.c.job)).all()
    strip = lambda rows: [tuple(v for k, v in r._mapping.items() if k != "computed_at") for r in rows]  # noqa: E731
    assert strip(before) == strip(after)
    assert dict(runs)["goal:bad_rate"] == 2  # recompute: the last windows run again, and are replaced, not added


def test_a_window_and_the_run_that_computed_it_are_stored_together_or_not_at_all(tmp_path):
    """The run is closed in the save's own transaction: a process killed between the two cannot
    leave a stored window whose run is then closed as abandoned. A save that fails leaves no window
    and the run open (for its process, or the next, to close as failed); one that commits closes it."""
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    t1 = t0 + timedelta(days=1)
    run = store.start_job("goal:g", t0, t1, t0)
    broken = GoalWindow("g", 86400, t0, t1, 0.5, segments=[{"segment": "x", "value": 1.0}] * 2)  # one key twice
    with pytest.raises(sa.exc.SQLAlchemyError):
        store.save_goal_window(broken, t1, closes=closing(run, "ok", t1, 1.5, rows_read=7))
    assert [(r["status"], r["rows_read"]) for r in store.job_runs("goal:g")] == [("running", None)]
    assert not store.goal_windows("g", 86400)
    store.save_goal_window(GoalWindow("g", 86400, t0, t1, 0.5), t1, closes=closing(run, "ok", t1, 1.5, rows_read=7))
    assert [(r["status"], r["rows_read"]) for r in store.job_runs("goal:g")] == [("ok", 7)]
    assert list(store.goal_windows("g", 86400)) == [t0]


@pytest.mark.slow
def test_catch_up_fills_every_missed_window_and_then_only_recomputes_the_tail(world):
    _, cfg = world
    store = Store(cfg.store_url)
    run_cycle(cfg, START + timedelta(days=5))
    assert len(store.goal_windows("bad_rate", 86400)) == 5
    run_cycle(cfg, START + timedelta(days=12, hours=3))  # after a week of downtime
    assert sorted(store.goal_windows("bad_rate", 86400)) == [START + timedelta(days=i) for i in range(12)]


def test_segments_beyond_the_cap_are_summed_as_other_and_add_up(world):
    df, cfg = world
    run_cycle(cfg, START + timedelta(days=2))
    store = Store(cfg.store_url)
    with store.engine.connect() as c:
        segs = c.execute(sa.select(goal_segments).where(goal_segments.c.goal == "bad_by_country",
                                                         goal_segments.c.size_seconds == 86400,
                                                         goal_segments.c.window_start == START)).all()
    day = df[(df.ts >= "2026-09-01") & (df.ts < "2026-09-02")]
    counts = day.country.value_counts()
    names = {s.segment for s in segs}
    assert len(segs) == 6 and "other" in names
    # the five largest by rows, ties broken by name; the rest summed as `other`
    largest = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    assert names - {"other"} == set(largest)
    for s in segs:
        if s.segment != "other":
            assert (s.denominator, s.numerator) == (counts[s.segment], day.bad[day.country == s.segment].sum())
    assert sum(s.denominator for s in segs) == len(day)
    assert sum(s.numerator for s in segs) == day.bad.sum()
    other = next(s for s in segs if s.segment == "other")
    assert other.denominator == len(day) - sum(s.denominator for s in segs if s.segment != "other")


def _wilson_status(bad: int, n: int, target: float) -> str:
    """A window's status by SciPy's Wilson interval: too few to tell while the interval holds the target."""
    ci = binomtest(int(bad), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    if ci.low <= target <= ci.high:
        return "insufficient_data"
    return "met" if bad / n <= target else "missed"


def _projected_status(points: list[tuple[datetime, float]], target: float, deadline: datetime) -> str:
    """An at_least goal without a baseline: off track when the Theil-Sen line (flat at the median when
    SciPy's 95 % interval of its slope holds zero) misses the target at the deadline."""
    xs = [(t - points[0][0]).total_seconds() / 86400 for t, _ in points]
    ys = [v for _, v in points]
    slope, intercept, low, high = theilslopes(ys, xs, alpha=0.95)
    if not (low > 0 or high < 0):
        slope, intercept = 0.0, float(np.median(ys))
    projected = intercept + slope * (deadline - points[0][0]).total_seconds() / 86400
    return "on_track" if projected >= target else "off_track"


@pytest.mark.slow
def test_status_met_flag_and_trajectory_are_stored(world):
    df, cfg = world
    run_cycle(cfg, START + timedelta(days=20))
    store = Store(cfg.store_url)
    days = oracle(df, "D")
    statuses = set()
    for r in store.goal_series("bad_rate", 86400):
        assert r["met"] == (r["value"] <= 0.01)
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        day = days.loc[pd.Timestamp(r["window_start"].replace(tzinfo=None))]
        assert r["status"] == _wilson_status(day.bad, day.n, 0.01), r["window_start"]
        statuses.add(r["status"])
    assert len(statuses) > 1, statuses  # the days differ, so a constant status would not pass
    traj = {t["goal"]: t for t in store.latest_trajectories()}
    weekly = [r for r in store.goal_series("minutes", 7 * 86400) if r["value"] is not None and not r["provisional"]]
    assert len(weekly) >= 3  # fitted on the weekly windows
    points = [(r["window_end"], r["value"]) for r in weekly][-8:]
    deadline = datetime(2027, 3, 31, tzinfo=UTC)
    assert traj["minutes"]["status"] == _projected_status(points, 100, deadline)
    assert traj["minutes"]["points"] == len(points)
    assert traj["bad_rate"]["planned"] is not None


BAD_SHAPES = {
    "no_value": ("SELECT 1 AS v", "no `value` column"),
    "text": ("SELECT 'high' AS value", "expected a number"),
    "two_rows": ("SELECT 1 AS value UNION ALL SELECT 2 AS value", "2 rows without a `segment`"),
    "syntax": ("SELEC value FROM events", "syntax"),
    "no_table": ("SELECT value FROM absent_table", "absent_table"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
def test_a_broken_goal_fails_alone_recorded_with_its_error_and_the_others_go_on(tmp_path, db_url, case, capsys):
    make_events(db_url, days=3)
    sql, message = BAD_SHAPES[case]
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "broken.sql").write_text(sql)
    cfg_path = write_config(tmp_path, db_url, extra=(
        "  - {name: broken, sql: sql/broken.sql, direction: at_most, target: 1, start: 2026-09-01}\n"))
    assert main(["run-once", "--config", cfg_path, "--now", "2026-09-03"]) == 1
    err = capsys.readouterr().err
    assert "goal:broken" in err and message.lower() in err.lower()
    store = Store(load_config(cfg_path).store_url)
    failed = [r for r in store.job_runs("goal:broken") if r["status"] == "failed"]
    assert failed and message.lower() in failed[0]["error"].lower()
    assert store.goal_windows("broken", 86400) == {}
    assert len(store.goal_windows("bad_rate", 86400)) == 2


@pytest.mark.slow
def test_run_once_prints_the_goal_table_and_json(world, capsys):
    df, cfg = world
    path = str(cfg.path)
    assert main(["run-once", "--config", path, "--now", "2026-09-15"]) == 0
    out = capsys.readouterr().out
    assert "bad_rate" in out and "2026-09-14 .. 2026-09-15" in out and "trajectory" in out
    assert main(["run-once", "--config", path, "--now", "2026-09-15", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    row = next(g for g in doc["goals"] if g["goal"] == "bad_rate")
    day = oracle(df, "D").loc[pd.Timestamp("2026-09-14")]
    assert row["window_end"].startswith("2026-09-15") and row["status"] == _wilson_status(day.bad, day.n, 0.01)


def test_a_database_that_is_down_fails_the_jobs_with_a_clear_message(tmp_path, capsys):
    cfg_path = write_config(tmp_path, "postgresql+psycopg2://nobody@127.0.0.1:1/none",
                            extra=f"results_url: sqlite:///{tmp_path / 'results.db'}\n")
    assert main(["run-once", "--config", cfg_path, "--now", "2026-09-03"]) == 1
    err = capsys.readouterr().err
    assert "connection" in err.lower() and "Traceback" not in err
    assert main(["check", "--config", cfg_path]) == 2  # check itself cannot run: like a usage error
    assert "cannot connect" in capsys.readouterr().err


def test_check_finds_missing_columns_and_broken_sql_without_storing(tmp_path, db_url, capsys):
    make_events(db_url, days=1)
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "novalue.sql").write_text("SELECT COUNT(*) AS n FROM events WHERE ts >= :window_start AND ts < :window_end")
    cfg_path = write_config(tmp_path, db_url, extra="  - {name: novalue, sql: sql/novalue.sql, direction: at_most, target: 1, start: 2026-09-01}\n" + textwrap.dedent("""\
        models:
          - name: m
            task: binary_classification
            start: 2026-09-01
            source: {table: events, id: id, timestamp: ts, score: scoore, features: {numeric: [minutes]}}
        """))
    assert main(["check", "--config", cfg_path]) == 2
    err = capsys.readouterr().err
    assert "models[0](m).source.score: column scoore not in table events" in err
    assert "goals[3](novalue)" in err and "no `value` column" in err
    assert not sa.inspect(sa.create_engine(db_url)).has_table("monitor_goal_results")


def test_a_goal_sql_that_hangs_is_cut_by_the_statement_timeout_and_the_others_go_on(tmp_path, db_url, capsys):
    make_events(db_url, days=2)
    (tmp_path / "sql").mkdir()
    hang = ("SELECT pg_sleep(60) IS NULL AS slept, 1 AS value" if db_url.startswith("postgresql")
            else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) AS value FROM c")
    (tmp_path / "sql" / "hang.sql").write_text(hang)
    cfg_path = write_config(tmp_path, db_url, extra=(
        "  - {name: hang, sql: sql/hang.sql, direction: at_most, target: 1, start: 2026-09-01}\n"
        "statement_timeout: 1s\n"))
    assert main(["run-once", "--config", cfg_path, "--now", "2026-09-03"]) == 1
    err = capsys.readouterr().err
    assert "goal:hang" in err and "timeout" in err.lower()
    store = Store(load_config(cfg_path).store_url)
    assert store.goal_windows("hang", 86400) == {}
    assert len(store.goal_windows("bad_rate", 86400)) == 2


@pytest.mark.parametrize("spelling", ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S+00:00", "%Y-%m-%d"])
def test_daily_windows_hold_the_right_rows_however_sqlite_spells_the_timestamps(tmp_path, spelling):
    """SQLite compares text: a row at midnight belongs to the day it starts, in every common spelling."""
    from monitor.db import bind_time
    from monitor.windows import Window

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    moments = [datetime(2026, 9, 1, 0, 0), datetime(2026, 9, 1, 23, 59, 59), datetime(2026, 9, 2, 0, 0), datetime(2026, 9, 2, 12, 0)]
    if spelling == "%Y-%m-%d":
        moments = [m for m in moments if m.hour == 0 and m.minute == 0]
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (ts TEXT)"))
        c.execute(sa.text("INSERT INTO t VALUES (:ts)"), [{"ts": m.strftime(spelling)} for m in moments])
        for day in (1, 2):
            w = Window(datetime(2026, 9, day, tzinfo=UTC), datetime(2026, 9, day + 1, tzinfo=UTC))
            got = c.execute(sa.text("SELECT COUNT(*) FROM t WHERE ts >= :a AND ts < :b"),
                            {"a": bind_time(c, w.start), "b": bind_time(c, w.end)}).scalar()
            assert got == sum(1 for m in moments if m.day == day)


@pytest.mark.parametrize("spelling", ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S",
                                      "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S+00:00"])
def test_hourly_windows_hold_the_right_rows_when_bound_like_a_stored_timestamp(tmp_path, spelling):
    """Off midnight, a bound spelled like the column's values (`like`) sorts right against them."""
    from monitor.db import bind_time
    from monitor.windows import Window

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    moments = [datetime(2026, 9, 1, 4, 0) + timedelta(minutes=20 * i, microseconds=250_000 * (i % 2)) for i in range(12)]
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (ts TEXT)"))
        c.execute(sa.text("INSERT INTO t VALUES (:ts)"), [{"ts": m.strftime(spelling)} for m in moments])
        like = c.execute(sa.text("SELECT ts FROM t LIMIT 1")).scalar()
        for hour in range(4, 8):
            w = Window(datetime(2026, 9, 1, hour, tzinfo=UTC), datetime(2026, 9, 1, hour + 1, tzinfo=UTC))
            got = c.execute(sa.text("SELECT COUNT(*) FROM t WHERE ts >= :a AND ts < :b"),
                            {"a": bind_time(c, w.start, like), "b": bind_time(c, w.end, like)}).scalar()
            assert got == sum(1 for m in moments if m.hour == hour), hour
