"""Model versions against a real MLflow tracking server (its own venv, SQLite backend, loopback):
two versions registered and promoted in turn; the alias's version, run and validation metrics
read through `monitor metrics`; floors relative to the validation metric; results by the log's
version column checked against scikit-learn."""
import json
import os
import re
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monitor.cli import main
from monitor.config import load_config
from monitor.store import Store
from test_cli import samples
from test_modeljobs import REF_DAYS, make_world, rows_in, utc
from monitor.windows import Window
from venvs import cached_venv

pytestmark = pytest.mark.slow  # a venv of their own, built once and cached

MLFLOW = ["mlflow==3.17.2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on loopback with a SQLite backend store, for the session."""
    venv = cached_venv("mlflow", MLFLOW)
    d = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW", "VIRTUAL_ENV"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    log = open(d / "server.log", "w")
    proc = subprocess.Popen([str(venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
                             "--default-artifact-root", str(d / "artifacts"), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mlflow server did not start:\n{(d / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # its workers did not stop in time
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    log.close()


def _post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def register(url: str, name: str, metrics: dict[str, float]) -> tuple[str, str]:
    """A training run that logs validation metrics, registered as a new version of `name`: (version, run id)."""
    now = int(time.time() * 1000)
    run = _post(url, "runs/create", {"experiment_id": "0", "start_time": now, "run_name": f"train-{name}"})["run"]
    run_id = run["info"]["run_id"]
    for k, v in metrics.items():
        _post(url, "runs/log-metric", {"run_id": run_id, "key": k, "value": v, "timestamp": now, "step": 0})
    try:
        _post(url, "registered-models/create", {"name": name})
    except urllib.error.HTTPError as e:  # exists already
        assert e.code == 400, e.read()
    mv = _post(url, "model-versions/create", {"name": name, "source": f"{run['info']['artifact_uri']}/model", "run_id": run_id})
    return mv["model_version"]["version"], run_id


def promote(url: str, name: str, alias: str, version: str) -> None:
    _post(url, "registered-models/alias", {"name": name, "alias": alias, "version": version})


@pytest.fixture
def world(tmp_path, mlflow_server):
    """Days 0-2 the reference; v1 scores days 3-5, day 6 is the rollout (half each), v2 scores day 7."""
    src = f"sqlite:///{tmp_path / 'src.db'}"
    df = make_world(src, days=8)
    day = (df["at"] - utc(0).replace(tzinfo=None)).dt.days
    rng = np.random.default_rng(3)
    df["model_version"] = np.where(day < 6, "1", np.where(day > 6, "2", np.where(rng.random(len(df)) < 0.5, "1", "2")))
    import sqlalchemy as sa
    eng = sa.create_engine(src)
    df.drop(columns=["y"]).to_sql("preds", eng, index=False, if_exists="replace", chunksize=5000)
    eng.dispose()
    name = "scorer_" + re.sub(r"[^A-Za-z0-9]", "_", tmp_path.name)
    (tmp_path / "monitor.yaml").write_text(textwrap.dedent(f"""\
        database_url: {src}
        results_url: sqlite:///{tmp_path / 'results.db'}
        models:
          - name: scorer
            task: binary_classification
            window: 1d
            start: {utc(REF_DAYS).isoformat()}
            source: {{table: preds, id: pid, timestamp: at, score: score, prediction: pred, version: model_version,
                      features: {{numeric: [n_stable, n_shift], categorical: [k_stable]}}}}
            labels: {{table: labels, id: pid, label: y, max_delay: 0d}}
            reference: {{start: {utc(0).isoformat()}, end: {utc(REF_DAYS).isoformat()}}}
            quality: {{roc_auc: {{min: {{below_validation: 0.05}}}}, recall: {{min: 0.1}}}}
            mlflow: {{tracking_uri: "{mlflow_server}", name: {name}, alias: champion}}
        """))
    return df, str(tmp_path / "monitor.yaml"), name


def _metrics(config, capsys) -> dict:
    capsys.readouterr()
    assert main(["metrics", "--config", config]) == 0
    return samples(capsys.readouterr().out)


def test_two_versions_promoted_in_turn_are_read_through_metrics(world, mlflow_server, capsys):
    df, config, name = world
    v1, run1 = register(mlflow_server, name, {"val_roc_auc": 0.70, "val_log_loss": 0.5})
    promote(mlflow_server, name, "champion", v1)
    assert main(["run-once", "--config", config, "--now", utc(6).isoformat()]) == 0
    got = _metrics(config, capsys)
    info = {k: v for k, v in got.items() if k[0] == "monitor_model_version_info"}
    assert info == {("monitor_model_version_info", (("model", "scorer"), ("run_id", run1), ("version", v1))): 1.0}
    assert got[("monitor_model_validation", (("metric", "val_roc_auc"), ("model", "scorer")))] == 0.70
    # the floor follows the version: 0.70 - 0.05
    assert got[("monitor_model_quality_threshold", (("bound", "min"), ("metric", "roc_auc"), ("model", "scorer")))] == pytest.approx(0.65)
    assert got[("monitor_model_quality_threshold", (("bound", "min"), ("metric", "recall"), ("model", "scorer")))] == 0.1

    v2, run2 = register(mlflow_server, name, {"val_roc_auc": 0.99})
    assert v2 != v1
    promote(mlflow_server, name, "champion", v2)
    assert main(["run-once", "--config", config, "--now", utc(8).isoformat()]) == 0
    got = _metrics(config, capsys)
    info = {k: v for k, v in got.items() if k[0] == "monitor_model_version_info"}
    assert info == {("monitor_model_version_info", (("model", "scorer"), ("run_id", run2), ("version", v2))): 1.0}
    assert got[("monitor_model_quality_threshold", (("bound", "min"), ("metric", "roc_auc"), ("model", "scorer")))] == pytest.approx(0.94)

    # each window keeps the version that was current when it was the latest, and is judged by its floor
    store = Store(load_config(config).store_url)
    rows = store.model_metrics("scorer")
    versions = {r["window_start"]: (f"{r['value']:g}", r["method"]) for r in rows if r["kind"] == "version"}
    assert versions == {utc(5): (v1, run1), utc(7): (v2, run2)}
    for d, floor in ((5, 0.65), (7, 0.94)):
        q = next(r for r in rows if r["window_start"] == utc(d) and r["kind"] == "quality" and r["name"] == "roc_auc" and not r["segment"])
        sub = rows_in(df, Window(utc(d), utc(d + 1)))
        labelled = sub[sub.pid.isin(_labelled(config))]
        assert q["value"] == pytest.approx(roc_auc_score(labelled.y, labelled.score), abs=1e-12)
        assert q["threshold"] == pytest.approx(floor) and q["detected"] == (q["value"] < floor)
    assert any(r["detected"] for r in rows if r["kind"] == "quality" and r["name"] == "roc_auc" and r["window_start"] == utc(7))


def _labelled(config) -> set:
    import sqlalchemy as sa

    eng = sa.create_engine(load_config(config).database_url)
    with eng.connect() as c:
        got = {r[0] for r in c.execute(sa.text("SELECT pid FROM labels"))}
    eng.dispose()
    return got


def test_a_rollout_window_shows_both_versions_side_by_side(world, mlflow_server):
    df, config, name = world
    v1, _ = register(mlflow_server, name, {"val_roc_auc": 0.8})
    promote(mlflow_server, name, "champion", v1)
    assert main(["run-once", "--config", config, "--now", utc(8).isoformat()]) == 0
    rows = Store(load_config(config).store_url).model_metrics("scorer", utc(6))
    seg = {(r["kind"], r["name"], r["segment"]): r["value"] for r in rows if r["segment"].startswith("version=")}
    labels = _labelled(config)
    sub = rows_in(df, Window(utc(6), utc(7)))
    assert {s for _, _, s in seg} == {"version=1", "version=2"}
    for v in ("1", "2"):
        part = sub[sub.model_version == v]
        lab = part[part.pid.isin(labels)]
        assert seg[("online", "predictions", f"version={v}")] == len(part)
        assert seg[("online", "score_mean", f"version={v}")] == pytest.approx(part.score.mean(), rel=1e-12)
        assert seg[("online", "positive_rate", f"version={v}")] == pytest.approx(part.pred.mean(), rel=1e-12)
        assert seg[("quality", "roc_auc", f"version={v}")] == pytest.approx(roc_auc_score(lab.y, lab.score), abs=1e-12)
    # a window scored by one version has one part; the overall rows are untouched by the split
    one = {r["segment"] for r in Store(load_config(config).store_url).model_metrics("scorer", utc(7))
           if r["segment"].startswith("version=")}
    assert one == {"version=2"}
    assert sum(seg[("online", "predictions", f"version={v}")] for v in ("1", "2")) == next(
        r["value"] for r in rows if r["kind"] == "online" and r["name"] == "predictions" and not r["segment"])


def test_an_alias_that_names_no_version_fails_the_job_with_a_clear_error(world, capsys):
    _, config, name = world
    assert main(["run-once", "--config", config, "--now", utc(5).isoformat()]) == 1
    err = capsys.readouterr().err
    assert "MLflow at" in err and name in err and "champion" in err
    runs = Store(load_config(config).store_url).job_runs("model:scorer")
    assert runs[-1]["status"] == "failed" and "champion" in runs[-1]["error"]


def test_an_unreachable_tracking_server_fails_the_job_and_says_where(world, capsys):
    _, config, _ = world
    port = _free_port()  # nothing listens there
    text = open(config).read()
    open(config, "w").write(re.sub(r'tracking_uri: "[^"]+"', f'tracking_uri: "http://127.0.0.1:{port}"', text))
    assert main(["run-once", "--config", config, "--now", utc(5).isoformat()]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err

