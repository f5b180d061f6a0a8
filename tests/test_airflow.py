"""The example DAG in a real Airflow 3 (its own venv, metadata in SQLite): each DAG run scores its
day, then the operator computes that day's windows; catch-up and reruns store each window once,
with the numbers `monitor backfill` stores; a broken goal fails the task, the rest is stored."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from monitor.cli import main
from monitor.config import load_config
from monitor.store import Store, goal_results, model_metrics, model_windows
from test_modeljobs import CATEGORICAL, NUMERIC, REF_DAYS, make_world, utc
from venvs import ROOT, cached_venv

pytestmark = pytest.mark.slow  # a venv of their own, built once and cached

AIRFLOW = ["apache-airflow==3.3.2"]
DAG_FILE = ROOT / "examples" / "airflow" / "monitor_dag.py"

SCORE = """\
import os, sys
from datetime import datetime
import sqlalchemy as sa
# the batch scoring of the interval: its rows move from the staging table to the prediction log
start, end = (datetime.fromisoformat(os.environ[k]).replace(tzinfo=None).isoformat(" ") for k in ("START", "END"))
eng = sa.create_engine(sys.argv[1])
with eng.begin() as c:
    c.execute(sa.text("DELETE FROM preds WHERE at >= :s AND at < :e"), {"s": start, "e": end})
    n = c.execute(sa.text("INSERT INTO preds SELECT * FROM staged WHERE at >= :s AND at < :e"), {"s": start, "e": end}).rowcount
print(f"scored {n} rows of [{start}, {end})")
"""

DRIVE = """\
import importlib.util, json, sqlite3, sys
from datetime import datetime
spec = importlib.util.spec_from_file_location("monitor_dag", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
out = []
for day in sys.argv[3:]:
    dr = mod.dag.test(logical_date=datetime.fromisoformat(day))
    xcom = sqlite3.connect(sys.argv[2]).execute(
        "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'monitor'", (dr.dag_id, dr.run_id)).fetchall()
    out.append({"state": str(dr.state), "interval": [dr.data_interval_start.isoformat(), dr.data_interval_end.isoformat()],
                "tasks": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()},
                "xcom": {k: json.loads(v) for k, v in xcom}})
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="session")
def airflow_venv():
    return cached_venv("airflow", AIRFLOW, with_project=True)


def _env(airflow_venv, home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PATH": f"{airflow_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


@pytest.fixture(scope="session")
def airflow_db(airflow_venv, tmp_path_factory):
    """Airflow's metadata database, migrated once (SQLite); each test works on a copy."""
    home = tmp_path_factory.mktemp("airflow-template")
    out = subprocess.run([str(airflow_venv / "bin" / "airflow"), "db", "migrate"], env=_env(airflow_venv, home),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return home / "airflow.db"


@pytest.fixture
def airflow(airflow_venv, airflow_db, tmp_path):
    """A fresh Airflow home (SQLite metadata) whose DAG folder is examples/airflow, and a world to monitor."""
    src = f"sqlite:///{tmp_path / 'source.db'}"
    make_world(src, days=9, table="staged", drift_from=6)
    eng = sa.create_engine(src)
    with eng.begin() as c:  # the reference days were scored before the DAG started
        c.execute(sa.text("CREATE TABLE preds AS SELECT * FROM staged WHERE 0"))
        c.execute(sa.text("INSERT INTO preds SELECT * FROM staged WHERE at < :e"), {"e": utc(REF_DAYS).replace(tzinfo=None).isoformat(" ")})
    eng.dispose()
    (tmp_path / "rate.sql").write_text("SELECT AVG(pred) AS value, SUM(pred) AS numerator, COUNT(*) AS denominator "
                                       "FROM preds WHERE at >= :window_start AND at < :window_end")
    (tmp_path / "broken.sql").write_text("SELECT value FROM no_such_table WHERE :window_start < :window_end")
    (tmp_path / "monitor.yaml").write_text(textwrap.dedent(f"""\
        database_url: {src}
        results_url: sqlite:///{tmp_path / 'results.db'}
        models:
          - name: scorer
            task: binary_classification
            window: 1d
            start: {utc(REF_DAYS).isoformat()}
            source: {{table: preds, id: pid, timestamp: at, score: score, prediction: pred,
                      features: {{numeric: {NUMERIC}, categorical: {CATEGORICAL}}}}}
            labels: {{table: labels, id: pid, label: y, max_delay: 0d}}
            reference: {{start: {utc(0).isoformat()}, end: {utc(REF_DAYS).isoformat()}}}
        goals:
          - {{name: approval_rate, sql: rate.sql, direction: at_most, target: 0.5, start: {utc(REF_DAYS).isoformat()}, review: null}}
          - {{name: broken, sql: broken.sql, direction: at_most, target: 1, start: {utc(REF_DAYS).isoformat()}, review: null}}
        """))
    (tmp_path / "score.py").write_text(SCORE)
    (tmp_path / "drive.py").write_text(DRIVE)
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copy(airflow_db, home / "airflow.db")
    env = _env(airflow_venv, home)
    env.update({
        "MONITOR_CONFIG": str(tmp_path / "monitor.yaml"), "MONITOR_ONLY": "scorer,approval_rate",
        "MONITOR_DAG_START": utc(REF_DAYS).isoformat(), "MONITOR_RETRIES": "0",
        "SCORING_COMMAND": f"{airflow_venv / 'bin' / 'python'} {tmp_path / 'score.py'} {src}",
    })

    def run(*days, **extra_env):
        """dag.test() of each logical date in turn (each one's data interval is the day before it)."""
        out = subprocess.run([str(airflow_venv / "bin" / "python"), str(tmp_path / "drive.py"), str(DAG_FILE),
                              str(home / "airflow.db"), *(utc(d).isoformat() for d in days)],
                             env={**env, **extra_env}, capture_output=True, text=True, timeout=600)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        assert out.returncode == 0 and line, (out.stdout[-3000:], out.stderr[-5000:])
        return json.loads(line[len("RESULT "):])

    return run, tmp_path


def _stored(url: str) -> dict:
    """Every result row of the store, without the clock of its computation."""
    eng = sa.create_engine(url)
    with eng.connect() as c:
        got = {
            "windows": sorted(tuple(r) for r in c.execute(sa.select(
                model_windows.c.model, model_windows.c.window_start, model_windows.c.rows, model_windows.c.drift_share,
                model_windows.c.quality_status, model_windows.c.label_coverage))),
            "metrics": sorted(tuple(r) for r in c.execute(sa.select(model_metrics))),
            "goals": sorted(tuple(r) for r in c.execute(sa.select(
                goal_results.c.goal, goal_results.c.window_start, goal_results.c.value, goal_results.c.status))),
        }
    eng.dispose()
    return got


def test_the_dag_stores_each_interval_once_as_backfill_would(airflow, tmp_path):
    run, home = airflow
    # catch-up: the runs of three days in turn; then one of them again (a backfill or a cleared run)
    runs = run(REF_DAYS + 1, REF_DAYS + 2, REF_DAYS + 3) + run(REF_DAYS + 2)
    assert [r["state"] for r in runs] == ["success"] * 4, runs
    assert all(r["tasks"] == {"score": "success", "monitor": "success"} for r in runs)
    assert [r["interval"][1][:10] for r in runs] == [utc(d).date().isoformat() for d in (4, 5, 6, 5)]
    # the summary in XCom: the run's own day, of the model and of the goal
    summary = runs[1]["xcom"]["return_value"]
    assert summary["now"].startswith(utc(5).date().isoformat())
    assert sorted((c["job"], c["window_start"][:10]) for c in summary["computed"]) == [
        ("goal:approval_rate", utc(4).date().isoformat()), ("model:scorer", utc(4).date().isoformat())]
    assert summary["failed"] == [] and summary["goals"]["approval_rate"]["value"] is not None
    assert "broken" not in summary["goals"]

    cfg = load_config(home / "monitor.yaml")
    store = Store(cfg.store_url)
    days = [utc(d) for d in (3, 4, 5)]
    assert sorted(store.model_windows_done("scorer")) == days  # each day once, none after the last interval
    assert sorted(store.goal_windows("approval_rate", 86400)) == days
    eng = sa.create_engine(cfg.database_url)
    with eng.connect() as c:  # each window saw the rows its run scored
        for w in store.model_series("scorer"):
            n = c.execute(sa.text("SELECT COUNT(*) FROM staged WHERE at >= :s AND at < :e"),
                          {"s": w["window_start"].replace(tzinfo=None).isoformat(" "),
                           "e": w["window_end"].replace(tzinfo=None).isoformat(" ")}).scalar()
            assert w["rows"] == n > 0
    eng.dispose()
    ok = [(r["job"], r["window_start"]) for r in store.job_runs() if r["status"] == "ok"]
    assert sorted(ok) == sorted([("model:scorer", d) for d in days] + [("goal:approval_rate", d) for d in days]
                                + [("model:scorer", utc(4)), ("goal:approval_rate", utc(4))])  # the rerun's day, again

    # the oracle: `monitor backfill` of the same days into a fresh store stores the same numbers
    oracle = home / "oracle.yaml"
    oracle.write_text((home / "monitor.yaml").read_text().replace("results.db", "oracle.db"))
    assert main(["backfill", "--config", str(oracle), "--from", utc(3).isoformat(), "--to", utc(6).isoformat(),
                 "--only", "scorer", "approval_rate"]) == 0
    assert _stored(cfg.store_url) == _stored(load_config(oracle).store_url)


def test_a_broken_goal_fails_the_task_and_the_others_are_stored(airflow):
    run, home = airflow
    (bad,) = run(REF_DAYS + 1, MONITOR_ONLY="scorer,approval_rate,broken")
    assert bad["state"] == "failed" and bad["tasks"] == {"score": "success", "monitor": "failed"}
    summary = bad["xcom"]["summary"]
    assert [f["job"] for f in summary["failed"]] == ["goal:broken"] and "no_such_table" in summary["failed"][0]["error"]
    store = Store(load_config(home / "monitor.yaml").store_url)
    assert sorted(store.model_windows_done("scorer")) == [utc(3)]
    assert sorted(store.goal_windows("approval_rate", 86400)) == [utc(3)]
    assert [r["status"] for r in store.job_runs("goal:broken")] == ["failed"]
    # fixed, the next run retries it and succeeds
    (home / "broken.sql").write_text("SELECT AVG(pred) AS value FROM preds WHERE at >= :window_start AND at < :window_end")
    (good,) = run(REF_DAYS + 1, MONITOR_ONLY="scorer,approval_rate,broken")
    assert good["state"] == "success", good
    assert sorted(store.goal_windows("broken", 86400)) == [utc(3)]
    # a name the config does not have fails the task before anything runs
    (unknown,) = run(REF_DAYS + 2, MONITOR_ONLY="scorer,nope")
    assert unknown["state"] == "failed" and unknown["tasks"]["monitor"] == "failed"
    assert sorted(store.model_windows_done("scorer")) == [utc(3)]


def test_the_operator_says_how_to_install_airflow_where_it_is_missing():
    out = subprocess.run([sys.executable, "-c", "import monitor.integrations.airflow"], capture_output=True, text=True)
    assert out.returncode != 0 and "pip install 'monitor[airflow]'" in out.stderr
