"""Model versions without a registry: config errors, relative floors in the rules (promtool), the
dashboard's version annotation, and the app's version marks."""
import subprocess

import pytest
import yaml
from fixtures.alerting_world import FIXTURE
from stack import binary

from monitor import alertdefs, alerts
from monitor.config import ConfigError, parse_config
from monitor.dashboards import dashboards


def _relative(tmp_path):
    data = yaml.safe_load(FIXTURE.read_text())
    m = data["models"][0]
    m["quality"] = {"roc_auc": {"min": {"below_validation": 0.05}}, "log_loss": {"max": {"above_validation": 0.1}}}
    m["mlflow"] = {"tracking_uri": "http://127.0.0.1:5000", "name": "scorer"}
    data["database_url"] = f"sqlite:///{tmp_path / 'source.db'}"
    return parse_config(data, FIXTURE)


def test_a_relative_floor_without_mlflow_is_a_config_error_naming_the_model(tmp_path):
    data = yaml.safe_load(FIXTURE.read_text())
    data["models"][0]["quality"] = {"roc_auc": {"min": {"below_validation": 0.05}}}
    with pytest.raises(ConfigError, match=r"models\[0\]\(scorer\).*roc_auc.*give mlflow"):
        parse_config(data, FIXTURE)
    data["models"][0]["quality"] = {"roc_auc": {"min": {"below": 0.05}}}
    with pytest.raises(ConfigError, match="roc_auc"):
        parse_config(data, FIXTURE)


@pytest.mark.stack
def test_relative_floors_compare_quality_with_the_exported_threshold_and_pass_promtool(tmp_path):
    cfg = _relative(tmp_path)
    rules = {a.alert: a for a in alertdefs.all_alerts(cfg)}
    low, high = rules["ScorerRocAucBelowFloor"], rules["ScorerLogLossAboveCeiling"]
    assert low.expr == ('monitor_model_quality{model="scorer",metric="roc_auc"} < on(model, metric) '
                        'monitor_model_quality_threshold{model="scorer",metric="roc_auc",bound="min"}')
    assert " > on(model, metric) monitor_model_quality_threshold" in high.expr and 'bound="max"' in high.expr
    root = tmp_path / "repo"
    for rel, text in alerts.render(cfg).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for args in (("check", "rules", "alerts/monitor.rules.yml"), ("test", "rules", "alerts/tests/monitor.rules.test.yml")):
        r = subprocess.run([binary("promtool"), *args], cwd=root, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.stack
def test_the_model_health_dashboard_marks_where_the_version_changes(tmp_path):
    """The annotation's query, run by promtool on a version 1 that gives way to a version 2 at 10m."""
    from pathlib import Path

    from monitor.config import load_config

    model = dashboards(load_config(Path(__file__).parent.parent / "examples" / "monitor.yaml"))["model-health"]
    (a,) = [a for a in model["annotations"]["list"] if a["name"] == "Model version"]
    assert a["datasource"]["uid"] == "${datasource}" and a["enable"] and "{{version}}" in a["titleFormat"]
    (tmp_path / "r.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "version_change", "expr": a["expr"].replace("$model", "scorer")}]}]}))
    old, new = 'monitor_model_version_info{model="scorer",version="1",run_id="a"}', 'monitor_model_version_info{model="scorer",version="2",run_id="b"}'
    at = lambda t, exp: {"expr": "version_change", "eval_time": t, "exp_samples": exp}
    changed = [{"labels": new.replace("monitor_model_version_info", "version_change"), "value": 1}]
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"rule_files": ["r.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": old, "values": "1x9 _x20"}, {"series": new, "values": "_x10 1x20"}],
        # the first version is marked when it is first seen; then each change, for five minutes
        "promql_expr_test": [at("3m", [{"labels": old.replace("monitor_model_version_info", "version_change"), "value": 1}]),
                             at("8m", []), at("11m", changed), at("14m", changed), at("16m", []), at("25m", [])]}]}))
    r = subprocess.run([binary("promtool"), "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _models_page(tmp_path, monkeypatch, model_yaml: str, windows: list[list[dict]]):
    """The app's models page over a results store holding one daily window of model `clf` per
    entry of `windows` (its metrics), from 2026-03-02."""
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from app_streamlit import ui
    from monitor.store import ModelWindow, Store

    start = datetime(2026, 3, 2, tzinfo=timezone.utc)
    results = f"sqlite:///{tmp_path / 'results.db'}"
    (tmp_path / "monitor.yaml").write_text(f"database_url: sqlite:///{tmp_path / 'src.db'}\nresults_url: {results}\nmodels:\n"
                                           + model_yaml)
    store = Store(results)
    store.migrate()
    for d, metrics in enumerate(windows):
        ws = start + timedelta(days=d)
        store.save_model_window(ModelWindow("clf", ws, ws + timedelta(days=1), 100, 0.0, False, "ok", 1.0, metrics), ws)
    store.engine.dispose()
    monkeypatch.setenv("MONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    ui._read.clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app_streamlit" / "Home.py"), default_timeout=30).run()
    at = at.switch_page("models.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_the_model_page_shows_the_registered_version_the_split_by_version_and_marks_the_change(tmp_path, monkeypatch):
    windows = []
    for d in range(6):
        scored = ["1"] if d < 3 else ["1", "2"] if d == 3 else ["2"]
        metrics = [{"kind": "online", "name": "predictions", "value": 100.0},
                   {"kind": "quality", "name": "roc_auc", "value": 0.9, "threshold": 0.85, "detected": False}]
        for v in scored:
            metrics += [{"kind": "online", "name": "predictions", "segment": f"version={v}", "value": 100.0 / len(scored)},
                        {"kind": "quality", "name": "roc_auc", "segment": f"version={v}", "value": 0.8 + 0.05 * int(v)}]
        if d in (2, 5):  # the registry as read by the cycle whose latest window this was
            version, run = ("1", "a" * 32) if d == 2 else ("2", "b" * 32)
            metrics += [{"kind": "version", "name": "version", "method": run, "value": float(version)},
                        {"kind": "validation", "name": "val_roc_auc", "value": 0.9 if d == 2 else 0.95}]
        windows.append(metrics)
    at = _models_page(tmp_path, monkeypatch,
                      "  - {name: clf, task: binary_classification, start: 2026-03-02,\n"
                      "     source: {table: t, id: id, timestamp: ts, score: s, version: model_version},\n"
                      "     labels: {table: l, id: id, label: y},\n"
                      "     quality: {roc_auc: {min: {below_validation: 0.05}}},\n"
                      "     mlflow: {tracking_uri: 'http://127.0.0.1:5000', name: clf-registry}}\n", windows)
    body = "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])
    assert f"**Version 2** of `clf-registry` is `@champion` (run `{'b' * 32}`" in body and "val_roc_auc 0.95" in body
    assert "v2 from 2026-03-07" in body  # the registry's change, where it was recorded
    assert "roc_auc ≥ validation − 0.05" in body
    split = at.dataframe[0].value
    assert list(split["window"]) == ["2026-03-05 00:00", "2026-03-05 00:00"]  # the rollout day, both versions
    assert sorted(split["version"]) == ["1", "2"] and sorted(split["roc_auc"]) == pytest.approx([0.85, 0.9])


@pytest.mark.slow
def test_the_estimated_quality_chart_marks_where_the_version_changes(tmp_path, monkeypatch):
    """The model page's estimated/realized chart carries the version marks the other model charts have:
    a rule at the first window of version 2, labelled v2."""
    import json

    import pyarrow as pa

    windows = [[{"kind": "quality", "name": "roc_auc", "value": 0.9},
                {"kind": "quality_estimated", "name": "roc_auc", "value": 0.88, "method": "isotonic"},
                {"kind": "quality_estimated_ci_low", "name": "roc_auc", "value": 0.85},
                {"kind": "quality_estimated_ci_high", "name": "roc_auc", "value": 0.91},
                {"kind": "version", "name": "version", "method": "r" * 32, "value": 1.0 if d < 3 else 2.0}] for d in range(6)]
    at = _models_page(tmp_path, monkeypatch,
                      "  - {name: clf, task: binary_classification, start: 2026-03-02,\n"
                      "     source: {table: t, id: id, timestamp: ts, score: s}, labels: {table: l, id: id, label: y},\n"
                      "     mlflow: {tracking_uri: 'http://127.0.0.1:5000', name: clf-registry}}\n", windows)
    charts = [c.proto for c in at.get("vega_lite_chart")]
    (chart,) = [c for c in charts if any(layer.get("mark", {}).get("type") == "area" for layer in json.loads(c.spec)["layer"])]
    marks = [layer["mark"]["type"] for layer in json.loads(chart.spec)["layer"] if layer["mark"].get("color") == "#bc4c00"]
    assert marks == ["rule", "text"]
    rows = [r for d in chart.datasets for r in pa.ipc.open_stream(d.data.data).read_all().to_pylist() if "version" in r]
    assert [(r["window_start"].date().isoformat(), r["version"], r["label"]) for r in rows] == [("2026-03-05", "2", "v2")]
    assert "Dotted: where a new model version starts." in "\n".join(c.value for c in at.caption)
