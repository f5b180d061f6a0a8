"""`monitor check` against real databases (SQLite and PostgreSQL): goal SQL on its latest due
window, settings, id-like features, the results store. Nothing is stored."""
import textwrap

import pytest
import sqlalchemy as sa

from monitor.cli import main
from monitor.config import ConfigError, load_config

from test_goal_jobs import make_events, write_config

NOW = "2026-09-10"  # make_events fills 2026-09-01 .. 2026-09-21; the latest due window is 2026-09-09
WINDOWED = "FROM events WHERE ts >= :window_start AND ts < :window_end"


def _with_goal(tmp_path, url, sql, settings="direction: at_most, target: 0.5", extra=""):
    (tmp_path / "sql").mkdir(exist_ok=True)
    (tmp_path / "sql" / "probe.sql").write_text(sql)
    return write_config(tmp_path, url, extra=f"  - {{name: probe, sql: sql/probe.sql, start: 2026-09-01, {settings}}}\n" + extra)


def _check(path, capsys):
    code = main(["check", "--config", path, "--now", NOW])
    out = capsys.readouterr()
    return code, out.out, out.err


WRONG = {
    # each returns the right shape on an empty window, the wrong one on a window with rows
    "two_rows": (f"SELECT bad AS value {WINDOWED}", "rows without a `segment` column"),
    "text_value": (f"SELECT MAX(country) AS value {WINDOWED}", "expected a number"),
    "contradiction": (f"SELECT 0.5 AS value, SUM(bad) AS numerator, COUNT(*) AS denominator {WINDOWED}",
                      "contradicts numerator / denominator"),
    "ratio_above_one": (f"SELECT 1.0 * COUNT(*) AS value {WINDOWED}", "outside [0, 1]"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_check_runs_goal_sql_on_its_latest_due_window_and_reports_wrong_shapes(tmp_path, db_url, capsys, case):
    make_events(db_url)
    sql, message = WRONG[case]
    code, _, err = _check(_with_goal(tmp_path, db_url, sql), capsys)
    assert code == 2
    line = next(x for x in err.splitlines() if x.startswith("error:") and "goals[3](probe)" in x)
    assert message in line and "[2026-09-09, 2026-09-10)" in line
    assert not [x for x in err.splitlines() if x.startswith("error:") and "probe" not in x]
    assert not sa.inspect(sa.create_engine(db_url)).has_table("monitor_goal_results")


def test_check_passes_good_goals_and_warns_on_sql_that_ignores_the_window(tmp_path, db_url, capsys):
    make_events(db_url)
    code, out, err = _check(_with_goal(tmp_path, db_url, "SELECT AVG(minutes) AS value FROM events",
                                       "unit: minutes, direction: at_least, target: 100"), capsys)
    assert code == 0 and "ok: 4 goals" in out and "1 warning" in out
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "goals[3](probe).sql" in warnings[0] and "never uses the window parameters" in warnings[0]


def test_a_goal_over_epoch_seconds_passes_check(tmp_path, db_url, capsys):
    make_events(db_url)
    with sa.create_engine(db_url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE epochs (t BIGINT, bad INTEGER)"))
        conn.execute(sa.text("INSERT INTO epochs VALUES (1788955200, 1), (1788955300, 0)"))  # 2026-09-09
    sql = ("SELECT 1.0 * SUM(bad) / NULLIF(COUNT(*), 0) AS value, SUM(bad) AS numerator, COUNT(*) AS denominator "
           "FROM epochs WHERE t >= :window_start_epoch AND t < :window_end_epoch")
    code, out, err = _check(_with_goal(tmp_path, db_url, sql), capsys)
    assert code == 0, err
    assert "warning" not in err


@pytest.mark.parametrize("settings,key", [
    ("direction: at_most, target: 5", "target: 5 is outside [0, 1]"),
    ("direction: at_most, target: -0.1", "target: -0.1 is outside [0, 1]"),
    ("direction: at_most, target: 0.1, baseline: {value: 1.5, at: 2026-09-01}", "baseline.value: 1.5 is outside [0, 1]"),
    ("direction: at_most, target: 0.1, deadline: 2026-08-01", "deadline: 2026-08-01 is not after start"),
    ("direction: at_most, target: 0.1, deadline: 2026-12-01, baseline: {value: 0.2, at: 2027-01-01}",
     "baseline.at: 2027-01-01 is not before the deadline"),
])
def test_plainly_wrong_goal_settings_are_config_errors(tmp_path, settings, key, capsys):
    path = _with_goal(tmp_path, "sqlite:///x.db", f"SELECT 1 AS value {WINDOWED}", settings)
    with pytest.raises(ConfigError, match=r"goals\[3\]\(probe\)") as e:
        load_config(path)
    assert key in str(e.value)
    assert main(["check", "--config", path]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_suspicious_goal_settings_are_warnings_of_check(tmp_path, db_url, capsys):
    make_events(db_url)
    path = _with_goal(tmp_path, db_url, f"SELECT AVG(minutes) AS value {WINDOWED}",
                      "unit: minutes, direction: at_least, target: -5, deadline: 2026-09-05")
    code, _, err = _check(path, capsys)
    assert code == 0
    assert "goals[3](probe).target: -5 is negative" in err
    assert "goals[3](probe).deadline: 2026-09-05 has passed" in err


def test_check_warns_on_a_categorical_feature_that_looks_like_an_id(tmp_path, db_url, capsys):
    make_events(db_url)
    with sa.create_engine(db_url).begin() as conn:
        conn.execute(sa.text("ALTER TABLE events ADD COLUMN session_key VARCHAR(40)"))
        conn.execute(sa.text("UPDATE events SET session_key = 's' || CAST(id AS VARCHAR(20))"))
    path = write_config(tmp_path, db_url, extra=textwrap.dedent("""\
        models:
          - name: m
            task: regression
            start: 2026-09-01
            source: {table: events, id: id, timestamp: ts, score: minutes,
                     features: {categorical: [country, session_key]}}
        """))
    code, _, err = _check(path, capsys)
    assert code == 0, err
    warnings = [x for x in err.splitlines() if "looks like an id" in x]
    assert len(warnings) == 1 and "models[0](m).source.features.categorical: session_key" in warnings[0]


def test_check_tries_the_results_store_and_says_so_in_one_line(tmp_path, db_url, capsys):
    make_events(db_url, days=1)
    path = write_config(tmp_path, db_url, extra="results_url: postgresql+psycopg2://nobody@127.0.0.1:1/none\n")
    code = main(["check", "--config", path, "--now", "2026-09-02"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "results_url: cannot connect" in err


@pytest.mark.parametrize("kind,values,expected", [
    ("epoch_ms", "(1, 1788955200123), (2, 1788955300456)", "holds epoch_ms (e.g. 1788955"),
    ("iso", "(1, '2026-09-09T02:16:50+03:00'), (2, '2026-09-09T05:00:00+03:00')", "holds iso (e.g. 2026-09-09T"),
])
def test_check_prints_the_format_of_each_model_timestamp_column(tmp_path, db_url, capsys, kind, values, expected):
    make_events(db_url, days=1)
    coltype = "BIGINT" if kind == "epoch_ms" else "VARCHAR(40)"
    with sa.create_engine(db_url).begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE preds (id INTEGER, at {coltype}, s FLOAT)"))
        conn.execute(sa.text(f"INSERT INTO preds (id, at) VALUES {values}"))
    path = write_config(tmp_path, db_url, extra=textwrap.dedent("""\
        models:
          - {name: m, task: regression, start: 2026-09-01, source: {table: preds, id: id, timestamp: at, score: s}}
        """))
    code, out, err = _check(path, capsys)
    assert code == 0, err
    assert f"models[0](m).source.timestamp: preds.at {expected}" in out


def test_check_reports_a_timestamp_column_that_mixes_kinds_as_an_error(tmp_path, db_url, capsys):
    make_events(db_url, days=1)
    with sa.create_engine(db_url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE preds (id INTEGER, at BIGINT, s FLOAT)"))
        conn.execute(sa.text("INSERT INTO preds (id, at) VALUES (1, 1788955200), (2, 1788955300456)"))
    path = write_config(tmp_path, db_url, extra=textwrap.dedent("""\
        models:
          - {name: m, task: regression, start: 2026-09-01, source: {table: preds, id: id, timestamp: at, score: s}}
        """))
    code, _, err = _check(path, capsys)
    assert code == 2
    assert "models[0](m).source.timestamp" in err and "Traceback" not in err


def test_drift_alert_features_must_be_features_of_the_model(tmp_path, capsys):
    path = write_config(tmp_path, "sqlite:///x.db", extra=textwrap.dedent("""\
        models:
          - name: m
            task: regression
            start: 2026-09-01
            source: {table: events, id: id, timestamp: ts, score: minutes, features: {numeric: [minutes], categorical: [country]}}
            drift: {alert_features: [country, contry]}
        """))
    assert main(["check", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "models[0](m)" in err and "drift.alert_features: contry not among the model's source.features" in err
    assert "Traceback" not in err
    text = open(path).read().replace("[country, contry]", "[country]")
    open(path, "w").write(text)
    assert load_config(path).models[0].drift.alert_features == ["country"]
