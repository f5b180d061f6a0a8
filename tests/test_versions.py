"""Model versions without a registry: config errors, relative floors in the rules (promtool), the
dashboard's version annotation, and the app's version marks."""
import subprocess

import pytest
import yaml
from fixtures.alerting_world import FIXTURE
from stack import binary

from monitor import alerts
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


def test_relative_floors_compare_quality_with_the_exported_threshold_and_pass_promtool(tmp_path):
    cfg = _relative(tmp_path)
    rules = {a.alert: a for a in alerts.all_alerts(cfg)}
    low, high = rules["ScorerRocAucBelowFloor"], rules["ScorerLogLossAboveCeiling"]
    assert low.expr == ('monitor_model_quality{model="scorer",metric="roc_auc"} < '
                        'monitor_model_quality_threshold{model="scorer",metric="roc_auc"}')
    assert " > monitor_model_quality_threshold" in high.expr
    root = tmp_path / "repo"
    for rel, text in alerts.render(cfg).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for args in (("check", "rules", "alerts/monitor.rules.yml"), ("test", "rules", "alerts/tests/monitor.rules.test.yml")):
        r = subprocess.run([binary("promtool"), *args], cwd=root, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr


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
