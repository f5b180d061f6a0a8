"""Alert rules, their promtool tests, the runbook and the Alertmanager config, from the config."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fixtures.alerting_world import config
from stack import binary

from monitor import alertdefs, alerts
from monitor.conventions import DATA_CHECKS
from monitor.build import build
from monitor.config import load_config

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "monitor.yaml"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "alerts"


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


@pytest.fixture
def fixture_alerts(tmp_path):
    cfg = config(tmp_path)
    return cfg, _write(tmp_path / "repo", alerts.render(cfg))


def test_the_fixture_yields_these_alerts(fixture_alerts):
    cfg, _ = fixture_alerts
    names = [a.alert for a in alertdefs.all_alerts(cfg)]
    assert names == [
        "BadSessionShareBreached", "BadSessionShareErrorBudgetFastBurn", "BadSessionShareErrorBudgetSlowBurn",
        "BadSessionShareAtRisk", "BadSessionShareNoData", "BadSessionShareStale",
        "MinutesPerUserBreached", "MinutesPerUserAtRisk", "MinutesPerUserNoData", "MinutesPerUserStale",
        "ScorerDataDrift", "ScorerPredictionDrift", "ScorerFeatureDrift", "ScorerSourceStale", "ScorerVolumeDrop",
        "ScorerVolumeSurge", *["ScorerDataCheckFailed"] * len(DATA_CHECKS), "ScorerMultivariateDrift",
        "ScorerRocAucBelowFloor", "ScorerRocAucEstimatedBelowFloor", "ScorerLogLossAboveCeiling", "ScorerLabelStarvation",
        "MonitorJobFailing", "MonitorJobFailing", "MonitorJobFailing", "MonitorExporterDown",
    ]


def test_every_rule_is_a_plain_record_with_subject_owner_summary_and_runbook(fixture_alerts):
    cfg, folder = fixture_alerts
    doc = yaml.safe_load((folder / "monitor.rules.yml").read_text())
    runbook = (folder / "RUNBOOK.md").read_text()
    anchors = {m.lower() for m in re.findall(r"^## (\w+)$", runbook, re.MULTILINE)}
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) == len(alertdefs.all_alerts(cfg))
    for r in rules:
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}
        assert r["labels"]["severity"] in ("page", "ticket")
        assert r["labels"]["owner"]
        if r["alert"] != "MonitorExporterDown":
            assert "goal" in r["labels"] or "model" in r["labels"], r["alert"]
        assert r["annotations"]["summary"]
        url = r["annotations"]["runbook_url"]
        assert url == f"http://review.example:8501/runbook#{r['alert'].lower()}" and r["alert"].lower() in anchors
    breach = next(r for r in rules if r["alert"] == "BadSessionShareBreached")
    assert breach["labels"] == {"severity": "page", "goal": "bad_session_share", "owner": "trust-and-safety", "kind": "breach"}
    assert "{{ $value | humanizePercentage }}" in breach["annotations"]["summary"]
    assert "target at most 2%" in breach["annotations"]["summary"]
    assert breach["annotations"]["review_url"] == "http://review.example:8501/?goal=bad_session_share"


def test_every_generated_file_says_do_not_edit_and_how_to_regenerate(fixture_alerts):
    cfg, _ = fixture_alerts
    for rel, text in alerts.render(cfg).items():
        head = "\n".join(text.splitlines()[:2])
        assert "DO NOT EDIT" in head and "monitor build" in head, rel


def test_promtool_checks_and_unit_tests_pass_on_the_generated_rules(fixture_alerts):
    _, folder = fixture_alerts
    promtool = binary("promtool")
    r = _run(promtool, "check", "rules", str(folder / "monitor.rules.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(promtool, "test", "rules", str(folder / "tests" / "monitor.rules.test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_each_alert_is_tested_quiet_firing_and_resolved(fixture_alerts):
    cfg, folder = fixture_alerts
    doc = yaml.safe_load((folder / "tests" / "monitor.rules.test.yml").read_text())
    assert len(doc["tests"]) == sum(1 + len(a.extra_cases) for a in alertdefs.all_alerts(cfg))
    assert {t["name"].split()[0] for t in doc["tests"]} == {a.alert for a in alertdefs.all_alerts(cfg)}
    for t in doc["tests"]:
        expected = [len(e["exp_alerts"]) for e in t["alert_rule_test"]]
        assert expected == [0, 1, 0], t["name"]


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda t: t["alert_rule_test"][1]["exp_alerts"][0]["exp_annotations"].update(value="2.5%"), id="value"),
    pytest.param(lambda t: t["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"].update(severity="ticket"), id="severity"),
    pytest.param(lambda t: t["alert_rule_test"][2].update(exp_alerts=t["alert_rule_test"][1]["exp_alerts"]), id="never-resolves"),
    pytest.param(lambda t: t["alert_rule_test"][1].update(exp_alerts=[]), id="never-fires"),
])
def test_a_changed_expectation_fails(fixture_alerts, tmp_path, mutate):
    _, folder = fixture_alerts
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    path = copy / "tests" / "monitor.rules.test.yml"
    doc = yaml.safe_load(path.read_text())
    mutate(next(t for t in doc["tests"] if t["name"].startswith("BadSessionShareBreached")))
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = _run(binary("promtool"), "test", "rules", str(path))
    assert r.returncode != 0
    assert "BadSessionShareBreached" in r.stdout + r.stderr


def test_alertmanager_config_passes_amtool_and_routes_by_owner_and_severity(fixture_alerts):
    _, folder = fixture_alerts
    amtool = binary("amtool")
    conf = str(folder / "alertmanager.yml")
    r = _run(amtool, "check-config", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 templates" in r.stdout
    for labels, receiver in [
        (["owner=trust-and-safety", "severity=page"], "trust-and-safety-page"),
        (["owner=trust-and-safety", "severity=ticket"], "trust-and-safety-ticket"),
        (["owner=ml-platform", "severity=ticket"], "ml-platform-ticket"),
        (["owner=unowned", "severity=page"], "default-page"),
        (["owner=unowned", "severity=ticket"], "default"),
    ]:
        r = _run(amtool, "config", "routes", "test", f"--config.file={conf}", *labels)
        assert r.stdout.strip() == receiver, (labels, r.stdout, r.stderr)
    doc = yaml.safe_load((folder / "alertmanager.yml").read_text())
    page = next(x for x in doc["receivers"] if x["name"] == "trust-and-safety-page")
    assert {"webhook_configs", "email_configs", "telegram_configs"} <= set(page)
    tmpl = (folder / "templates" / "monitor.tmpl").read_text()
    for field in ("title", "value", "target", "window", "review_url"):
        assert f".Annotations.{field}" in tmpl


def test_monitor_build_check_detects_a_stale_file(tmp_path, capsys):
    path = tmp_path / "monitor.yaml"
    shutil.copy(EXAMPLE if EXAMPLE.exists() else Path(__file__).parent / "fixtures/alerting/monitor.yaml", path)
    text = path.read_text().replace("../metrics_sql/", str(ROOT / "metrics_sql") + "/")
    text = re.sub(r"(?m)^database_url:.*$", f"database_url: sqlite:///{tmp_path / 'db.sqlite'}", text)
    path.write_text(text)
    root = tmp_path / "repo"
    assert build(str(path), root) == 0
    assert build(str(path), root, check=True) == 0
    rules = root / alerts.RULES_FILE
    rules.write_text(rules.read_text().replace("for: 0s", "for: 1m", 1))
    capsys.readouterr()
    assert build(str(path), root, check=True) == 1
    assert alerts.RULES_FILE in capsys.readouterr().err
    (root / alerts.RUNBOOK_FILE).unlink()
    assert build(str(path), root, check=True) == 1


def test_the_committed_alerts_are_up_to_date_and_pass_promtool_and_amtool():
    cfg = load_config(EXAMPLE)
    for rel, text in alerts.render(cfg).items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `monitor build`"
    r = _run(binary("promtool"), "check", "rules", str(ROOT / alerts.RULES_FILE))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(binary("promtool"), "test", "rules", str(ROOT / alerts.TESTS_FILE))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(binary("amtool"), "check-config", str(ROOT / alerts.ALERTMANAGER_FILE))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_links_are_absolute_urls_from_the_configured_bases(tmp_path):
    """`urls: {app, runbook}`: review links open the goal or the model in the app, runbook links the published runbook;
    without `urls.runbook`, the app's own runbook page."""
    from monitor.config import parse_config

    (tmp_path / "q.sql").write_text("SELECT 1 AS value")
    base = {"goals": [{"name": "g", "sql": "q.sql", "direction": "at_most", "target": 1, "start": "2026-09-01"}],
            "models": [{"name": "m", "task": "regression", "start": "2026-09-01", "reference": {"rolling": "7d"},
                        "source": {"table": "t", "id": "id", "timestamp": "ts", "score": "s"}}]}
    cfg = parse_config({**base, "app_url": "http://old:1", "urls": {"app": "https://review.example.com/app/",
                                                                    "runbook": "https://wiki.example.com/monitor"}},
                       tmp_path / "m.yaml")
    recs = {a.alert: a.record() for a in alertdefs.all_alerts(cfg)}
    goal = next(r for r in recs.values() if r["labels"].get("goal") == "g")
    model = next(r for r in recs.values() if r["labels"].get("model") == "m")
    assert goal["annotations"]["review_url"] == "https://review.example.com/app/?goal=g"
    assert model["annotations"]["review_url"] == "https://review.example.com/app/?model=m"
    assert goal["annotations"]["runbook_url"] == f"https://wiki.example.com/monitor#{goal['alert'].lower()}"
    cfg = parse_config({**base, "urls": {"app": "https://review.example.com"}}, tmp_path / "m.yaml")
    rec = alertdefs.all_alerts(cfg)[0].record()
    assert rec["annotations"]["runbook_url"] == f"https://review.example.com/runbook#{rec['alert'].lower()}"
    for r in (a.record() for a in alertdefs.all_alerts(cfg)):
        assert r["annotations"]["runbook_url"].startswith("https://") and r["annotations"]["review_url"].startswith("https://")
